"""What one benchmark run measures: the Config, its special points, the quick and full presets, the progress type."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, replace

Progress = Callable[[int, str], None]  # (units done since the last call, what runs now)


@dataclass(frozen=True)
class Special:
    """A point of its own beside the star: its clients, its update (a flat vector of m values, or a state_dict
    shaped like `model` at base `width`, securefl.bench.workload.MODELS), the schemes measured there (Plaintext,
    the base of every ratio, always beside them) and its DP variants (None: no DP; "distributed", "central"),
    interleaved in the same rounds so that each DP cell is set against the same scheme without DP."""

    name: str
    what: str
    n: int
    schemes: tuple[str, ...]
    m: int = 0  # a flat update of m values, unless `model` is given
    model: str = ""
    width: int = 64
    dp: tuple[str | None, ...] = (None,)
    dropout: float = 0.0
    budget_s: float | None = None  # its cells' budget when it is their only sweep (None: cell_budget_s)
    peers: tuple[str, ...] = ()  # peer lines (securefl.bench.peers.PEERS names) measured at this point too


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
    specials: tuple[Special, ...] = ()
    cell_budget_s: float = 60.0  # a cell gets repeats rounds, or fewer (at least one) to fit this
    scaling_cell_budget_s: float | None = None  # the same for cells of the scaling sweep alone (None: cell_budget_s)
    run_budget_s: float | None = None  # cells not started by then are skipped
    seed: int = 0
    peers: bool = True
    quick: bool = False

    def cell_budget(self, sweeps: Collection[str]) -> float:
        """The budget of a cell at a point of these sweeps: the scaling sweep's or a special point's own where it
        is the only one."""
        own = {"scaling": self.scaling_cell_budget_s} | {s.name: s.budget_s for s in self.specials}
        only = set(sweeps)
        if len(only) == 1 and own.get(next(iter(only))) is not None:
            return own[next(iter(only))]
        return self.cell_budget_s


# The full run's special points: CKKS on a ResNet-18-sized state_dict with 10 clients (the per-tensor codec
# path; upload bytes over float32 and the key holder over its floor), TenSEAL at FLARE's defaults on the same
# state_dict beside it; SecAgg with distributed DP against the same round without DP, at n = 20, m = 1e5.
MODEL = Special("model", "CKKS on a ResNet-18-shaped state_dict (torchvision's float tensors), 10 clients", n=10,
                schemes=("ckks",), model="resnet18", width=64, budget_s=900.0, peers=("tenseal-flare",))
DP_SMALL = Special("dp-small", "SecAgg with dp.DistributedGaussian beside the same round without DP", n=20,
                   schemes=("secagg",), m=100_000, dp=(None, "distributed"))

QUICK = Config(ns=(4, 8, 16), ms=(100, 1_000, 10_000), dropouts=(0.0, 0.25), base_n=8, base_m=1_000,
               repeats=3, scaling_ns=(50, 100, 200), scaling_m=100, cell_budget_s=10.0, run_budget_s=140.0,
               quick=True)
FULL = Config(ns=(10, 50, 100), ms=(1_000, 10_000, 100_000), dropouts=(0.0, 0.1),
              base_n=100, base_m=100_000, repeats=3, scaling_ns=(100, 300, 1_000, 3_000, 10_000), scaling_m=10_000,
              specials=(MODEL, DP_SMALL), cell_budget_s=300.0, scaling_cell_budget_s=600.0)
# FULL's SecAgg+ sweep reaches n = 10,000 at m = 1e4. Measured on a 2-core Xeon: a round there 161 s (its estimate from
# n = 3,000: 157 s), the warm-up with the setup of 10,000 identities 167 s; under the 300 s cell budget (skip when 2 x
# the estimate exceeds it) that cell would be skipped, so the sweep's own cells get 600 s: warm-up + 2 timed rounds.
# The model point's CKKS round took 36 s on a quiet 2-core Xeon (benchmarks/bench_he.py, 62 s loaded): its 900 s
# budget holds a warm-up and 3 timed rounds even loaded.


def preset(quick: bool, **overrides: object) -> Config:
    """The quick or full configuration with some fields replaced (None values are ignored)."""
    return replace(QUICK if quick else FULL, **{k: v for k, v in overrides.items() if v is not None})
