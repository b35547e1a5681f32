"""DP mechanisms: L2 clipping, central Gaussian noise, distributed discrete Gaussian noise.

Neighbouring relation: one client's update added or removed (the client's weight and its
participation are public, as they are to the server of any deployment). Every client's float
update is clipped to L2 <= clip, with room left for the fixed-point rounding, so the encoded
contribution (normalised weight <= 1 included) has L2 <= clip exactly: sensitivity = clip.
Integer tensors (e.g. BatchNorm counters) are summed exactly and are not covered by DP.

* GaussianMechanism: the party that decodes the sum adds N(0, (z clip)^2) per coordinate
  (numpy's float sampler: the trusted-party model).
* DistributedGaussian: each client adds discrete Gaussian noise N_Z(0, s^2) inside the integer
  ring before masking or sharing, with s^2 = (z clip 2^frac_bits)^2 / m for m = the minimum number
  of survivors the scheme guarantees. The sum of k >= m such draws is accounted for with
  Kairouz, Liu and Steinke (ICML 2021, Prop. 14): it is (eps^2 / 2)-zCDP with
  eps = Delta2 / sqrt(k s^2) + sqrt(d) tau, tau = 10 sum_{j<k} exp(-2 pi^2 s^2 j / (j + 1)),
  i.e. its Renyi curve is that of a Gaussian with noise multiplier z_eff = 1 / eps; dp-accounting
  then composes that Gaussian. We chose the discrete Gaussian over Skellam because it can be
  sampled exactly with integer arithmetic only (Canonne, Kamath, Steinke 2020): every Bernoulli
  draw below compares exact uniform integers (numpy's bounded-integer sampler), no float exp.
"""

from __future__ import annotations

import math

import numpy as np

from securefl.codec import Flat
from securefl.dp import accounting
from securefl.dp._kernels import sum_squares
from securefl.errors import ConfigError

INT64_MAX = np.iinfo(np.int64).max
SAFE_ROOT = 3_000_000_000  # b <= SAFE_ROOT keeps b * b below 2^63
NOISE_SIGMAS = 20.0  # ring headroom for distributed noise: P(|noise| > 20 sigma) < 1e-86 per coordinate


