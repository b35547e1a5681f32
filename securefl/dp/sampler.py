"""Exact discrete Gaussian noise N_Z(0, S), fed by the operating system's CSPRNG.

Randomness: every bit comes from an AES-256-CTR keystream (`cryptography`) under a fresh key and
counter block from os.urandom, drawn in bulk; never from `seed` or a numpy generator, since a DP
guarantee rests on this noise.

Method (integer and rational arithmetic only, exact): rejection sampling of the magnitude m >= 0 with a
random sign (the pair (0, -) is rejected). Magnitudes are split into blocks [a t, (a + 1) t) of width
t = 2^k in (sigma / 64, sigma / 32] (t = 1 below sigma = 64), covering 9.43 sigma (beyond it the
density is below 2^-64), plus one tail entry.
An alias table with integer weights W_a >= c exp(-(a t)^2 / 2S) picks a block, log2 t bits pick m in it,
and m is accepted with probability p = exp(-m^2 / 2S) c / W_a <= 1, so the accepted m has probability
proportional to exp(-m^2 / 2S): the discrete Gaussian, exactly. About 99% of candidates are accepted
at the variances the schemes use (72% at S = 1, where the pair (0, -) is a large share).
The tables come from exact rational bounds of exp (alternating series; no float touches them).

Speed: the Numba kernel (securefl.dp._kernels.dg_fill) bounds 2^30 p in fixed point from those tables
(P_hi - margin <= 2^30 p <= P_hi, a few integer multiplications) and compares with 30 random bits. A
candidate whose bits fall in the band (probability about 2^-23), or that picks the tail entry, is
finished here in Python: the whole sample is replayed from its first bit by `_exact_sample`, which
makes the kernel's decisions where the kernel makes them and decides the band with rational bounds
refined bit by bit (as many more random bits as needed), so the output is the kernel-or-replay
sampler's, exactly. A kernel that runs out of buffered bits mid-sample is replayed on the same bits
followed by fresh ones: the output is what an endless stream gives.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from securefl.dp._kernels import DONE, EMPTY, FIXED_BITS, dg_fill
from securefl.errors import ConfigError

MAX_VARIANCE = 2**60  # keeps every kernel intermediate below 2^63
COVERAGE = 89  # blocks cover m^2 <= 89 S: exp(-m^2 / 2S) < 2^-64 beyond
ALIAS_BITS = 32  # each alias bucket holds 2^32 units of weight
EXP_MARGIN = 71  # 2^30 units: the kernel's E overestimates 2^30 exp(-delta) by at most 5.1 (roundings) + 64.3 (the 8
# low bits of 2^32 delta the tables skip, and 2 units of error in delta); 3 more cover the block factor g


_ZEROS = memoryview(bytes(1 << 20))  # plaintext of the keystream, encrypted in 1 MiB pieces


def random_words(count: int) -> np.ndarray:
    """`count` uniform uint64 words (read-only) from the OS CSPRNG: the AES-256-CTR keystream of a fresh
    os.urandom key and counter block."""
    enc = Cipher(algorithms.AES(os.urandom(32)), modes.CTR(os.urandom(16))).encryptor()
    size = 8 * int(count)
    parts = [enc.update(_ZEROS[: min(_ZEROS.nbytes, size - i)]) for i in range(0, size, _ZEROS.nbytes)]
    return np.frombuffer(parts[0] if len(parts) == 1 else b"".join(parts), np.uint64)


def _exp_frac(r: int, den: int, prec: int) -> tuple[int, int]:
    """(lo, hi) integers with lo <= 2^prec exp(-r / den) <= hi, for 0 <= r <= den (alternating Taylor series)."""
    if r == 0:
        return 1 << prec, 1 << prec
    guard = 8
    lo = hi = lo_t = hi_t = 1 << (prec + guard)
    n = 0
    while hi_t > 1:
        n += 1
        lo_t, hi_t = lo_t * r // (den * n), -(-hi_t * r // (den * n))
        if n % 2:
            lo, hi = lo - hi_t, hi - lo_t
        else:
            lo, hi = lo + lo_t, hi + hi_t
    # terms do not increase (r / den <= 1): the remainder is below the last term, itself <= 1 unit
    return (lo - 1) >> guard, -(-(hi + 1) >> guard)


def exp_bounds(num: int, den: int, prec: int) -> tuple[int, int]:
    """(lo, hi) integers with lo <= 2^prec exp(-num / den) <= hi, for num >= 0, den >= 1 (exact arithmetic)."""
    q, r = divmod(num, den)
    w = prec + 16 + q.bit_length()
    lo_r, hi_r = _exp_frac(r, den, w)
    if q == 0:
        return lo_r >> (w - prec), -(-hi_r >> (w - prec))
    lo_1, hi_1 = _exp_frac(1, 1, w)
    shift = w * (q + 1) - prec
    return (lo_1**q * lo_r) >> shift, -(-(hi_1**q * hi_r) >> shift)


@lru_cache(maxsize=1)
def _exp_table() -> np.ndarray:
    """ceil(2^30 exp(-i 2^-s)) for s = 8, 16, 24 and i < 256, upper bounds to within 1.01 units."""
    rows = [[-(-exp_bounds(i, 1 << s, FIXED_BITS + 10)[1] >> 10) for i in range(256)] for s in (8, 16, 24)]
    return np.array(rows, np.int64).reshape(-1)


@dataclass(frozen=True)
class Tables:
    """The sampler's public tables for one variance S (all exact integers)."""

    variance: int
    log_t: int  # block width t = 2^log_t
    c: int  # acceptance p = exp(-m^2 / 2S) c / W_entry
    weights: tuple[int, ...]  # W per entry: the blocks, then the reject entry, then the tail entry
    tail_start: int  # the tail holds magnitudes >= tail_start
    tail_log_width: int  # tail candidates: tail_start + 2^tail_log_width G + j, G ~ Geometric(1/2)
    thr: np.ndarray  # alias thresholds (int64, one per bucket)
    alias: np.ndarray  # alias targets (int64)
    block_start: np.ndarray  # first magnitude of each entry (int64)
    g_hi: np.ndarray  # ceil(2^30 c exp(-(a t)^2 / 2S) / W_a), int64
    params: np.ndarray  # the kernel's scalars (see dg_fill)

    @property
    def reject(self) -> int:
        return len(self.weights) - 2

    @property
    def tail(self) -> int:
        return len(self.weights) - 1

    @property
    def candidate_bits(self) -> int:
        return int(self.params[1] + self.params[2] + self.log_t + 1 + FIXED_BITS)


