"""`securefl run`: smoke test, JSON output, the default configuration's accuracy, bad options."""

from __future__ import annotations

import json

import numpy as np
import pytest

from securefl.cli import DEFAULT_AGGREGATOR, main
from securefl.datasets import dirichlet_split


def test_run_two_rounds_writes_json(tmp_path):
    out = tmp_path / "m.json"
    assert main(["run", "--rounds", "2", "--clients", "4", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["config"]["aggregator"] == DEFAULT_AGGREGATOR
    assert [r["round"] for r in data["rounds"]] == [1, 2]
    assert all(r["survivors"] == 4 and r["client_bytes"] > 0 for r in data["rounds"])


def test_default_run_reaches_90_percent(tmp_path):
    out = tmp_path / "m.json"
    assert main(["run", "--json", str(out)]) == 0
    rounds = json.loads(out.read_text())["rounds"]
    assert rounds[-1]["accuracy"] >= 0.90


def test_run_with_dropout_reports_survivors(tmp_path):
    out = tmp_path / "m.json"
    assert main(["run", "--rounds", "3", "--dropout", "0.3", "--json", str(out)]) == 0
    rounds = json.loads(out.read_text())["rounds"]
    assert any(r["participants"] < 10 for r in rounds)
    assert all(r["survivors"] == r["participants"] or r["error"] for r in rounds)


@pytest.mark.parametrize("argv", [["run", "--dropout", "1.5"], ["run", "--clients", "0"], ["run", "--aggregator", "x"]])
def test_bad_options_exit_with_usage_error(argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2


def test_dirichlet_split_covers_every_example_once():
    labels = np.repeat(np.arange(10), 50)
    parts = dirichlet_split(labels, 7, alpha=0.3, seed=3)
    allidx = np.concatenate(parts)
    assert len(parts) == 7 and all(len(p) > 0 for p in parts)
    assert np.array_equal(np.sort(allidx), np.arange(500))
