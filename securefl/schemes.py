"""The scheme registry: the one place a scheme is registered, read by `securefl run`, `bench`, `audit` and Flower.

An entry names its class by module path and imports it on first use, so listing the schemes (the
command line's --help) loads no scheme library. Everything else about a scheme is on its class
(securefl.aggregator.Aggregator): stages, roles, threat model, the options its constructor takes
(`option_names`), its hardware floor model (`floor`) and scaling behaviour (`scales_in_n`). `make`
checks options against the class, so a misplaced option is an InputError naming what the scheme takes.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from securefl.errors import ConfigError, InputError

if TYPE_CHECKING:
    from securefl.aggregator import Aggregator

BASELINE = "plaintext"  # the scheme every other one is measured against (the bench's ratios)
DP_KINDS = ("distributed", "central")  # DistributedGaussian, GaussianMechanism


@dataclass(frozen=True)
class Entry:
    """A registered configuration: the class ("module:Class", imported on first use) and the scheme options it sets
    unless the caller does."""

    target: str
    defaults: Mapping[str, object] = field(default_factory=dict)

    def load(self) -> type[Aggregator]:
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)

    def __call__(self, **options: object) -> Aggregator:
        return self.load()(**{**self.defaults, **options})


SCHEMES: dict[str, Entry | type[Aggregator]] = {
    BASELINE: Entry("securefl.plaintext:Plaintext"),
    "additive": Entry("securefl.mpc.additive:AdditiveSharing", {"num_aggregators": 3}),
    "secagg": Entry("securefl.mpc.secagg:SecAgg", {"threshold": 0.6}),
    # SecAgg+: (k, t) from the parameter finder for the run's dropout rate and 5% corrupt clients
    "secagg+": Entry("securefl.mpc.secagg:SecAgg", {"neighbors": "auto", "dropout_rate": 0.05,
                                                    "corrupt_fraction": 0.05}),
    "ckks": Entry("securefl.he.ckks:CKKS"),
    "paillier": Entry("securefl.he.paillier:Paillier"),
}


def names() -> list[str]:
    """Every scheme name, the baseline first."""
    return list(SCHEMES)


def _factory(name: str) -> Entry | type[Aggregator]:
    try:
        return SCHEMES[name]
    except KeyError:
        raise InputError(f"unknown scheme {name!r}; choose one of {', '.join(SCHEMES)}") from None


def scheme_class(name: str) -> type[Aggregator]:
    """The Aggregator class registered as `name` (its module is imported now)."""
    factory = _factory(name)
    return factory.load() if isinstance(factory, Entry) else factory


def options(name: str) -> frozenset[str]:
    """The scheme options (beyond the Aggregator ones) that `make(name, ...)` accepts: its class's `option_names`."""
    return scheme_class(name).option_names()


def make(name: str, **opts: object) -> Aggregator:
    """An aggregator by name; opts are the Aggregator keyword arguments (clip, seed, dp, ...) and the
    scheme options its class takes (e.g. neighbors, threshold, dropout_rate for SecAgg)."""
    from securefl.aggregator import init_keywords

    factory, cls = _factory(name), scheme_class(name)
    takes = cls.option_names()
    extra = sorted(set(opts) - init_keywords(cls))
    if extra:
        raise InputError(f"scheme {name!r} takes no option {', '.join(extra)} (its scheme options: "
                         f"{', '.join(sorted(takes)) or 'none'})")
    return factory(**opts)


def dropout_options(name: str, rate: float) -> dict[str, object]:
    """The scheme options that size `name` for a run whose clients drop at `rate`: SecAgg's parameter finder
    (neighbors="auto") designs for max(rate, the entry's own design rate); other schemes need nothing."""
    if "dropout_rate" not in options(name):
        return {}
    factory = SCHEMES[name]
    design = float(factory.defaults.get("dropout_rate", 0.0)) if isinstance(factory, Entry) else 0.0
    return {"dropout_rate": max(float(rate), design)}


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
