"""securefl across real processes: .ci/flower_deploy.py starts flower-superlink and one flower-supernode per party
on 127.0.0.1, runs the examples/flower app with `flwr run`, SIGKILLs one SuperNode when the server sends it the
input stage of round 2, and stops every process it started by PID. The run must finish both rounds, the killed
client dropped at that stage and everyone else in the aggregate, the model learning, no process left.
About 1.5 minutes: marked slow, run by .ci/flower-deploy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("flwr", reason="the flower extra (pip install -e '.[flower]')")

from securefl.errors import ConfigError
from securefl.schemes import scheme_class

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / ".ci" / "flower_deploy.py"


def deploy(tmp_path: Path, *args: str) -> dict:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    summary = tmp_path / "summary.json"
    assert summary.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(summary.read_text())
    assert proc.returncode == 0 and data["problems"] == [], data
    assert data["cleanup"]["still_alive"] == [] and data["cleanup"]["tracked_pids"] > 0
    return data


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["plaintext", "secagg"])
def test_deployment_survives_a_killed_supernode(tmp_path, scheme):
    try:
        stage = scheme_class(scheme).input_stage
    except ConfigError:
        pytest.skip(f"{scheme} has no deployable parties yet")
    data = deploy(tmp_path, "--scheme", scheme, "--clients", "4", "--rounds", "2", "--kill", "client/2",
                  "--kill-round", "2", "--kill-stage", stage, "--port", "39420")
    assert data["killed"]["party"] == "client/2" and data["killed"]["pids"]
    last = data["rounds"][-1]
    assert last["survivors"] == [0, 1, 3] and last["dropped"] == {"2": stage}


@pytest.mark.slow
def test_simulation_runtime_runs_the_same_app(tmp_path):
    data = deploy(tmp_path, "--simulation", "--clients", "4", "--rounds", "2", "--port", "39440")
    assert [r["survivors"] for r in data["rounds"]] == [[0, 1, 2, 3]] * 2
