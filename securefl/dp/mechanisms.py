"""DP mechanisms: one protocol that schemes call stage by stage, and two mechanisms.

Neighbouring relation: one client's update added or removed (the client's weight and its
participation are public, as they are to the server of any deployment). Every client's float
update is clipped to L2 <= clip, with room left for the fixed-point rounding, so the encoded
contribution (normalised weight <= 1 included) has L2 <= clip 2^frac_bits ring units whatever the
rounding draws: the sensitivity bound holds for every rounding outcome, so the accounting assumes
nothing of the rounding's randomness. Integer tensors (e.g. BatchNorm counters) are summed exactly
and are not covered by DP.

All noise is the exact discrete Gaussian on the fixed-point grid, in ring units, drawn from the OS
CSPRNG (securefl.dp.sampler), never from `seed`: no floating-point sample exists, so Mironov's
attack on the low-order bits of float noise has nothing to read.

The protocol (each stage is a method every mechanism has; a stage a mechanism does not use is a no-op):

* prepare(flat, frac_bits): the client's L2 clip, before encoding.
* client_variance(frac_bits, min_survivors) -> int: the round's public per-client noise variance
  (0: no client noise); client_noise(size, variance) -> int64 ring-unit noise a client adds to its
  encoded floats before masking, sharing or encrypting.
* release_variance(frac_bits) -> int and release_noise(signed_words, frac_bits): the noise the party
  that decodes the sum adds to the signed ring words before anyone else sees them (0 / no-op when
  the clients carry the noise).
* ring_headroom(frac_bits, n_clients, min_survivors): ring units the codec reserves for the noise.
* round_event(...) -> dp_accounting.DpEvent for one released round; an Accountant (separate object,
  securefl.dp.accounting) composes them. `accountant` holds the one this mechanism's rounds are
  charged to; to_dict() / from_dict() carry the public parameters in a round configuration.

GaussianMechanism (central): the decoding party adds N_Z(0, S), S = ceil((z clip 2^f)^2); the
release is (clip^2 2^2f / 2S)-zCDP <= 1 / 2z^2 (Canonne, Kamath, Steinke 2020). Nobody is protected
from the decoding party itself.

DistributedGaussian: each client adds N_Z(0, s) with s = ceil((z clip 2^f)^2 / m), m the fewest
survivors the scheme guarantees. A sum holding k such shares is (eps^2 / 2)-zCDP with
eps = D / sqrt(k s) + sqrt(d) tau, tau = 10 sum_{j<k} exp(-2 pi^2 s j / (j + 1)), D = clip 2^f
(Kairouz, Liu, Steinke, ICML 2021, Prop. 14).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import ClassVar

import dp_accounting
import numpy as np

from securefl.codec import Flat
from securefl.dp import accounting
from securefl.dp._kernels import sum_squares
from securefl.dp.accounting import Accountant
from securefl.dp.sampler import discrete_gaussian
from securefl.errors import ConfigError

NOISE_SIGMAS = 20.0  # ring headroom: P(|N(0, s)| > 20 sigma) < 1e-86 per coordinate
CONFIG_VERSION = 1


class Mechanism(ABC):
    """Common part of the mechanisms: public parameters, clipping, accounting.

    sampling_rate: the Poisson client-sampling rate q of each round (amplification applies against
    observers of the released aggregates; a party that knows who took part gets the q = 1
    guarantee). delta: the delta of report.epsilon. accountant: where released rounds are charged
    (a fresh Accountant by default).
    """

    name: ClassVar[str]  # the mechanism's name in a round configuration
    kind: ClassVar[str]  # read only by securefl.encoding until it calls the protocol
    _registry: ClassVar[dict[str, type[Mechanism]]] = {}

    def __init_subclass__(cls, **kwargs: object):
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:  # a subclass that keeps its parent's name does not replace it
            Mechanism._registry[cls.name] = cls

    def __init__(self, noise_multiplier: float, clip: float, *, delta: float = 1e-5, sampling_rate: float = 1.0,
                 accountant: Accountant | None = None):
        if not (noise_multiplier > 0 and math.isfinite(noise_multiplier)):
            raise ConfigError(f"noise_multiplier must be a positive finite number, got {noise_multiplier}")
        if not (clip > 0 and math.isfinite(clip)):
            raise ConfigError(f"clip (the L2 bound of an update) must be a positive finite number, got {clip}")
        accounting.check(sampling_rate=sampling_rate, delta=delta)
        self.noise_multiplier, self.clip = float(noise_multiplier), float(clip)
        self.delta, self.sampling_rate = float(delta), float(sampling_rate)
        self.accountant = Accountant() if accountant is None else accountant

    # --- client side -------------------------------------------------------------------------------

    def prepare(self, flat: Flat, frac_bits: int) -> Flat:
        """A client's update with its floats clipped to L2 <= clip - sqrt(d) 2^-frac_bits: stochastic rounding
        moves each coordinate by < 2^-frac_bits, so the encoded (rounded) update has L2 <= clip exactly."""
        d = flat.floats.size
        bound = (self.clip - math.sqrt(d) * 2.0**-frac_bits) * (1 - 1e-6)  # 1e-6 absorbs float32 rounding
        if bound <= 0:
            raise ConfigError(f"DP clip {self.clip} leaves no room for the rounding of {d} values at "
                              f"frac_bits={frac_bits}; raise frac_bits or the clip")
        norm = math.sqrt(sum_squares(flat.floats))
        if norm <= bound:
            return flat
        return Flat(flat.floats * flat.floats.dtype.type(bound / norm), flat.ints)

    def client_variance(self, frac_bits: int, min_survivors: int) -> int:
        """Per-client noise variance in ring units^2 (0: clients add none)."""
        return 0

    @staticmethod
    def client_noise(size: int, variance: int) -> np.ndarray:
        """One client's noise: `size` exact N_Z(0, variance) draws (int64 ring units) from the OS CSPRNG."""
        return discrete_gaussian(variance, size)

    # --- the decoding party ------------------------------------------------------------------------

    def release_variance(self, frac_bits: int) -> int:
        """Variance (ring units^2) of the noise the decoding party adds (0: none)."""
        return 0

    def release_noise(self, signed_words: np.ndarray, frac_bits: int) -> None:
        """Add the decoding party's noise to the signed ring words of the float sums, in place (nothing when
        the clients carry the noise): the exact discrete Gaussian on the fixed-point grid."""
        variance = self.release_variance(frac_bits)
        if variance and signed_words.size:
            noise = discrete_gaussian(variance, signed_words.size)
            np.add(signed_words, noise.astype(signed_words.dtype, copy=False), out=signed_words)

    # --- parameters shared by every party ----------------------------------------------------------

    def ring_headroom(self, frac_bits: int, n_clients: int, min_survivors: int) -> float:
        """Largest |noise| (ring units) any sum coordinate can carry, to NOISE_SIGMAS standard deviations."""
        total = n_clients * self.client_variance(frac_bits, min_survivors) + self.release_variance(frac_bits)
        return NOISE_SIGMAS * math.sqrt(total)

    @abstractmethod
    def rho(self, *, frac_bits: int, noisy_clients: int, min_survivors: int, dim: int) -> float:
        """zCDP rho of a sum of `dim` floats holding `noisy_clients` clients' noise shares (and the release
        noise); inf when nothing noises it."""

    def round_event(self, *, frac_bits: int, noisy_clients: int, min_survivors: int, dim: int,
                    sampling_rate: float | None = None) -> dp_accounting.DpEvent:
        """The DpEvent of one released round (sampling_rate: the mechanism's unless given; 1 for a party
        that knows who took part)."""
        q = self.sampling_rate if sampling_rate is None else sampling_rate
        rho = self.rho(frac_bits=frac_bits, noisy_clients=noisy_clients, min_survivors=min_survivors, dim=dim)
        return accounting.round_event(rho, q)

    @staticmethod
    def effective_noise_multiplier(rho: float) -> float:
        """The continuous Gaussian noise multiplier with the same zCDP: 1 / sqrt(2 rho) (0 for no noise)."""
        return 0.0 if math.isinf(rho) else 1.0 / math.sqrt(2.0 * rho)

    # --- budget conveniences (the attached accountant) ---------------------------------------------

    def epsilon(self) -> float:
        """Cumulative epsilon at self.delta of the rounds charged to this mechanism's accountant."""
        return self.accountant.get_epsilon(self.delta)

    @property
    def rounds(self) -> int:
        """Rounds charged to this mechanism's accountant."""
        return self.accountant.rounds

    # --- configuration -----------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """The public parameters, as plain data for a round configuration (the budget is the accountant's)."""
        return {"version": CONFIG_VERSION, "mechanism": self.name, "noise_multiplier": self.noise_multiplier,
                "clip": self.clip, "delta": self.delta, "sampling_rate": self.sampling_rate}

    @classmethod
    def from_dict(cls, data: Mapping, accountant: Accountant | None = None) -> Mechanism:
        """The mechanism a configuration names (with a fresh accountant unless one is given)."""
        try:
            if data["version"] != CONFIG_VERSION:
                raise ConfigError(f"DP mechanism configuration version {data['version']!r}, expected {CONFIG_VERSION}")
            kind = Mechanism._registry.get(data["mechanism"])
            if kind is None or not (cls is Mechanism or kind is cls):
                raise ConfigError(f"unknown DP mechanism {data['mechanism']!r}")
            values = [float(data[k]) for k in ("noise_multiplier", "clip", "delta", "sampling_rate")]
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"malformed DP mechanism configuration: {e!r}") from None
        return kind(values[0], values[1], delta=values[2], sampling_rate=values[3], accountant=accountant)

    # --- the previous names, still called by securefl.encoding: they delegate to the protocol above and go
    # once it calls the protocol ---------------------------------------------------------------------------

    def clip_flat(self, flat: Flat, frac_bits: int) -> Flat:
        """prepare."""
        return self.prepare(flat, frac_bits)

    def local_variance(self, frac_bits: int, min_survivors: int) -> int:
        """client_variance."""
        return self.client_variance(frac_bits, min_survivors)

    @staticmethod
    def noise_bound(local_variance: int, n_clients: int) -> float:
        """Headroom for the client noise of n_clients (ring_headroom's client part)."""
        return NOISE_SIGMAS * math.sqrt(n_clients * local_variance)

    def ring_noise_bound(self, frac_bits: int) -> float:
        """Headroom for the release noise (ring_headroom's release part)."""
        return NOISE_SIGMAS * math.sqrt(self.release_variance(frac_bits))

    def describe(self) -> dict:
        """Public parameters, for reports."""
        return {k: v for k, v in self.to_dict().items() if k != "version"}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(noise_multiplier={self.noise_multiplier}, clip={self.clip}, "
                f"delta={self.delta}, sampling_rate={self.sampling_rate})")


