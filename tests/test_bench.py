"""`securefl bench` at tiny sizes: structure and internal consistency of the results (never timings)."""

from __future__ import annotations

import json

import pytest

from securefl import schemes
from securefl.bench import config as presets
from securefl.bench import harness, memory, output, peers, workload
from securefl.cli import main
from securefl.errors import InputError
from securefl.plaintext import Plaintext

TINY = {"ns": (3, 4), "ms": (20, 40), "dropouts": (0.0, 0.34), "base_n": 4, "base_m": 40, "scaling_ns": (),
        "repeats": 2, "peers": False, "cell_budget_s": 30.0}


class Broken(Plaintext):
    """A scheme that fails in its round, to show the harness records it and goes on."""

    scheme = "broken"

    def aggregate(self, updates, weights=None, dropped=None):
        raise RuntimeError("broken on purpose")


@pytest.fixture
def with_broken(monkeypatch):
    monkeypatch.setitem(schemes.SCHEMES, "broken", Broken)


def test_matrix_is_consistent(with_broken):
    config = presets.preset(True, schemes=("additive", "broken"), dp_mechanisms=(), **TINY)
    ticks = []
    results = harness.run(config, lambda units, what: ticks.append(units))
    assert sum(ticks) == harness.total_units(config)
    cells = results["cells"]
    points = {(c["n"], c["m"], c["dropout"]) for c in cells}
    assert points == {(3, 40, 0.0), (4, 40, 0.0), (4, 20, 0.0), (4, 40, 0.34)}
    for point in points:  # every scheme at every point, Plaintext first
        here = [c["scheme"] for c in cells if (c["n"], c["m"], c["dropout"]) == point]
        assert here == ["plaintext", "additive", "broken"]
    for c in cells:
        if c["scheme"] == "broken":
            assert c["status"] == "error" and "broken on purpose" in c["error"]
            continue
        assert c["status"] == "ok" and c["repeats"] == 2
        assert c["dropped"] == round(c["dropout"] * c["n"]) and c["survivors"] == c["n"] - c["dropped"]
        client = c["parties"]["client"]
        assert client["count"] == c["survivors"]
        assert c["bytes_per_param"] == pytest.approx(client["bytes_sent_per_party"] / c["m"])
        assert c["max_abs_diff_vs_plaintext"] <= 1e-3  # the same updates give the same mean
        assert c["phases"]["upload"]["client"] > 0 and c["aggregator_seconds"] > 0
        assert set(c["floor"]) >= {"client"} and all(f["seconds"] > 0 for f in c["floor"].values())
        if c["scheme"] == "plaintext":
            assert c["ratio"]["parties"]["client"]["bytes_sent_per_party"] == 1.0
            assert c["ratio"]["aggregator_seconds"] == 1.0
        else:  # additive uploads its masked vector plus K - 1 sealed seeds: more bytes than plaintext
            assert c["ratio"]["parties"]["client"]["bytes_sent_per_party"] > 1.0
            assert set(c["parties"]) == {"client", "leader", "helper"}
            assert c["floor"]["helper"]["prg_bytes"] == c["survivors"] * (c["m"] + 1) * c["params"]["ring_bits"] // 8
    assert set(results["first_call_s"]) == {"plaintext", "additive"}
    assert results["hardware"]["aes_ctr_bytes_per_s"] > 0 and results["hardware"]["memory_bytes_per_s"] > 0
    if memory.available():
        assert all(c["peak_memory_bytes"] is not None for c in cells if c["status"] == "ok")


def test_budget_skips_and_trims_rounds():
    config = presets.preset(True, schemes=("additive",), dp_mechanisms=(), **(TINY | {"cell_budget_s": 0.0}))
    results = harness.run(config)
    by_size = {}
    for c in results["cells"]:
        by_size.setdefault(c["scheme"], []).append(c)
    for cells in by_size.values():  # a scheme's first cell runs one timed round; later ones have an estimate
        assert cells[0]["status"] == "ok" and cells[0]["repeats"] == 1
        assert all(c["status"] == "skipped" and "cell budget" in c["error"] for c in cells[1:])


