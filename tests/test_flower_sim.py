"""securefl in Flower's simulation engine (flwr.simulation.run_simulation, Ray): 10 clients, the result of
every round equal to the in-process aggregate of the same scheme within the codec's resolution, with a
client that crashes and one that misses the input stage's deadline.

Each simulation runs in its own process (tests/flower_sim.py; Ray starts once per process), shared by
the checks of one scheme. Plaintext runs in the default suite; the other schemes and FedAdam are marked slow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr", reason="the flower extra (pip install -e '.[flower]')")

import securefl
from securefl.flower import spec_of_arrays, write_federation
from tests import flower_apps as fa

ROOT = Path(__file__).resolve().parent.parent
N = 10
ROUNDS = 3
# client 3 crashes at the input stage of round 2; client 5 hangs past the input deadline in round 3
FAULTS = {"SECUREFL_TEST_FAIL": "3:{input}:2", "SECUREFL_TEST_HANG": "5:{input}:3",
          "SECUREFL_TEST_HANG_SECONDS": "8"}
DROPPED = {1: {}, 2: {3: "input"}, 3: {5: "input"}}
INPUT_DEADLINE = 5.0


AGGREGATORS = fa.AGGREGATORS


def simulate(tmp: Path, agg: securefl.Aggregator, strategy: str = "fedavg") -> tuple[dict, dict]:
    folder = tmp / agg.scheme
    config = write_federation(folder, agg, spec_of_arrays(fa.initial_arrays()), N, weight_bound=fa.WEIGHT_BOUND,
                              timeouts={agg.input_stage: INPUT_DEADLINE, "default": 30.0, "securefl.hello": 120.0})
    env = {**os.environ, "PYTHONPATH": str(ROOT), **{k: v.format(input=agg.input_stage) for k, v in FAULTS.items()}}
    out = folder / "out.json"
    proc = subprocess.run([sys.executable, "-m", "tests.flower_sim", str(folder), str(out), str(ROUNDS), strategy],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text()), config



@pytest.fixture(scope="module")
def plaintext_run(tmp_path_factory):
    return simulate(tmp_path_factory.mktemp("sim"), AGGREGATORS["plaintext"]())


def check_run(data: dict, name: str) -> None:
    """Every round: survivors and dropouts as scheduled, the mean within the codec's resolution of the exact mean and
    of the in-process aggregate; the final model the sum of the rounds' means."""
    agg = ref_agg = AGGREGATORS[name](weight_bound=fa.WEIGHT_BOUND)
    assert data["registered"] == sorted(data["parties"])
    expected, ref_total, tol_total = fa.flat(fa.initial_arrays()), fa.flat(fa.initial_arrays()), 0.0
    for rec in data["rounds"]:
        rnd, rep = rec["round"], rec["report"]
        dropped = {i: agg.input_stage for i in DROPPED[rnd]}
        survivors = [i for i in range(N) if i not in dropped]
        assert rec["error"] is None and rep["survivors"] == survivors
        assert rep["dropped"] == {str(i): s for i, s in dropped.items()}
        ref = fa.in_process(ref_agg, rnd, range(N), dropped)
        assert ref.report.survivors == survivors
        expected = expected + fa.exact_mean(rnd, survivors)
        ref_total = ref_total + np.concatenate([ref.mean[k].double().numpy().ravel() for k in fa.SHAPES])
        tol_total += fa.tolerance(survivors)
        assert rep["bytes_sent"]["client/0"] == pytest.approx(ref.report.bytes_sent["client/0"], rel=0.01)
    got = np.concatenate([np.ravel(v) for v in data["final"].values()])
    assert np.abs(got - expected).max() <= tol_total
    assert np.abs(got - ref_total).max() <= 2 * tol_total
    # the deadline, not Flower's 60 s heartbeat, decided client 5's dropout
    assert INPUT_DEADLINE <= data["rounds"][2]["stage_seconds"][agg.input_stage] < INPUT_DEADLINE + 3


@pytest.mark.slow
def test_plaintext_in_the_simulation_engine(plaintext_run):
    data, _ = plaintext_run
    check_run(data, "plaintext")
    # one train call per node per round, counted in each node's Context.state (client 3 dropped in round 2)
    assert [data["train_metrics"][r]["train-calls"] for r in ("1", "2")] == pytest.approx([1.0, 2.0])


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in AGGREGATORS if n != "plaintext"])
def test_scheme_in_the_simulation_engine(tmp_path, name):
    data, _ = simulate(tmp_path, AGGREGATORS[name]())
    check_run(data, name)
