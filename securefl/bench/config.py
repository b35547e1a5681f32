"""What one benchmark run measures: the Config, the quick and full presets, and the progress callback type."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, replace

Progress = Callable[[int, str], None]  # (units done since the last call, what runs now)


@dataclass(frozen=True)
class Config:
    """What one benchmark run measures. The base point is (base_n, base_m, base_dropout)."""

    ns: tuple[int, ...]
    ms: tuple[int, ...]
    dropouts: tuple[float, ...]
    base_n: int
    base_m: int
    base_dropout: float = 0.0
    schemes: tuple[str, ...] = ()  # empty: every registered scheme
    repeats: int = 3
    dp_mechanisms: tuple[str, ...] = ("distributed", "central")  # DistributedGaussian, GaussianMechanism
    dp_noise_multiplier: float = 1.0
    dp_clip: float = 1.0
    scaling_ns: tuple[int, ...] = ()
    scaling_m: int = 1_000
    cell_budget_s: float = 60.0  # a cell gets repeats rounds, or fewer (at least one) to fit this
    scaling_cell_budget_s: float | None = None  # the same for cells of the scaling sweep alone (None: cell_budget_s)
    run_budget_s: float | None = None  # cells not started by then are skipped
    seed: int = 0
    peers: bool = True
    quick: bool = False

    def cell_budget(self, sweeps: Collection[str]) -> float:
        """The budget of a cell at a point of these sweeps: the scaling sweep's own where it is the only one."""
        if self.scaling_cell_budget_s is not None and set(sweeps) == {"scaling"}:
            return self.scaling_cell_budget_s
        return self.cell_budget_s


QUICK = Config(ns=(4, 8, 16), ms=(100, 1_000, 10_000), dropouts=(0.0, 0.25), base_n=8, base_m=1_000,
               repeats=3, scaling_ns=(50, 100, 200), scaling_m=100, cell_budget_s=10.0, run_budget_s=140.0,
               quick=True)
FULL = Config(ns=(10, 50, 100), ms=(1_000, 10_000, 100_000), dropouts=(0.0, 0.1),
              base_n=100, base_m=100_000, repeats=3, scaling_ns=(100, 300, 1_000, 3_000, 10_000), scaling_m=10_000,
              cell_budget_s=300.0, scaling_cell_budget_s=600.0)
# FULL's SecAgg+ sweep reaches n = 10,000 at m = 1e4. Measured on a 2-core Xeon: a round there 161 s (its estimate from
# n = 3,000: 157 s), the warm-up with the setup of 10,000 identities 167 s; under the 300 s cell budget (skip when 2 x
# the estimate exceeds it) that cell would be skipped, so the sweep's own cells get 600 s: warm-up + 2 timed rounds.


def preset(quick: bool, **overrides: object) -> Config:
    """The quick or full configuration with some fields replaced (None values are ignored)."""
    return replace(QUICK if quick else FULL, **{k: v for k, v in overrides.items() if v is not None})