def test_dp_cells_when_supported():
    if not harness.supports_dp():
        pytest.skip("the Aggregator base takes no dp= yet")
    config = presets.preset(True, schemes=("additive",), dp_mechanisms=("distributed", "central"),
                            **(TINY | {"ns": (4,), "ms": (40,), "dropouts": (0.0,), "repeats": 1}))
    cells = harness.run(config)["cells"]
    dp_cells = [c for c in cells if c["dp"]]
    assert {(c["scheme"], c["dp"]) for c in dp_cells} == {(s, d) for s in ("plaintext", "additive")
                                                          for d in ("distributed", "central")}
    assert all(c["status"] == "ok" and c["epsilon"] > 0 and c["sweeps"] == ["dp"] for c in dp_cells)


def test_unknown_scheme_is_an_input_error():
    with pytest.raises(InputError, match="nope"):
        harness.run(presets.preset(True, schemes=("nope",), **TINY))


def test_markdown_row_per_cell_and_plots(with_broken, tmp_path):
    config = presets.preset(True, schemes=("broken",), dp_mechanisms=(), **(TINY | {"repeats": 1}))
    results = harness.run(config)
    written = output.write(results, tmp_path)
    names = {p.name for p in written}
    assert {"results.json", "results.md", "time_vs_n.png", "time_vs_m.png", "bytes_per_param.png"} <= names
    assert all((tmp_path / n).stat().st_size > 0 for n in names)
    md = (tmp_path / "results.md").read_text()
    matrix = md.split("## Matrix")[1].split("## First round")[0]
    table_rows = [line for line in matrix.splitlines() if line.startswith(("| plaintext", "| broken"))]
    assert len(table_rows) == len(results["cells"])
    assert "error: RuntimeError: broken on purpose" in md
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["machine"]["cores"] >= 1 and saved["machine"]["libraries"]["numpy"]


def test_cli_bench_quick_tiny(tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["bench", "--quick", "--out", str(out), "--schemes", "additive", "--n", "3,4", "--m", "16,32",
            "--dropout", "0", "--scaling-n", "", "--repeats", "1", "--no-dp", "--no-peers"]
    assert main(argv) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["config"]["quick"] and data["config"]["base_n"] == 4 and data["config"]["base_m"] == 32
    assert {c["scheme"] for c in data["cells"]} == {"plaintext", "additive"}
    assert "additive" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["bench", "--n", "0"], ["bench", "--dropout", "1.2"], ["bench", "--m", "x"]])
