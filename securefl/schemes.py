"""Named, ready-to-use configurations of every scheme, shared by `securefl run`, `bench` and `audit`."""

from __future__ import annotations

from collections.abc import Callable

from securefl.aggregator import Aggregator
from securefl.errors import InputError
from securefl.he.ckks import CKKS
from securefl.he.paillier import Paillier
from securefl.mpc.additive import AdditiveSharing
from securefl.mpc.secagg import SecAgg
from securefl.plaintext import Plaintext

SCHEMES: dict[str, Callable[..., Aggregator]] = {
    "plaintext": Plaintext,
    "additive": lambda **kw: AdditiveSharing(num_aggregators=3, **kw),
    "secagg": lambda **kw: SecAgg(threshold=0.6, **kw),
    # SecAgg+: (k, t) from the parameter finder for 5% dropout and 5% corrupt clients (needs n >= 50)
    "secagg+": lambda **kw: SecAgg(neighbors="auto", dropout_rate=0.05, corrupt_fraction=0.05, **kw),
    "ckks": CKKS,
    "paillier": Paillier,
}


def names() -> list[str]:
    """Every scheme name, the baseline first."""
    return list(SCHEMES)


def make(name: str, **options: object) -> Aggregator:
    """An aggregator by name; options are the Aggregator keyword arguments (clip, seed, dp, ...)."""
    try:
        factory = SCHEMES[name]
    except KeyError:
        raise InputError(f"unknown scheme {name!r}; choose one of {', '.join(SCHEMES)}") from None
    return factory(**options)