def _alias(weights: list[int], n_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Vose's alias table in integers: bucket b (uniform) keeps b when u < thr[b] (u uniform below 2^ALIAS_BITS),
    else goes to alias[b]; entry e is picked with probability weights[e] / 2^(n_bits + ALIAS_BITS), exactly."""
    cap, size = 1 << ALIAS_BITS, 1 << n_bits
    w = weights + [0] * (size - len(weights))
    if sum(w) != cap * size:
        raise ConfigError("internal: alias weights do not fill the table")
    thr, alias = [cap] * size, list(range(size))
    small = [i for i in range(size) if w[i] < cap]
    large = [i for i in range(size) if w[i] > cap]
    while small and large:
        s, big = small.pop(), large[-1]
        thr[s], alias[s] = w[s], big
        w[big] -= cap - w[s]
        if w[big] < cap:
            small.append(large.pop())
        elif w[big] == cap:
            large.pop()
    return np.array(thr, np.int64), np.array(alias, np.int64)


@lru_cache(maxsize=16)
def tables(variance: int, coverage: int = COVERAGE, extra_margin: int = 0) -> Tables:
    """The tables for N_Z(0, variance). coverage (blocks up to m^2 <= coverage S) and extra_margin (a wider
    fixed-point band) only move work between the kernel and the exact replay; tests shrink and widen them."""
    s = int(variance)
    if not 1 <= s <= MAX_VARIANCE:
        raise ConfigError(f"discrete Gaussian variance must be an integer in [1, 2^60], got {variance}")
    log_t = max(0, math.isqrt(s).bit_length() - 6)
    t = 1 << log_t
    blocks = max(1, -(-(math.isqrt(coverage * s) + 1) // t))
    tail_start = blocks * t
    if (t - 1) * (2 * tail_start - t - 1) >= 2 * s:  # delta < 1 inside every block
        raise ConfigError(f"internal: block width {t} too wide for variance {s}")
    tail_log_width = (-(-s // tail_start)).bit_length()  # 2^w >= S / tail_start: the tail bound holds
    b_hi = [exp_bounds((a * t) ** 2, 2 * s, 64)[1] for a in range(blocks)]
    tail_hi = exp_bounds(tail_start**2, 2 * s, 64)[1]
    n_bits = (blocks + 1).bit_length()  # blocks + reject + tail entries
    total = 1 << (n_bits + ALIAS_BITS)
    tail_unit = -(-(tail_hi << (tail_log_width + 1)) // t)  # >= 2^64 * 2 * 2^w * B_tail / t
    c = ((total - blocks - 2) << 64) // (sum(b_hi) + tail_unit)
    weights = [-(-(c * b) >> 64) for b in b_hi]
    tail_w = max(1, -(-(c * tail_unit) >> 64))
    weights += [total - sum(weights) - tail_w, tail_w]
    thr, alias = _alias(weights, n_bits)
    g_hi = [-(-(c * b << FIXED_BITS) // (w << 64)) for b, w in zip(b_hi, weights, strict=False)] + [0, 0]
    shift_base = 61 + s.bit_length()  # kt = floor(2^shift_base / S) in (2^61, 2^62]
    kt = (1 << shift_base) // s
    params = [log_t, n_bits, ALIAS_BITS, blocks, blocks + 1, kt, shift_base - 31, EXP_MARGIN + 3 + extra_margin]
    starts = [a * t for a in range(blocks)] + [0, 0]
    return Tables(s, log_t, c, tuple(weights), tail_start, tail_log_width, thr, alias,
                  np.array(starts, np.int64), np.array(g_hi, np.int64), np.array(params, np.int64))


class BitStream:
    """The kernel's bit order in Python: words read from their least significant bit, more words from the
    CSPRNG on demand."""

    def __init__(self, words: np.ndarray, bit: int = 0):
        self.words, self.word, self.bit = words, 0, bit

    def bits(self, n: int) -> int:
        """n random bits as an integer, the first one read the least significant."""
        value, got = 0, 0
        while got < n:
            if self.word >= self.words.size:
                self.words = np.concatenate([self.words, random_words(64)])
            take = min(n - got, 64 - self.bit)
            chunk = (int(self.words[self.word]) >> self.bit) & ((1 << take) - 1)
            value |= chunk << got
            got += take
            self.bit += take
            if self.bit == 64:
                self.word, self.bit = self.word + 1, 0
        return value

    def rest(self) -> tuple[np.ndarray, int]:
        """The unread words and the bits already used of the first."""
        return self.words[self.word:], self.bit


def _kernel_bound(tab: Tables, entry: int, m: int) -> int:
    """The kernel's P_hi for candidate m of a block entry (the same integers, in Python)."""
    a_start = int(tab.block_start[entry])
    kt, sh = int(tab.params[5]), int(tab.params[6])
    d = ((m - a_start) * (m + a_start) * kt) >> sh
    ex = _exp_table()
    one = (1 << FIXED_BITS) - 1
    e = int(ex[d >> 24])
    e = (e * int(ex[256 + ((d >> 16) & 255)]) + one) >> FIXED_BITS
    e = (e * int(ex[512 + ((d >> 8) & 255)]) + one) >> FIXED_BITS
    return (e * int(tab.g_hi[entry]) + one) >> FIXED_BITS


def _below(stream: BitStream, num: int, den: int, mult: int, div: int, first: int) -> bool:
    """U < exp(-num / den) mult / div for a uniform U whose first 30 bits are `first`, decided with exact
    bounds and as many further random bits as it takes."""
    u, prec = first, FIXED_BITS
    while True:
        lo, hi = exp_bounds(num, den, prec + 64)
        p_lo, p_hi = (lo * mult) // (div << 64), -(-(hi * mult) // (div << 64))
        if u + 1 <= p_lo:
            return True
        if u >= p_hi:
            return False
        u, prec = (u << 32) | stream.bits(32), prec + 32


def _exact_sample(tab: Tables, stream: BitStream) -> int:
    """One draw, reading the stream exactly as the kernel does wherever the kernel decides."""
    log_t, n_bits, h_bits, margin = (int(tab.params[i]) for i in (0, 1, 2, 7))
    s2 = 2 * tab.variance
    while True:
        bucket, u = stream.bits(n_bits), stream.bits(h_bits)
        entry = bucket if u < int(tab.thr[bucket]) else int(tab.alias[bucket])
        if entry == tab.reject:
            continue
        if entry == tab.tail:
            g = 0
            while stream.bits(1) == 0:
                g += 1
            m = tab.tail_start + (g << tab.tail_log_width) + stream.bits(tab.tail_log_width)
            neg = stream.bits(1)
            ok = _below(stream, m * m, s2, tab.c << (g + 1 + tab.tail_log_width),
                        tab.weights[entry] << log_t, stream.bits(FIXED_BITS))
        else:
            m = int(tab.block_start[entry]) + (stream.bits(log_t) if log_t else 0)
            neg = stream.bits(1)
            if neg and m == 0:
                continue
            p_hi = _kernel_bound(tab, entry, m)
            v = stream.bits(FIXED_BITS)
            if v + 1 <= p_hi - margin:
                ok = True
            elif v >= p_hi:
                ok = False
            else:
                ok = _below(stream, m * m, s2, tab.c, tab.weights[entry], v)
        if ok:
            return -m if neg else m


def discrete_gaussian(variance: int, size: int) -> np.ndarray:
    """`size` exact, independent draws from N_Z(0, variance) (an integer >= 1) as int64, CSPRNG-fed."""
    return draw(tables(int(variance)), size)


def draw(tab: Tables, size: int) -> np.ndarray:
    """`size` draws with these tables: the kernel, with the exact replay of the samples it leaves."""
    out = np.empty(int(size), np.int64)
    st, cur = np.zeros(3, np.int64), np.zeros(1, np.uint64)
    per_word = 64 * 0.98 / tab.candidate_bits
    done, bit, words = 0, 0, random_words(int((out.size + 16) / per_word) + 1)
    ex = _exp_table()
    while done < out.size:
        done, word, bit, outcome = dg_fill(out, done, words, bit, st, cur, tab.thr, tab.alias, tab.block_start,
                                           tab.g_hi, ex, tab.params)
        if outcome == DONE:
            break
        words = words[word:]
        if outcome == EMPTY:
            words = np.concatenate([words, random_words(int((out.size - done + 16) / per_word) + 1)])
        else:
            stream = BitStream(words, bit)
            out[done] = _exact_sample(tab, stream)
            words, bit = stream.rest()
            done += 1
    return out