def test_bench_bad_options_exit_with_usage_error(argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2


def test_peers_ship_in_the_package():
    """Every peer's source names a function of an importable securefl module (no benchmarks/ checkout needed)."""
    import importlib

    for peer in peers.PEERS:
        module, _, function = peer.source.partition(":")
        assert module.startswith("securefl.bench.peers.")
        assert callable(getattr(importlib.import_module(module), function))
    assert callable(peers.load("he").flare_baseline)


def test_missing_peer_library_is_unavailable(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tenseal(name, *args, **kwargs):
        if name == "tenseal":
            raise ImportError("No module named 'tenseal'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(__import__("sys").modules, "securefl.bench.peers.he", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_tenseal)
    with pytest.raises(peers.Unavailable, match="tenseal"):
        peers.load("he")


def test_harness_and_peers_do_not_import_each_other():
    import ast
    from pathlib import Path

    bench = Path(harness.__file__).parent
    lower = [bench / "config.py", bench / "workload.py", *(bench / "peers").glob("*.py")]
    for path in lower:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            assert not any(n.endswith(("harness", "command")) for n in names), f"{path.name} imports {names}"


def test_secaggplus_cells_are_designed_for_the_cell_dropout():
    assert schemes.dropout_options("secagg+", 0.25) == {"dropout_rate": 0.25}
    assert schemes.dropout_options("secagg+", 0.0) == {"dropout_rate": 0.05}  # never below the registry's design
    assert schemes.dropout_options("ckks", 0.25) == {}


def test_scaling_sweep_takes_the_schemes_whose_class_scales_in_n():
    assert harness.scaling_schemes(schemes.names()) == ["secagg+"]  # SecAgg+'s class says so, not its name
    config = presets.preset(True, **(TINY | {"scaling_ns": (5, 7), "scaling_m": 10}))
    scaling = [p for p in harness.plan(config, harness.scheme_names(config)) if "scaling" in p.sweeps]
    assert [(p.n, p.m, p.schemes) for p in scaling] == [(5, 10, ["plaintext", "secagg+"]),
                                                         (7, 10, ["plaintext", "secagg+"])]


def test_resnet18_shapes_are_torchvisions_float_tensors():
    shapes = workload.resnet18_shapes()
    assert len(shapes) == 102 and workload.size(shapes) == 11_699_112  # 11,689,512 parameters + BN running stats
    assert shapes[0] == ("conv1.weight", (64, 3, 7, 7)) and shapes[-1] == ("fc.bias", (1000,))
    assert len(dict(shapes)) == len(shapes)


def test_special_points_measure_their_own_arms_against_plaintext_and_no_dp():
    model = presets.Special("model", "a model-shaped point", n=3, schemes=("additive",), model="resnet18", width=2,
                            peers=("tenseal-flare",))
    dp_point = presets.Special("dp-small", "DP beside no DP", n=4, schemes=("additive",), m=30,
                               dp=(None, "distributed"))
    absent = presets.Special("absent", "a scheme this run does not measure", n=3, schemes=("ckks",), m=10)
    config = presets.preset(True, schemes=("additive",), dp_mechanisms=(), specials=(model, dp_point, absent),
                            **(TINY | {"ns": (4,), "ms": (40,), "dropouts": (0.0,), "peers": True}))
    ticks = []
    results = harness.run(config, lambda units, what: ticks.append(units))
    assert sum(ticks) == harness.total_units(config)
    cells = results["cells"]
    assert not [c for c in cells if "absent" in c["sweeps"]]
    at_model = [c for c in cells if "model" in c["sweeps"]]
    assert [(c["scheme"], c["tensors"], c["m"]) for c in at_model] == [
        ("plaintext", 102, workload.size(workload.resnet18_shapes(2))), ("additive", 102, at_model[0]["m"])]
    assert all(c["status"] == "ok" and c["max_abs_diff_vs_plaintext"] <= 1e-3 for c in at_model)
    at_dp = [c for c in cells if "dp-small" in c["sweeps"]]
    if harness.supports_dp():
        assert [(c["scheme"], c["dp"]) for c in at_dp] == [("plaintext", None), ("additive", None),
                                                          ("plaintext", "distributed"), ("additive", "distributed")]
        noisy = at_dp[3]
        assert noisy["ratio_no_dp"]["wall_s"] == pytest.approx(noisy["wall_s"] / at_dp[1]["wall_s"])
        assert noisy["ratio"]["wall_s"] == pytest.approx(noisy["wall_s"] / at_dp[2]["wall_s"])
    peer_points = [(p["name"], p["point"]) for p in results["peers"]]
    assert ("tenseal-flare", "model") in peer_points
    md = output.markdown(results)
    assert "## Special points" in md and "model [a model-shaped point] n=3" in md


def test_a_special_point_naming_an_unknown_peer_is_an_input_error():
    bad = presets.Special("x", "x", n=3, schemes=("additive",), m=10, peers=("nobody",))
    with pytest.raises(InputError, match="nobody"):
        harness.run(presets.preset(True, schemes=("additive",), specials=(bad,), **(TINY | {"peers": True})))


def test_estimate_scales_from_a_round_no_larger_in_n_or_m():
    est = harness._Estimates()
    est.add("secagg+", 8, 1_000, 0.02)
    est.add("secagg+", 200, 100, 2.6)  # many clients, few parameters: public-key work, not m
    assert est.estimate("secagg+", 8, 10_000) == pytest.approx(0.2)  # from (8, 1e3), not 2.6 x 4 from (200, 100)
    assert est.estimate("secagg+", 400, 100) == pytest.approx(5.2)
    assert est.estimate("secagg+", 2, 50) == pytest.approx(2.6 * 100 / 20_000)  # nothing below: the largest round
    assert est.estimate("ckks", 8, 1_000) is None
