"""Named, ready-to-use configurations of every scheme, shared by `securefl run`, `bench` and `audit`."""

from __future__ import annotations

from collections.abc import Callable

from securefl.aggregator import Aggregator
from securefl.errors import InputError
from securefl.mpc.additive import AdditiveSharing
from securefl.plaintext import Plaintext

SCHEMES: dict[str, Callable[..., Aggregator]] = {
    "plaintext": Plaintext,
    "additive": lambda **kw: AdditiveSharing(num_aggregators=3, **kw),
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
