"""One round's codec, derived by every party from its own RoundConfig, and a client's input through it.

`RoundCodec.of(config, min_survivors)` fixes the layout (the config's ModelSpec), the fixed-point
ring (clip, precision, integer bound, and headroom for the DP noise of n clients), the public
weight bound and the DP mechanism. A client turns whatever its `update()` callback returns into
its ring vector with `encode`: structure checked against the layout (InputError naming the client
and tensor), weight divided by the weight bound, floats L2-clipped for DP, encoded with
stochastic rounding from the OS CSPRNG, and the client's distributed DP noise added before any
masking. The coordinator turns the ring sum back into float sums, exact integer sums and the
weight sum with `decode`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from securefl.codec import FixedPoint, Flat, Layout
from securefl.crypto.prg import SecureUniform
from securefl.errors import InputError
from securefl.session import RoundConfig

if TYPE_CHECKING:
    from securefl.dp.accounting import Accountant
    from securefl.dp.mechanisms import Mechanism

_UNIFORM = SecureUniform()


@dataclass(frozen=True)
class RoundCodec:
    """The public encoding parameters of a round (see the module docstring)."""

    layout: Layout
    fixed: FixedPoint
    weight_bound: float
    dp: Mechanism | None
    min_survivors: int

    @classmethod
    def of(cls, config: RoundConfig, min_survivors: int, accountant: Accountant | None = None) -> RoundCodec:
        """The codec of `config` for a scheme whose successful rounds hold at least `min_survivors` inputs
        (the client noise of distributed DP is sized for them). `accountant`: where the coordinator charges
        released rounds (a fresh one when not given: the round's own epsilon)."""
        dp = None
        if config.dp is not None:  # dp-accounting loads only when a round uses DP
            from securefl.dp.mechanisms import Mechanism

            dp = Mechanism.from_dict(config.dp, accountant)
        n, f, m = config.n, config.frac_bits, max(1, min(int(min_survivors), config.n))
        headroom = 0.0 if dp is None else dp.ring_headroom(f, n, m)
        fixed = FixedPoint.choose(n, clip=config.clip, frac_bits=f, int_bound=config.int_bound, noise_bound=headroom)
        return cls(config.model.layout(), fixed, config.weight_bound, dp, m)

    @property
    def length(self) -> int:
        """Ring words per client: floats, ints and the weight slot."""
        return self.fixed.length(self.layout)

    def flatten(self, index: int, update: object, weight: float) -> tuple[Flat, float]:
        """Validate one client's update and weight: (flat vectors, L2-clipped for DP; weight / weight_bound)."""
        flat = update if isinstance(update, Flat) else self.layout.flatten(update, index)
        if (flat.floats.size, flat.ints.size) != (self.layout.float_size, self.layout.int_size):
            raise InputError(f"client {index}: update of {flat.floats.size} + {flat.ints.size} values, expected "
                             f"{self.layout.float_size} + {self.layout.int_size}")
        try:
            w = float(weight)
        except (TypeError, ValueError):
            raise InputError(f"client {index}: weight {weight!r} is not a number") from None
        if not (math.isfinite(w) and 0 <= w <= self.weight_bound):
            raise InputError(f"client {index}: weight {w} is not in [0, weight_bound={self.weight_bound}]")
        if self.dp is not None:
            flat = self.dp.prepare(flat, self.fixed.frac_bits)
        return flat, w / self.weight_bound

    def encode(self, index: int, update: object, weight: float, out: np.ndarray | None = None
               ) -> tuple[np.ndarray, int]:
        """One client's ring vector (with its distributed DP noise) and how many values were clipped."""
        flat, w = self.flatten(index, update, weight)
        vec, clipped = self.fixed.encode(flat, w, _UNIFORM, self.layout, index, out)
        variance = self.client_variance
        if variance and flat.floats.size:
            signed = vec.view(self.fixed.signed)[: flat.floats.size]
            np.add(signed, self.dp.client_noise(flat.floats.size, variance), out=signed, casting="unsafe")
        return vec, clipped

    @property
    def client_variance(self) -> int:
        """Each client's DP noise variance in ring units^2 (0 without distributed DP)."""
        return 0 if self.dp is None else self.dp.client_variance(self.fixed.frac_bits, self.min_survivors)

    def release(self, ring_sum: np.ndarray) -> None:
        """The decoding party's central DP noise, added in place to the float words of the ring sum before
        anyone else sees it (nothing without DP or when the clients carry the noise)."""
        if self.dp is not None:
            self.dp.release_noise(ring_sum.view(self.fixed.signed)[: self.layout.float_size], self.fixed.frac_bits)

    def charge(self, noisy_clients: int) -> float | None:
        """Charge one released round whose sum holds `noisy_clients` clients' noise to the accountant; return
        the cumulative epsilon at the mechanism's delta (None without DP)."""
        if self.dp is None:
            return None
        self.dp.accountant.step(self.dp.round_event(frac_bits=self.fixed.frac_bits, noisy_clients=noisy_clients,
                                                    min_survivors=self.min_survivors, dim=self.layout.float_size))
        return self.dp.epsilon()

    def dp_params(self, noisy_clients: int) -> dict:
        """The round's DP parameters for the report."""
        if self.dp is None:
            return {}
        f, m, dim = self.fixed.frac_bits, self.min_survivors, self.layout.float_size
        rho = self.dp.rho(frac_bits=f, noisy_clients=noisy_clients, min_survivors=m, dim=dim)
        return {"dp": self.dp.describe() | {"min_survivors": m, "local_variance": self.client_variance,
                                            "release_variance": self.dp.release_variance(f),
                                            "noisy_survivors": noisy_clients, "rho": rho,
                                            "effective_noise_multiplier": self.dp.effective_noise_multiplier(rho)}}

    def decode(self, ring_sum: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """Ring sum -> (sum of normalised-weight x floats, exact int sums, sum of normalised weights)."""
        return self.fixed.decode(ring_sum, self.layout)
