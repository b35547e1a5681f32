"""`securefl run` and `audit` options: smoke test, JSON output, accuracy, dropouts by stage, scheme and DP options,
plain piped output, bad options."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from securefl import dp, schemes
from securefl.cli import DEFAULT_AGGREGATOR, _check_args, _mechanism, _scheme_options, build_parser, main
from securefl.datasets import dirichlet_split


def parsed(argv: list[str]):
    """Parsed and checked arguments, as main() sees them before running the command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    return args


def test_run_two_rounds_writes_json(tmp_path):
    out = tmp_path / "m.json"
    assert main(["run", "--rounds", "2", "--clients", "4", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["config"]["aggregator"] == DEFAULT_AGGREGATOR
    assert [r["round"] for r in data["rounds"]] == [1, 2]
    assert all(r["survivors"] == 4 and r["client_bytes"] > 0 and not r["dropped"] for r in data["rounds"])


def test_default_run_reaches_90_percent(tmp_path):
    out = tmp_path / "m.json"
    assert main(["run", "--json", str(out)]) == 0
    rounds = json.loads(out.read_text())["rounds"]
    assert rounds[-1]["accuracy"] >= 0.90


def test_dropped_clients_take_part_until_the_input_stage(tmp_path, capsys):
    """Default stage: SecAgg's masked_input. The dropped clients advertised and shared keys (the server recovers
    their masks), so every selected client is counted and the survivors are the others."""
    out = tmp_path / "m.json"
    assert main(["run", "--rounds", "3", "--clients", "8", "--dropout", "0.3", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    rounds = data["rounds"]
    assert data["config"]["dropout_stage"] == "masked_input"
    assert all(r["participants"] == 8 for r in rounds)
    assert any(r["dropped"] for r in rounds)
    for r in rounds:
        assert set(r["dropped"].values()) <= {"masked_input"}
        assert r["survivors"] == 8 - len(r["dropped"]) or r["error"]
    printed = capsys.readouterr().out
    r = next(r for r in rounds if r["dropped"] and not r["error"])
    assert f"in {r['survivors']}/8 ({len(r['dropped'])} dropped at masked_input, recovered)" in printed


def test_dropout_after_the_input_keeps_the_inputs(tmp_path, capsys):
    out = tmp_path / "m.json"
    argv = ["run", "--rounds", "2", "--clients", "6", "--dropout", "0.3", "--dropout-stage", "unmasking",
            "--json", str(out)]
    assert main(argv) == 0
    rounds = json.loads(out.read_text())["rounds"]
    assert any(r["dropped"] and not r["error"] for r in rounds)
    for r in rounds:  # a round fails only when fewer than t share holders are left to unmask
        assert set(r["dropped"].values()) <= {"unmasking"}
        assert r["survivors"] == 6 or (r["error"] and len(r["dropped"]) > 6 - r["params"].get("threshold", 4))
    assert "dropped at unmasking, recovered, inputs kept" in capsys.readouterr().out


def test_unknown_dropout_stage_names_the_stages(capsys):
    assert main(["run", "--rounds", "1", "--clients", "3", "--aggregator", "plaintext", "--dropout-stage",
                 "masked_input"]) == 2
    assert "--dropout-stage masked_input: not a stage of plaintext; choose one of upload" in capsys.readouterr().out


def test_neighbors_and_threshold_reach_secagg(tmp_path):
    out = tmp_path / "m.json"
    argv = ["run", "--rounds", "1", "--clients", "7", "--neighbors", "4", "--threshold", "4", "--json", str(out)]
    assert main(argv) == 0
    params = json.loads(out.read_text())["rounds"][0]["params"]
    assert (params["graph"], params["neighbors"], params["threshold"]) == ("harary", 4, 4)


def test_scheme_options_from_the_command_line():
    args = parsed(["run", "--aggregator", "secagg+", "--dropout", "0.2", "--neighbors", "complete",
                   "--threshold", "0.7"])
    assert _scheme_options(args) == {"neighbors": None, "threshold": 0.7, "dropout_rate": 0.2}
    assert _scheme_options(parsed(["run", "--aggregator", "secagg+"]))["dropout_rate"] == 0.05
    assert _scheme_options(parsed(["run", "--aggregator", "ckks", "--dropout", "0.2"])) == {}
    assert parsed(["audit", "--threshold", "3", "--neighbors", "auto"]).threshold == 3


@pytest.mark.parametrize("value", ["0", "1.5", "x", "-2"])
def test_bad_threshold_is_a_usage_error(value):
    with pytest.raises(SystemExit) as e:
        parsed(["run", "--threshold", value])
    assert e.value.code == 2


def test_neighbors_on_a_scheme_without_them_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        parsed(["run", "--aggregator", "ckks", "--neighbors", "3"])
    assert e.value.code == 2
    assert "apply to secagg and secagg+ only" in capsys.readouterr().err


@pytest.mark.parametrize("scheme", schemes.names())
def test_audit_default_dp_works_for_every_scheme(scheme):
    """The default mechanism is one the scheme accepts: distributed where it can, else central."""
    args = parsed(["audit", "--aggregator", scheme])
    assert args.dp == schemes.dp_kinds(scheme)[0]
    mech = schemes.make(scheme, dp=_mechanism(args)).dp
    assert isinstance(mech, {"distributed": dp.DistributedGaussian, "central": dp.GaussianMechanism}[args.dp])
    assert parsed(["audit", "--aggregator", "secagg"]).dp == "distributed"


def test_unsupported_dp_names_the_option_to_use(capsys):
    assert schemes.dp_kinds("ckks") == ("central",)
    for command in ("audit", "run"):
        with pytest.raises(SystemExit) as e:
            parsed([command, "--aggregator", "ckks", "--dp", "distributed"])
        assert e.value.code == 2
        assert "--aggregator ckks cannot add distributed noise; use --dp central" in capsys.readouterr().err


def test_target_epsilon_sets_the_noise_multiplier():
    args = parsed(["run", "--target-epsilon", "4", "--rounds", "5", "--sample-rate", "0.5"])
    assert args.dp == "distributed"  # implied, the scheme's first mechanism
    mech = _mechanism(args)
    expected = dp.noise_multiplier(target_epsilon=4.0, sampling_rate=0.5, rounds=5, delta=1e-5)
    assert mech.noise_multiplier == pytest.approx(expected)
    assert dp.epsilon(noise_multiplier=mech.noise_multiplier, sampling_rate=0.5, rounds=5,
                      delta=1e-5) == pytest.approx(4.0, rel=1e-2)
    assert _mechanism(parsed(["run", "--dp", "central"])).noise_multiplier == 1.0


@pytest.mark.parametrize("argv", [["run", "--target-epsilon", "3", "--noise-multiplier", "1"],
                                  ["run", "--target-epsilon", "3", "--dp", "none"]])
def test_conflicting_dp_options_are_usage_errors(argv):
    with pytest.raises(SystemExit) as e:
        parsed(argv)
    assert e.value.code == 2


def test_target_epsilon_run_stays_within_budget_and_warns(tmp_path, capsys):
    """4 clients cannot carry DP noise over a 9,610-parameter model: the run says so on stderr."""
    out = tmp_path / "m.json"
    argv = ["run", "--rounds", "2", "--clients", "4", "--target-epsilon", "6", "--dp", "central", "--aggregator",
            "plaintext", "--json", str(out)]
    assert main(argv) == 0
    data = json.loads(out.read_text())
    assert data["config"]["noise_multiplier"] == pytest.approx(
        dp.noise_multiplier(target_epsilon=6.0, rounds=2, delta=1e-5))
    assert data["rounds"][-1]["epsilon"] <= 6.0 + 1e-6
    captured = capsys.readouterr()
    assert "securefl: WARNING: DP noise exceeds the signal" in captured.err
    assert "DP noise" not in captured.out


def test_piped_output_is_not_wrapped(capsys):
    assert main(["run", "--rounds", "1", "--clients", "12", "--dropout", "0.3", "--aggregator", "plaintext"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("securefl run:"))
    assert len(header) > 120 and header.endswith("dropout 30% at upload")
    round_line = next(line for line in lines if line.startswith("round   1"))
    assert "/12 (" in round_line and round_line.endswith("recovered)")
    assert not any("\x1b[" in line for line in lines)  # no colour codes either


@pytest.mark.parametrize("argv", [["run", "--dropout", "1.5"], ["run", "--clients", "0"], ["run", "--aggregator", "x"],
                                  ["run", "--neighbors", "1"], ["run", "--sample-rate", "0"]])
def test_bad_options_exit_with_usage_error(argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2


def test_version_is_the_package_version(capsys):
    import securefl

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"securefl {securefl.__version__}"


def test_dirichlet_split_covers_every_example_once():
    labels = np.repeat(np.arange(10), 50)
    parts = dirichlet_split(labels, 7, alpha=0.3, seed=3)
    allidx = np.concatenate(parts)
    assert len(parts) == 7 and all(len(p) > 0 for p in parts)
    assert np.array_equal(np.sort(allidx), np.arange(500))


def test_engine_flower_without_flower_names_the_extra(monkeypatch, capsys):
    """Without the flower extra, --engine flower is an error that says what to install, not a traceback."""
    for name in [m for m in sys.modules if m.split(".")[0] == "flwr" or m.startswith("securefl.flower")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "flwr", None)  # import flwr raises ModuleNotFoundError
    assert main(["run", "--engine", "flower", "--rounds", "1"]) == 2
    out = capsys.readouterr()
    assert '.[flower]' in out.out + out.err and "Traceback" not in out.out + out.err