class GaussianMechanism(Mechanism):
    """Central DP: updates clipped to L2 <= clip; the party that decodes the sum adds exact discrete Gaussian
    noise of standard deviation z clip on the fixed-point grid (ring units, CSPRNG-drawn) before it
    releases the sum."""

    name = "gaussian"
    kind = "central"

    def release_variance(self, frac_bits: int) -> int:
        return math.ceil((self.noise_multiplier * self.clip * 2.0**frac_bits) ** 2)

    def rho(self, *, frac_bits: int, noisy_clients: int, min_survivors: int, dim: int) -> float:
        return (self.clip * 2.0**frac_bits) ** 2 / (2.0 * self.release_variance(frac_bits))


class DistributedGaussian(Mechanism):
    """Distributed DP: each client adds exact discrete Gaussian noise in the ring before masking, sized so
    that any min_survivors clients together carry noise of standard deviation z clip."""

    name = "distributed_gaussian"
    kind = "distributed"

    def client_variance(self, frac_bits: int, min_survivors: int) -> int:
        if min_survivors < 1:
            raise ConfigError(f"min_survivors must be >= 1, got {min_survivors}")
        return math.ceil((self.noise_multiplier * self.clip * 2.0**frac_bits) ** 2 / min_survivors)

    def rho(self, *, frac_bits: int, noisy_clients: int, min_survivors: int, dim: int) -> float:
        if noisy_clients < 1:
            return math.inf
        s = self.client_variance(frac_bits, min_survivors)
        j = np.arange(1, noisy_clients)
        tau = 10.0 * float(np.exp(-2.0 * math.pi**2 * s * j / (j + 1)).sum())
        eps = self.clip * 2.0**frac_bits / math.sqrt(noisy_clients * s) + math.sqrt(dim) * tau
        return eps * eps / 2.0
