"""Signed slot packing for Paillier: many ring values per plaintext, the slot width set by the bound on the sum.

A client's signed values v_j (|v_j| < 2^(b-1)) become the plaintext sum_j v_j 2^(b j) mod N: slot j holds
v_j + H with H = 2^(b-1) (so every slot is in [0, 2^b)), and the constant C = sum_j H 2^(b j) is subtracted
once. Adding k plaintexts mod N gives sum_j S_j 2^(b j) mod N with S_j the slot sums; whenever every
|S_j| < H the key holder recovers all of them from (M + C) mod N, whose slot j is S_j + H with no carry
between slots (needs per * b <= key_bits - 1, so that the packed value stays below N >= 2^(key_bits - 1)).

So the slot width needs only a bound on |sum| (b = bit_length(bound) + 1): no per-client offset of the
full per-client range, and a client's noise (distributed DP) counts with the bound on the sum of all the
noise, not n times a per-client bound. Without noise this is the width of offset packing; with it the
slots are narrower and, unlike a per-client offset that ignores the noise, never overflow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from gmpy2 import mpz

from securefl.errors import ConfigError, ProtocolError
from securefl.he import bitpack

MAX_SLOT_BITS = bitpack.MAX_BITS


def slot_bits(sum_bound: int) -> int:
    """Width b of a slot holding any sum S with |S| <= sum_bound as S + 2^(b-1) in [0, 2^b)."""
    if sum_bound < 0:
        raise ConfigError(f"a bound on |sum| must be >= 0, got {sum_bound}")
    bits = int(sum_bound).bit_length() + 1
    if bits > MAX_SLOT_BITS:
        raise ConfigError(f"a {bits}-bit slot is wider than {MAX_SLOT_BITS} bits")
    return bits


def slots_per_plaintext(key_bits: int, bits: int) -> int:
    """How many b-bit slots fit below 2^(key_bits - 1) <= N."""
    per = (key_bits - 1) // bits
    if per < 1:
        raise ConfigError(f"a {bits}-bit slot does not fit a {key_bits}-bit Paillier plaintext")
    return per


def sum_bound(n_clients: int, clip: float, frac_bits: int, int_bound: int, noise_bound: float = 0.0) -> int:
    """Largest |sum| of n_clients codec ring vectors in any slot: weighted floats clip * 2^frac_bits each
    (stochastic rounding stays within ceil), plus noise_bound for the whole sum (distributed DP, in ring
    units), the weight slot 2^frac_bits each, integers int_bound each."""
    scale = 2**frac_bits
    return max(n_clients * math.ceil(clip * scale) + math.ceil(noise_bound), n_clients * scale, n_clients * int_bound)


@lru_cache(maxsize=64)
def _half_row(bits: int, per: int) -> int:
    """C = sum_j 2^(b-1) 2^(b j): every slot at its midpoint."""
    return sum(1 << (bits - 1 + bits * j) for j in range(per))


def pack(values: np.ndarray, bits: int, per: int, n: int) -> list[mpz]:
    """Signed values (|v| < 2^(bits-1)) as plaintexts in [0, N), `per` slots each, zero-padded."""
    half = 1 << (bits - 1)
    v = np.asarray(values, np.int64)
    if v.size and (v.min() <= -half or v.max() >= half):
        raise ConfigError(f"a value beyond the {bits}-bit slot's range (+-{half - 1}): the sum bound is wrong")
    rows = -(-v.size // per)
    u = np.full(rows * per, half, np.uint64)
    u[: v.size] += v.astype(np.uint64)  # two's complement wrap: half + v for negative v as well
    raw = bitpack.pack(u.reshape(rows, per), bits).astype("<u8").tobytes()
    size, n_, c = len(raw) // max(rows, 1), mpz(n), _half_row(bits, per)
    return [(mpz(int.from_bytes(raw[r * size : (r + 1) * size], "little")) - c) % n_ for r in range(rows)]


def unpack(plaintexts: Sequence[int], bits: int, per: int, length: int, n: int, who: str) -> np.ndarray:
    """The first `length` slot sums (int64) of decrypted sums of packed plaintexts; ProtocolError when a plaintext
    is not such a sum (bits beyond the slots: some |slot sum| reached 2^(bits-1), or not a sum of packs)."""
    if len(plaintexts) != -(-length // per):
        raise ProtocolError(f"{who}: {len(plaintexts)} plaintexts do not hold {length} slots of {per}")
    n_, c, top = mpz(n), _half_row(bits, per), per * bits
    shifted = [(mpz(p) + c) % n_ for p in plaintexts]
    if any(s.bit_length() > top for s in shifted):
        raise ProtocolError(f"{who}: decrypts beyond the packed slots (not a sum of valid uploads)")
    words = bitpack.words(bits, per)
    raw = b"".join(int(s).to_bytes(8 * words, "little") for s in shifted)
    u = bitpack.unpack(np.frombuffer(raw, "<u8").reshape(len(shifted), words), bits, per).reshape(-1)[:length]
    return u.astype(np.int64) - (1 << (bits - 1))