def _bern_exp_frac(num: np.ndarray, den: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Bernoulli(exp(-num/den)) per entry, num/den in [0, 1] (CKS Algorithm 1, integers only).

    K <- 1; while Bernoulli(gamma / K): K <- K + 1; return K odd. Bernoulli(gamma / K) is drawn as
    Bernoulli(num / den) AND Bernoulli(1 / K), so no product can overflow.
    """
    k = np.ones(num.size, np.int64)
    alive = np.arange(num.size)
    while alive.size:
        hit = (rng.integers(0, den[alive]) < num[alive]) & (rng.integers(0, k[alive]) == 0)
        alive = alive[hit]
        k[alive] += 1
    return (k & 1) == 1


def _bern_exp_one(size: int, rng: np.random.Generator) -> np.ndarray:
    ones = np.ones(size, np.int64)
    return _bern_exp_frac(ones, ones, rng)


def _bern_exp(q: np.ndarray, r: np.ndarray, den: int, rng: np.random.Generator) -> np.ndarray:
    """Bernoulli(exp(-(q + r/den))): q draws of Bernoulli(exp(-1)) (stopping at the first failure), then the rest."""
    ok = np.ones(q.size, bool)
    idx = np.flatnonzero(q > 0)
    left = q[idx]
    while idx.size:
        b = _bern_exp_one(idx.size, rng)
        ok[idx[~b]] = False
        idx, left = idx[b], left[b] - 1
        keep = left > 0
        idx, left = idx[keep], left[keep]
    live = np.flatnonzero(ok)
    ok[live] = _bern_exp_frac(r[live], np.full(live.size, den, np.int64), rng)
    return ok


def _acceptance_terms(b: np.ndarray, den: int) -> tuple[np.ndarray, np.ndarray]:
    """(q, r) with b^2 = q den + r, exact; q is capped at 2^63 - 1, a count of consecutive
    Bernoulli(exp(-1)) successes no run can reach, so the cap never changes an outcome."""
    small = b <= SAFE_ROOT
    q, r = np.empty(b.size, np.int64), np.empty(b.size, np.int64)
    q[small], r[small] = np.divmod(b[small] * b[small], den)
    for i in np.flatnonzero(~small):  # astronomically rare: exact with Python integers
        qq, rr = divmod(int(b[i]) ** 2, den)
        q[i], r[i] = min(qq, INT64_MAX), rr
    return q, r


def lattice_variance(variance: float) -> int:
    """The smallest integer S >= variance that is a multiple of t = isqrt(S) + 1.

    The sampler's proposal is a discrete Laplace of scale t; with S = t u the acceptance test
    exp(-(|Z| - u)^2 / (2 S)) only involves small integers. Rounding up adds noise (< 1/sigma relative).
    """
    if not (variance > 0 and math.isfinite(variance)):
        raise ConfigError(f"noise variance must be a positive finite number, got {variance}")
    s = max(1, math.ceil(variance))
    while True:
        t = math.isqrt(s) + 1
        s2 = -(-s // t) * t
        if math.isqrt(s2) + 1 == t:
            return s2
        s = s2


def discrete_gaussian(variance: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """`size` exact draws from the discrete Gaussian N_Z(0, variance) as int64 (CKS 2020, Algorithm 3).

    variance must come from lattice_variance. Vectorised rejection sampling over the pending
    coordinates: discrete Laplace proposal of scale t, accepted with exp(-(|Z| - S/t)^2 / (2S)).
    """
    s = int(variance)
    t = math.isqrt(s) + 1
    if s < 1 or s % t or s > 2**61:
        raise ConfigError(f"discrete Gaussian variance {variance} is not a lattice variance in [1, 2^61]")
    u, den = s // t, 2 * s
    out = np.empty(size, np.int64)
    pending = np.arange(size)
    while pending.size:
        m = pending.size
        x = rng.integers(0, t, m, dtype=np.int64)
        keep = _bern_exp_frac(x, np.full(m, t, np.int64), rng)
        idx, x = pending[keep], x[keep]
        v = np.zeros(idx.size, np.int64)  # geometric: consecutive Bernoulli(exp(-1)) successes
        alive = np.arange(idx.size)
        while alive.size:
            alive = alive[_bern_exp_one(alive.size, rng)]
            v[alive] += 1
        x = x + t * v
        neg = rng.integers(0, 2, idx.size) == 1
        keep = ~(neg & (x == 0))
        idx, x, neg = idx[keep], x[keep], neg[keep]
        q, r = _acceptance_terms(np.abs(x - u), den)
        keep = _bern_exp(q, r, den, rng)
        out[idx[keep]] = np.where(neg[keep], -x[keep], x[keep])
        done = np.zeros(size, bool)
        done[idx[keep]] = True
        pending = pending[~done[pending]]
    return out


class Mechanism:
    """Common part of the DP mechanisms: clip, noise multiplier, accounting state across rounds.

    sampling_rate: the Poisson client-sampling rate q of each round (amplification applies
    against observers of the released aggregates; the server itself knows who took part, so
    against the server the guarantee is the one with q = 1). delta: the delta of report.epsilon.
    accountant: "pld" (default) or "rdp".
    """

    kind = ""

    def __init__(self, noise_multiplier: float, clip: float, *, delta: float = 1e-5, sampling_rate: float = 1.0,
                 accountant: str = "pld"):
        if not (noise_multiplier > 0 and math.isfinite(noise_multiplier)):
            raise ConfigError(f"noise_multiplier must be a positive finite number, got {noise_multiplier}")
        if not (clip > 0 and math.isfinite(clip)):
            raise ConfigError(f"clip (the L2 bound of an update) must be a positive finite number, got {clip}")
        accounting.check(sampling_rate=sampling_rate, delta=delta, accountant=accountant)
        self.noise_multiplier, self.clip = float(noise_multiplier), float(clip)
        self.delta, self.sampling_rate, self.accountant = float(delta), float(sampling_rate), accountant
        self.history: dict[float, int] = {}  # effective noise multiplier -> rounds released with it

    def clip_flat(self, flat: Flat, frac_bits: int) -> Flat:
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

    def begin_round(self) -> None:
        """Start a round (distributed noise is counted per client from here)."""

    @property
    def rounds(self) -> int:
        """Rounds released so far under this mechanism."""
        return sum(self.history.values())

    def spend(self, effective_noise_multiplier: float) -> float:
        """Record one released round; return the cumulative epsilon at self.delta."""
        z = float(f"{effective_noise_multiplier:.6g}")
        z = z if z <= effective_noise_multiplier else math.nextafter(z, 0.0)  # never round noise up
        self.history[z] = self.history.get(z, 0) + 1
        return self.epsilon()

    def epsilon(self, sampling_rate: float | None = None) -> float:
        """Cumulative epsilon of the rounds released so far (0 before the first)."""
        if not self.history:
            return 0.0
        q = self.sampling_rate if sampling_rate is None else sampling_rate
        return accounting.epsilon_of_rounds(self.history, sampling_rate=q, delta=self.delta,
                                            accountant=self.accountant, discretization=1e-3)

    def reset(self) -> None:
        """Forget the rounds released so far (a new training run)."""
        self.history.clear()

    def describe(self) -> dict:
        """Public parameters, for reports."""
        return {"mechanism": self.kind, "noise_multiplier": self.noise_multiplier, "clip": self.clip,
                "delta": self.delta, "sampling_rate": self.sampling_rate, "accountant": self.accountant}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(noise_multiplier={self.noise_multiplier}, clip={self.clip}, "
                f"delta={self.delta}, sampling_rate={self.sampling_rate})")


class GaussianMechanism(Mechanism):
    """Central DP: updates clipped to L2 <= clip; the party that decodes the sum adds N(0, (z clip)^2)."""

    kind = "central"

    def add_noise(self, floats: np.ndarray, rng: np.random.Generator) -> None:
        """Add the noise to a float sum in place (the hook for the party that decodes the sum)."""
        floats += rng.normal(0.0, self.noise_multiplier * self.clip, floats.shape)

    def add_ring_noise(self, signed: np.ndarray, frac_bits: int, rng: np.random.Generator) -> None:
        """Add the noise, in fixed-point units and rounded, to signed ring words in place (the HE key holder's
        hook: it releases only the noisy sum). Rounding after the Gaussian is post-processing."""
        noise = rng.normal(0.0, self.noise_multiplier * self.clip * 2.0**frac_bits, signed.shape)
        np.add(signed, np.rint(noise).astype(signed.dtype), out=signed)

    def ring_noise_bound(self, frac_bits: int) -> float:
        """Ring headroom for that noise (NOISE_SIGMAS standard deviations)."""
        return NOISE_SIGMAS * self.noise_multiplier * self.clip * 2.0**frac_bits

    def effective_noise_multiplier(self) -> float:
        return self.noise_multiplier


class DistributedGaussian(Mechanism):
    """Distributed DP: each client adds exact discrete Gaussian noise in the ring before masking."""

    kind = "distributed"

    def __init__(self, noise_multiplier: float, clip: float, **kwargs: object):
        super().__init__(noise_multiplier, clip, **kwargs)
        self._noised: set[int] = set()

    def begin_round(self) -> None:
        self._noised.clear()

    def client_noise(self, variance: int, size: int, rng: np.random.Generator, client: int) -> np.ndarray:
        """One client's exact discrete Gaussian noise (recorded, so the epsilon counts only noise present)."""
        self._noised.add(int(client))
        return discrete_gaussian(variance, size, rng)

    def noised_clients(self, included: list[int]) -> int:
        """How many of the included clients added their noise this round."""
        return len(self._noised.intersection(int(i) for i in included))

    def local_variance(self, frac_bits: int, min_survivors: int) -> int:
        """Per-client variance (ring units^2) so that any min_survivors clients carry (z clip 2^f)^2."""
        if min_survivors < 1:
            raise ConfigError(f"min_survivors must be >= 1, got {min_survivors}")
        return lattice_variance((self.noise_multiplier * self.clip * 2.0**frac_bits) ** 2 / min_survivors)

    @staticmethod
    def noise_bound(local_variance: int, n_clients: int) -> float:
        """Ring headroom for the noise of n_clients (NOISE_SIGMAS standard deviations of their sum)."""
        return NOISE_SIGMAS * math.sqrt(n_clients * local_variance)

    def effective_noise_multiplier(self, local_variance: int, survivors: int, frac_bits: int, dim: int) -> float:
        """z_eff of the sum of `survivors` draws of N_Z(0, local_variance) (KLS 2021, Prop. 14)."""
        if survivors < 1:
            return 0.0
        j = np.arange(1, survivors)
        tau = 10.0 * float(np.exp(-2.0 * math.pi**2 * local_variance * j / (j + 1)).sum())
        eps = self.clip * 2.0**frac_bits / math.sqrt(survivors * local_variance) + math.sqrt(dim) * tau
        return 1.0 / eps
