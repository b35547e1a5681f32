"""The Flower app in examples/flower, as written: its make_federation.py, ServerApp and ClientApp, run over the
in-process Grid of tests/flower_local.py (Flower's serde on every message, no Ray) with the run config of its
pyproject.toml; and `securefl run --engine flower`'s trainer against the in-process loop (Ray: slow)."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytest.importorskip("flwr", reason="the flower extra (pip install -e '.[flower]')")
from flwr.app import Context, RecordDict

import securefl
from securefl.datasets import federated_digits
from tests.flower_local import LocalGrid, enter_run

APP = Path(__file__).resolve().parent.parent / "examples" / "flower"


@pytest.fixture
def example(monkeypatch):
    monkeypatch.syspath_prepend(str(APP))
    from securefl_digits import client_app, server_app

    return client_app.app, server_app.app


def test_example_app_trains_under_securefl(example, tmp_path):
    client, server = example
    fed = tmp_path / "fed"
    subprocess.run([sys.executable, str(APP / "make_federation.py"), "--scheme", "plaintext", "--clients", "4",
                    "--out", str(fed)], check=True, capture_output=True)
    run_config = tomllib.loads((APP / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    run_config |= {"securefl-federation": str(fed), "securefl-report": str(tmp_path / "report.json"),
                   "num-server-rounds": 2}
    enter_run()
    grid = LocalGrid(client, 4, run_config=run_config)
    server(grid, Context(run_id=7, node_id=1, node_config={}, state=RecordDict(), run_config=run_config))
    report = json.loads((tmp_path / "report.json").read_text())
    rounds = report["rounds"]
    assert [r["report"]["survivors"] for r in rounds] == [[0, 1, 2, 3]] * 2
    assert rounds[-1]["accuracy"] > report["initial_accuracy"] + 0.3
    sent = rounds[0]["report"]["bytes_sent"]
    assert len({sent[f"client/{i}"] for i in range(4)}) == 1 and sent["client/0"] >= 4 * 9610  # a ring word a value


@pytest.mark.slow
def test_engine_flower_matches_the_in_process_run():
    from securefl.fedavg import train as in_process
    from securefl.flower.training import train as over_flower

    data = federated_digits(10, 0.5, 0)
    kw = dict(rounds=5, local_epochs=2, dropout=0.2, seed=0)
    _, ref = in_process(securefl.Plaintext(seed=0), data, **kw)
    _, got = over_flower(securefl.Plaintext(seed=0), data, **kw)
    # the same clients drop in the same rounds, and the accuracy is that of the in-process run (local training
    # draws its batches per client, so not bit for bit)
    assert [m.dropped for m in got] == [m.dropped for m in ref] and any(m.dropped for m in ref)
    assert [m.survivors for m in got] == [m.survivors for m in ref]
    assert abs(got[-1].accuracy - ref[-1].accuracy) <= 0.04
    assert got[-1].accuracy > 0.85


def test_securefl_run_engine_flower_refuses_sampling_before_starting_ray(capsys):
    from securefl.cli import main

    rc = main(["run", "--engine", "flower", "--aggregator", "plaintext", "--clients", "4", "--rounds", "1",
               "--sample-rate", "0.5"])
    assert rc == 2 and "Poisson sampling" in capsys.readouterr().out


@pytest.mark.slow
def test_securefl_run_engine_flower(tmp_path):
    out = tmp_path / "run.json"
    proc = subprocess.run([sys.executable, "-m", "securefl.cli", "run", "--engine", "flower", "--aggregator",
                           "secagg", "--clients", "6", "--rounds", "3", "--dropout", "0.2", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rounds = json.loads(out.read_text())["rounds"]
    assert len(rounds) == 3 and all(r["error"] is None for r in rounds) and rounds[-1]["accuracy"] > 0.6
    assert any(r["dropped"] for r in rounds)
