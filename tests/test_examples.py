"""The examples shipped with the repository run as written."""

from __future__ import annotations

import runpy
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_drop_in_example_runs(capsys):
    runpy.run_path(str(EXAMPLES / "drop_in.py"), run_name="__main__")
    assert capsys.readouterr().out.count("5 clients") == 3
