"""Packaging and import hygiene: a light `import securefl`, one version string, py.typed, no print() in the library."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import securefl

PACKAGE = Path(securefl.__file__).parent
ROOT = PACKAGE.parent
HEAVY = ("torch", "numba", "dp_accounting", "tenseal", "phe", "gmpy2", "matplotlib", "flwr")


def loaded_after(code: str) -> dict[str, bool]:
    """Which heavy libraries are in sys.modules after running `code` in a fresh interpreter."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_import_securefl_loads_no_scheme_library():
    assert not any(loaded_after("import securefl").values())


def test_a_scheme_loads_only_what_it_needs():
    """Building an aggregator loads no heavy library: torch comes with the user's updates, Numba with the
    first encoding, dp-accounting with DP."""
    assert not any(loaded_after("import securefl\nsecurefl.SecAgg(threshold=0.6)\nsecurefl.AdditiveSharing()").values())


def test_scheme_registry_and_cli_parser_load_no_scheme_library():
    loaded = loaded_after("from securefl import schemes, cli\nschemes.names()\ncli.build_parser()")
    assert not any(loaded[m] for m in ("tenseal", "phe", "gmpy2", "matplotlib", "flwr"))


def test_lazy_exports_resolve():
    for name in securefl.__all__:
        assert getattr(securefl, name).__name__ == name
    assert securefl.dp.GaussianMechanism is not None  # subpackages resolve on first use too
    assert "SecAgg" in dir(securefl)


def test_one_version_string():
    from importlib.metadata import version

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" in meta["project"]["dynamic"] and "version" not in meta["project"]
    assert meta["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "securefl.__version__"}
    assert version("securefl") == securefl.__version__
    assert f"## [{securefl.__version__}]" in (ROOT / "CHANGELOG.md").read_text()


def test_typed_and_licensed():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert (PACKAGE / "py.typed").is_file() and "py.typed" in meta["tool"]["setuptools"]["package-data"]["securefl"]
    license_text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text and meta["project"]["license"] == {"text": "Apache-2.0"}


def test_library_code_never_prints():
    """Library messages go through logging; the command line and bench print through rich consoles."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
