"""Named, ready-to-use configurations of every scheme, shared by `securefl run`, `bench` and `audit`.

An entry names its class by module path and imports it on first use, so listing the schemes (the
command line's --help) loads no scheme library. `make` checks scheme options (neighbors, threshold,
...) against the entry, so a misplaced option is an InputError naming what the scheme takes.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from securefl.errors import ConfigError, InputError

if TYPE_CHECKING:
    from securefl.aggregator import Aggregator

# options every Aggregator takes; anything else is a scheme option and must be listed by the entry
COMMON_OPTIONS = frozenset({"clip", "frac_bits", "int_bound", "weight_bound", "seed", "dp"})
SECAGG_OPTIONS = frozenset({"threshold", "neighbors", "dropout_rate", "corrupt_fraction", "signed_keys",
                            "consistency_check"})
DP_KINDS = ("distributed", "central")  # DistributedGaussian, GaussianMechanism


@dataclass(frozen=True)
class Entry:
    """A registered configuration: the class ("module:Class", imported on first use), the scheme
    options it sets unless the caller does, and the scheme options a caller may set."""

    target: str
    defaults: Mapping[str, object] = field(default_factory=dict)
    options: frozenset[str] = frozenset()

    def load(self) -> type[Aggregator]:
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)

    def __call__(self, **options: object) -> Aggregator:
        return self.load()(**{**self.defaults, **options})


SCHEMES: dict[str, Callable[..., Aggregator]] = {
    "plaintext": Entry("securefl.plaintext:Plaintext"),
    "additive": Entry("securefl.mpc.additive:AdditiveSharing", {"num_aggregators": 3},
                      frozenset({"num_aggregators", "min_clients"})),
    "secagg": Entry("securefl.mpc.secagg:SecAgg", {"threshold": 0.6}, SECAGG_OPTIONS),
    # SecAgg+: (k, t) from the parameter finder for the run's dropout rate and 5% corrupt clients
    "secagg+": Entry("securefl.mpc.secagg:SecAgg",
                     {"neighbors": "auto", "dropout_rate": 0.05, "corrupt_fraction": 0.05}, SECAGG_OPTIONS),
    "ckks": Entry("securefl.he.ckks:CKKS", {}, frozenset({"poly_modulus_degree"})),
    "paillier": Entry("securefl.he.paillier:Paillier", {}, frozenset({"key_bits"})),
}


def names() -> list[str]:
    """Every scheme name, the baseline first."""
    return list(SCHEMES)


def _factory(name: str) -> Callable[..., Aggregator]:
    try:
        return SCHEMES[name]
    except KeyError:
        raise InputError(f"unknown scheme {name!r}; choose one of {', '.join(SCHEMES)}") from None


def options(name: str) -> frozenset[str]:
    """The scheme options (beyond the Aggregator ones) that `make(name, ...)` accepts."""
    factory = _factory(name)
    return factory.options if isinstance(factory, Entry) else frozenset()


def make(name: str, **opts: object) -> Aggregator:
    """An aggregator by name; opts are the Aggregator keyword arguments (clip, seed, dp, ...) and the
    scheme options its entry lists (e.g. neighbors, threshold, dropout_rate for SecAgg)."""
    factory = _factory(name)
    if isinstance(factory, Entry):
        extra = sorted(set(opts) - COMMON_OPTIONS - factory.options)
        if extra:
            takes = ", ".join(sorted(factory.options)) or "none"
            raise InputError(f"scheme {name!r} takes no option {', '.join(extra)} (its scheme options: {takes})")
    return factory(**opts)


def dropout_options(name: str, rate: float) -> dict[str, object]:
    """The scheme options that size `name` for a run whose clients drop at `rate`: SecAgg's parameter finder
    (neighbors="auto") designs for max(rate, the entry's own design rate); other schemes need nothing."""
    if "dropout_rate" not in options(name):
        return {}
    factory = SCHEMES[name]
    floor = float(factory.defaults.get("dropout_rate", 0.0)) if isinstance(factory, Entry) else 0.0
    return {"dropout_rate": max(float(rate), floor)}


def dp_kinds(name: str) -> tuple[str, ...]:
    """The DP mechanisms ("distributed", "central") the scheme accepts: each is tried on a fresh instance,
    which refuses a mechanism it cannot run when it is built."""
    from securefl import dp

    mechanisms = {"distributed": dp.DistributedGaussian, "central": dp.GaussianMechanism}
    kinds = []
    for kind in DP_KINDS:
        try:
            make(name, dp=mechanisms[kind](1.0, 1.0))
        except ConfigError:
            continue
        kinds.append(kind)
    return tuple(kinds)
