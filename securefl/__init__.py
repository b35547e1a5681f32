"""securefl: the server learns the (weighted) mean of the clients' model updates and nothing else.

Recipes (one interface: ``agg.aggregate(updates, weights=None, dropped=None) -> Result``):
Plaintext (the baseline), AdditiveSharing (K non-colluding aggregators), SecAgg (Bonawitz et al.
2017; SecAgg+ of Bell et al. 2020 with neighbors=k), CKKS (TenSEAL) and Paillier (phe, packed).

The names below are imported on first use, so ``import securefl`` loads no scheme's libraries
(torch, Numba, TenSEAL, phe, gmpy2): a scheme brings in only what it needs.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING

__version__ = "0.1.0"  # the one version string: pyproject.toml reads it, `securefl --version` prints it

_EXPORTS = {
    "AdditiveSharing": "securefl.mpc.additive",
    "Aggregator": "securefl.aggregator",
    "CKKS": "securefl.he.ckks",
    "Paillier": "securefl.he.paillier",
    "Plaintext": "securefl.plaintext",
    "Report": "securefl.report",
    "Result": "securefl.report",
    "SecAgg": "securefl.mpc.secagg",
}

__all__ = ["AdditiveSharing", "Aggregator", "CKKS", "Paillier", "Plaintext", "Report", "Result", "SecAgg"]

if TYPE_CHECKING:
    from securefl.aggregator import Aggregator
    from securefl.he.ckks import CKKS
    from securefl.he.paillier import Paillier
    from securefl.mpc.additive import AdditiveSharing
    from securefl.mpc.secagg import SecAgg
    from securefl.plaintext import Plaintext
    from securefl.report import Report, Result


def __getattr__(name: str) -> object:
    """Import an exported class (or a subpackage such as securefl.dp) the first time it is asked for."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
