"""The one interface every scheme implements: aggregate(updates, weights, dropped) -> Result."""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch

from securefl.codec import FixedPoint, Flat, Layout, flatten_all
from securefl.errors import ConfigError, DropoutError, InputError
from securefl.report import Report, Result
from securefl.simulation import Simulation

if TYPE_CHECKING:
    from securefl.dp.mechanisms import Mechanism


@dataclass(frozen=True)
class Batch:
    """Validated inputs of one round: layout, flat updates and weights normalised to [0, 1]."""

    layout: Layout
    flats: list[Flat]
    weights: np.ndarray
    weight_bound: float

    @property
    def n(self) -> int:
        return len(self.flats)


@dataclass
class Totals:
    """What the party that learns the aggregate ends with, before it is rebuilt into tensors."""

    floats: np.ndarray  # sum over included clients of normalised weight x clipped update
    ints: np.ndarray  # exact sum of integer tensors over included clients
    weight: float  # sum of normalised weights over included clients
    included: list[int]
    clipped: int = 0
    noised: bool = False  # True when the scheme's decoding party already added central DP noise (HE key holder)


def check_weights(weights: object, n: int, weight_bound: float | None) -> tuple[np.ndarray, float]:
    """Validate weights; return them divided by the weight bound, and the bound."""
    if weights is None:
        w = np.ones(n)
    else:
        if isinstance(weights, torch.Tensor):
            weights = weights.detach().cpu().tolist()
        if isinstance(weights, (str, bytes, Mapping)) or not isinstance(weights, (Sequence, np.ndarray)):
            raise InputError(f"weights must be a sequence of {n} non-negative numbers")
        try:
            w = np.asarray(weights, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as e:
            raise InputError(f"weights must be numbers: {e}") from None
        if w.size != n:
            raise InputError(f"weights has {w.size} entries for {n} clients")
        bad = np.flatnonzero(~np.isfinite(w) | (w < 0))
        if bad.size:
            raise InputError(f"client {bad[0]}: weight {w[bad[0]]} is not a finite non-negative number")
        if w.sum() <= 0:
            raise InputError("weights sum to 0: at least one client needs a positive weight")
    bound = float(w.max()) if weight_bound is None else float(weight_bound)
    if not (bound > 0 and math.isfinite(bound)):
        raise InputError(f"weight_bound must be a positive finite number, got {weight_bound}")
    over = np.flatnonzero(w > bound)
    if over.size:
        raise InputError(f"client {over[0]}: weight {w[over[0]]} exceeds weight_bound={bound}")
    return w / bound, bound


class Aggregator(ABC):
    """Base of every scheme: validates inputs, runs the scheme's parties, rebuilds the result.

    clip: floats are clipped to [-clip, clip] before encoding (clipped values are counted in
    the report). frac_bits: fixed-point precision (2^-frac_bits per value and client).
    int_bound: largest absolute value an integer tensor may hold. weight_bound: public upper
    bound on a client's weight (default: the largest weight given). seed: reproducible
    simulation randomness (rounding, noise); never used for key material. dp: a securefl.dp
    mechanism. Each client's float update is clipped to L2 <= dp.clip before it reaches the
    scheme (dp.clip_flat, with room for the fixed-point rounding); with DistributedGaussian each
    client adds its discrete noise inside FixedPoint.encode (through fixed_point()), before
    masking or sharing; with GaussianMechanism the decoding party (`output_party`) adds the
    central noise in _finish, unless the scheme did so itself (Totals.noised).
    report.epsilon is the cumulative epsilon of the mechanism at dp.delta.
    """

    scheme: ClassVar[str]
    stages: ClassVar[tuple[str, ...]]
    input_stage: ClassVar[str]
    threat_model: ClassVar[str]  # one line: who could learn an individual update
    output_party: ClassVar[str] = "server"  # the party that decodes the sum (adds central DP noise)
    central_noise_in_ring: ClassVar[bool] = False  # True: the scheme's decryptor adds central noise to ring words
    distributed_dp: ClassVar[bool] = True  # False: clients do not encode through FixedPoint.encode (no ring noise)
    simulation_class: ClassVar[type[Simulation]] = Simulation  # the audit swaps in a recording one

    def __init__(
        self,
        *,
        clip: float = 8.0,
        frac_bits: int = 16,
        int_bound: int = 2**16,
        weight_bound: float | None = None,
        seed: int | None = None,
        dp: Mechanism | None = None,
    ):
        self.clip = clip
        self.frac_bits = frac_bits
        self.int_bound = int_bound
        self.weight_bound = weight_bound
        self.seed = seed
        self.dp = dp
        if dp is not None and dp.kind == "distributed" and not self.distributed_dp:
            raise ConfigError(f"{self.scheme}: its clients add no distributed noise (they do not encode through "
                              "FixedPoint.encode); use dp.GaussianMechanism with it")
        FixedPoint.choose(1, clip=clip, frac_bits=frac_bits, int_bound=int_bound)  # validate early

    def min_survivors(self, n_clients: int) -> int:
        """Fewest clients whose input a successful round of n_clients contains (distributed DP noise is
        scaled for it). Schemes that finish with fewer than all (SecAgg: the threshold) override it."""
        return n_clients

    def fixed_point(self, n_clients: int) -> FixedPoint:
        """The ring parameters for a round of n_clients (with the DP clip and client noise when dp is set)."""
        if self.dp is None or self.dp.kind != "distributed":
            in_ring = self.dp is not None and self.central_noise_in_ring
            return FixedPoint.choose(n_clients, clip=self.clip, frac_bits=self.frac_bits, int_bound=self.int_bound,
                                     noise_bound=self.dp.ring_noise_bound(self.frac_bits) if in_ring else 0.0)
        noise_var = self.dp.local_variance(self.frac_bits, self.min_survivors(n_clients))
        fixed = FixedPoint.choose(n_clients, clip=self.clip, frac_bits=self.frac_bits, int_bound=self.int_bound,
                                  noise_bound=self.dp.noise_bound(noise_var, n_clients))
        return dataclasses.replace(fixed, noise_var=noise_var, dp=self.dp)

    def aggregate(
        self,
        updates: Sequence[object],
        weights: Sequence[float] | None = None,
        dropped: Mapping[int, str] | Sequence[int] | None = None,
    ) -> Result:
        """Simulate one secure round over `updates`; return the weighted mean, sum and report."""
        layout, flats = flatten_all(updates)
        w, bound = check_weights(weights, len(flats), self.weight_bound)
        if self.dp is not None:
            flats = [self.dp.clip_flat(f, self.frac_bits) for f in flats]
            self.dp.begin_round()
        batch = Batch(layout, flats, w, bound)
        sim = self.simulation_class(self.scheme, batch.n, self.stages, self.input_stage, dropped, self.seed)
        totals, params = self._run(batch, sim)
        return self._finish(batch, sim, totals, params)

    @abstractmethod
    def _run(self, batch: Batch, sim: Simulation) -> tuple[Totals, dict]:
        """Run the scheme's parties through `sim`; return the totals and the round's parameters."""

    def _finish(self, batch: Batch, sim: Simulation, totals: Totals, params: dict) -> Result:
        if not totals.included:
            raise DropoutError(f"{self.scheme}: no client's input reached the aggregate")
        if totals.weight <= 0:
            raise DropoutError(f"{self.scheme}: the included clients' weights sum to 0; no mean exists")
        k = len(totals.included)
        epsilon, dp_params = self._apply_dp(batch, sim, totals) if self.dp is not None else (None, {})
        mean_ints = (2 * totals.ints + k) // (2 * k)  # exact round-half-up of sum / k
        layout = batch.layout
        mean = layout.unflatten(totals.floats / totals.weight, mean_ints)
        total = layout.unflatten(totals.floats * batch.weight_bound, totals.ints, int_dtype=torch.int64)
        report: Report = sim.report(
            totals.included,
            clipped_values=totals.clipped,
            epsilon=epsilon,
            delta=None if self.dp is None else self.dp.delta,
            params={"clip": self.clip, "frac_bits": self.frac_bits, "weight_bound": batch.weight_bound, **params,
                    **dp_params},
        )
        return Result(mean=mean, sum=total, report=report)

    def _apply_dp(self, batch: Batch, sim: Simulation, totals: Totals) -> tuple[float, dict]:
        """Central noise (if the scheme has not added it), then one round of accounting at the noise present."""
        dp = self.dp
        info = dp.describe()
        if dp.kind == "central":
            if not totals.noised:
                with sim.clock("dp_noise", self.output_party):
                    dp.add_noise(totals.floats, sim.rng(self.output_party))
            z_eff = dp.effective_noise_multiplier()
        else:
            m = self.min_survivors(batch.n)
            noise_var = dp.local_variance(self.frac_bits, m)
            noisy = dp.noised_clients(totals.included)
            z_eff = dp.effective_noise_multiplier(noise_var, noisy, self.frac_bits, batch.layout.float_size)
            info |= {"min_survivors": m, "local_variance": noise_var, "noisy_survivors": noisy}
        info["effective_noise_multiplier"] = z_eff
        return dp.spend(z_eff), {"dp": info}

