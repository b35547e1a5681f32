"""CKKS's public round parameters and the key holder's rounding of a decrypted sum (the parties: securefl.he.ckks;
the ciphertexts: securefl.he.ckks_io).

Parameters are public: every party derives them from its own RoundConfig (the number of clients n,
the model's layout, the precision asked, frac_bits, and the options poly_modulus_degree and
precompute), at 128-bit security (ckks_io.Scheme.choose):

* ring degree N: the smallest of 4096, 8192, 16384, 32768 whose bound in the homomorphic-encryption
  standard's 128-bit table (SEAL's CoeffModulus.MaxBitCount(N, tc128): 109, 218, 438, 881 bits)
  holds the coefficient modulus; SEAL refuses anything above it;
* no special prime (the protocol never switches keys), so a fresh encryption's noise is not divided by
  one: its standard deviation is about 2.6 N in scaled units (measured; taken as 4 N), and the scale
  2^s, s = frac_bits + log2(32 N), puts 8 standard deviations below 2^-frac_bits per client;
* data primes of ceil(log2(n * V)) + s + 3 bits in all (V: the largest |value| a client sends: clip,
  int_bound, or 1 for the weight; one bit for the sign, one because a coefficient can reach twice a
  slot's magnitude, one spare), as few primes of <= 60 bits as hold them. Example: n = 10, clip = 8,
  frac_bits = 16, floats only: N = 4096, one 43-bit prime (of the 109 allowed), scale 2^33, 4096 values
  per ciphertext, 2 x 4096 coefficients of 43 bits on the wire (10.75 bytes per value).

Clients send [w * clip(floats), ints, F w, ..., F w] (w: normalised weight, see securefl.encoding, on the
2^-frac_bits grid; R copies of F w, see below) zero-padded to whole ciphertexts of N values: CKKS slots are
complex, so each of the N/2 slots carries two reals (value 2j in slot j's real part, 2j+1 in its imaginary
part), half the encryptions and bytes of one real per slot; the noise is the same in a slot's real and
imaginary parts (measured). Integer tensors ride as reals at the same scale; their sums are rounded to the
nearest integer, exact because the noise of a sum of n (sqrt(n) * 2^-frac_bits at 8 standard deviations) stays
below 0.25: rounds with integer tensors and n * 2^-frac_bits > 0.25 are refused.

The key holder does not release raw CKKS decryptions: those carry the decryption noise, which
with the ciphertext lets a passive holder of both recover the secret key (Li and Micciancio,
EUROCRYPT 2021); and it decrypts one sum per round only, so its fresh rounding cannot be averaged
away over repeated requests. It range-checks the decrypted sums, rounds floats stochastically to
the codec's 2^-frac_bits grid with fresh secret randomness (AES-CTR keyed from os.urandom), integers
to the nearest integer and the weight sum to its grid point, and returns the codec's ring vector
(`release`). The weight sum must be exact (a zero sum must stay zero: a round whose survivors all weigh 0
has no mean), but one slot's noise, about 0.06 grid units per client (measured; WEIGHT_NOISE takes 0.25),
grows as sqrt(n) and rounds a sum of 64 clients to a neighbour in 2 rounds of 5. So each client puts F w
in R slots: F, the largest power of two <= the peak the primes already hold (8 at the default clip), and
R = ceil(n (2 Z WEIGHT_NOISE / F)^2) with Z = WEIGHT_SIGMAS, so that the noise of the slots' mean, over
F, is below half a grid unit at Z standard deviations (R = 15 for 100 clients at clip 8; 9 n at clip < 2).
A mean farther than a quarter grid unit from the grid is no honest sum and is refused (a coalition that
makes every upload of a round, placing the sum on that boundary, learns from the refusal one bit of the
averaged noise per round). This masks the noise;
it is a mitigation, not a proof of IND-CPA-D security. Error per coordinate of the normalised weighted
sum over k clients: at most (k + 1) * 2^-frac_bits (CKKS noise plus one rounding).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from securefl._kernels import encode_fixed
from securefl.codec import FixedPoint, Layout
from securefl.crypto.prg import Expander, stream_key
from securefl.errors import ConfigError, ProtocolError
from securefl.he import bitpack
from securefl.he.ckks_io import Scheme, max_coeff_bits

WEIGHT_NOISE = 0.25  # std of one client's noise in a slot, in 2^-frac_bits units (measured 0.06 at N = 4096)
WEIGHT_SIGMAS = 6  # the weight slots' mean rounds to the exact sum unless its noise exceeds this many std


@dataclass(frozen=True)
class Params:
    """Public CKKS parameters of one round."""

    degree: int
    prime_bits: tuple[int, ...]  # the data primes; there is no special prime
    scale_bits: int
    n_clients: int
    floats: int
    ints: int
    fixed: FixedPoint
    precompute: bool = False  # clients make their encryptions of zero in the setup stage (offline)

    @classmethod
    def choose(cls, n_clients: int, layout: Layout, fixed: FixedPoint, degree: int | None = None,
               precompute: bool = False) -> Params:
        """The smallest 128-bit parameters that hold the sum of n_clients updates at the precision asked."""
        if layout.int_size and n_clients * 2.0**-fixed.frac_bits > 0.25:
            raise ConfigError(
                f"CKKS cannot sum integer tensors exactly for {n_clients} clients at frac_bits={fixed.frac_bits}: "
                "raise frac_bits so that n * 2^-frac_bits <= 0.25"
            )
        s = Scheme.choose(n_clients, _peak(layout.float_size, layout.int_size, fixed), fixed.frac_bits, degree)
        return cls(s.degree, s.prime_bits, s.scale_bits, n_clients, layout.float_size, layout.int_size, fixed,
                   bool(precompute))

    @property
    def scheme(self) -> Scheme:
        return Scheme(self.degree, self.prime_bits, self.scale_bits)

    @property
    def slots(self) -> int:
        """Complex slots per ciphertext."""
        return self.degree // 2

    @property
    def per_ciphertext(self) -> int:
        """Real values per ciphertext: two per complex slot."""
        return self.degree

    @property
    def length(self) -> int:
        """Values of the released ring vector: floats, ints and the weight sum."""
        return self.floats + self.ints + 1

    @property
    def weight_scale(self) -> float:
        """F: a client puts F w in each weight slot (the largest power of two the primes already hold)."""
        return 2.0 ** math.floor(math.log2(_peak(self.floats, self.ints, self.fixed)))

    @property
    def weight_slots(self) -> int:
        """R: copies of F w whose mean, over F, rounds to the exact weight sum (see the module docstring)."""
        return max(1, math.ceil(self.n_clients * (2 * WEIGHT_SIGMAS * WEIGHT_NOISE / self.weight_scale) ** 2))

    @property
    def values(self) -> int:
        """Values a client encrypts: floats, ints and the weight slots."""
        return self.floats + self.ints + self.weight_slots

    @property
    def count(self) -> int:
        """Ciphertexts per client."""
        return -(-self.values // self.per_ciphertext)

    @property
    def ciphertext_bytes(self) -> int:
        """Bytes of one packed ciphertext (ckks_io.CoefficientCodec): 2 x N coefficients per prime at its bits."""
        return 2 * sum(8 * bitpack.words(b, self.degree) for b in self.prime_bits)

    @property
    def scale(self) -> float:
        return 2.0**self.scale_bits

    def sum_error_bound(self, k: int) -> float:
        """Bound on |error| per coordinate of the normalised weighted sum over k clients."""
        return (k + 1) * 2.0**-self.fixed.frac_bits

    def describe(self) -> dict:
        return {
            "poly_modulus_degree": self.degree,
            "coeff_mod_bit_sizes": list(self.prime_bits),
            "scale_bits": self.scale_bits,
            "security_bits": 128,
            "max_coeff_bits": max_coeff_bits(self.degree),
            "values_per_ciphertext": self.per_ciphertext,
            "ciphertexts_per_client": self.count,
            "weight_slots": self.weight_slots,
            "precompute": self.precompute,
            "ring_bits": self.fixed.ring_bits,
            "sum_error_bound": self.sum_error_bound(self.n_clients),
        }


def release(values: np.ndarray, params: Params, count: int, who: str) -> np.ndarray:
    """Range-check the decrypted sums of `count` clients (params.values of them) and round them into the
    codec's ring vector.

    Floats are rounded stochastically to 2^-frac_bits with secret randomness; ints to the nearest
    integer; the weight slots' mean over F to its 2^-frac_bits grid point. Out-of-range values or a
    weight sum off its grid (not a sum of valid uploads) raise ProtocolError.
    """
    fixed, nf, ni = params.fixed, params.floats, params.ints
    slack = count * 2.0**-fixed.frac_bits
    floats, ints, weights = values[:nf], values[nf : nf + ni], values[nf + ni : params.values]
    rounded = np.rint(ints)
    weight = float(weights.mean()) / params.weight_scale * fixed.scale  # in grid units
    if (
        (nf and np.abs(floats).max() > count * fixed.clip + slack)
        or weights.min() < -slack or weights.max() > count * params.weight_scale + slack
        or (ni and (np.abs(ints - rounded).max() > 0.25 or np.abs(rounded).max() > count * fixed.int_bound))
    ):
        raise ProtocolError(f"{who}: decrypted values out of range for a sum of {count} clients")
    if abs(weight - round(weight)) > 0.25:
        raise ProtocolError(f"{who}: the weight sum is off its 2^-{fixed.frac_bits} grid: not a sum of honestly "
                            "encoded weights")
    words = Expander(nf, np.uint64).expand(stream_key(os.urandom(32), b"securefl/ckks/release", b""))
    uniform = (words >> np.uint64(11)) * 2.0**-53
    out = np.empty(params.length, fixed.dtype)
    signed = out.view(fixed.signed)
    encode_fixed(floats, uniform[:nf], np.inf, fixed.scale, signed[:nf])
    signed[nf : nf + ni] = rounded
    signed[nf + ni] = round(weight)
    return out


def _peak(floats: int, ints: int, fixed: FixedPoint) -> float:
    """The largest |value| one client sends: clip (floats), int_bound (ints), at least 1 (the weight)."""
    return max(fixed.clip if floats else 0.0, float(fixed.int_bound) if ints else 0.0, 1.0)
