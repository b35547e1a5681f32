"""The examples shipped with the repository run as written."""

from __future__ import annotations

import runpy
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_drop_in_example_runs(capsys):
    runpy.run_path(str(EXAMPLES / "drop_in.py"), run_name="__main__")
    assert capsys.readouterr().out.count("5 clients") == 3


def test_multiprocess_example_releases_the_exact_weighted_mean():
    """Five client processes, each with only its own key, and the server over pipes (securefl.deploy)."""
    import subprocess
    import sys

    import torch

    out = subprocess.run([sys.executable, str(EXAMPLES / "multiprocess.py")], capture_output=True, text=True,
                         check=True, timeout=300).stdout
    got = [float(x) for x in out.split("b = [")[1].split("]")[0].split()]
    weights, bs = [10.0 + i for i in range(5)], []
    for i in range(5):
        torch.manual_seed(i)
        torch.randn(4, 3)
        bs.append(torch.randn(3))
    want = sum(w * b for w, b in zip(weights, bs, strict=True)) / sum(weights)
    assert torch.allclose(torch.tensor(got), want.float(), atol=2e-4)
