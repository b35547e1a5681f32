"""Numba kernels of the DP layer: the L2 norm for clipping and the fast path of the exact discrete Gaussian sampler.

The sampler (securefl.dp.sampler builds its tables and explains the method) is a rejection sampler with
integer arithmetic only: a candidate magnitude m is proposed from an alias table over blocks of width t
and accepted when a uniform U < p(m), with p(m) = exp(-m^2 / 2S) * c / W_block. The kernel bounds p(m)
in 30-bit fixed point from exact integer tables (P_hi - margin <= 2^30 p(m) <= P_hi) and decides with 30
random bits; when U falls in that band of width about 2^-23 (or the rare tail entry is drawn), it stops
and the caller decides that sample exactly with rational arithmetic on the same bits. Random bits come
from a buffer of CSPRNG words; when it runs dry mid-sample the kernel also stops and reports where the
sample began, so the caller replays it on the same bits followed by fresh ones.

The sampler's kernels compile without Numba's reference counting (`_nrt=False`; they allocate
nothing): every helper takes the word buffer, and with reference counting each call would pay an
atomic increment/decrement pair, tens of times the work of reading a few bits.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# bit reader state: st (int64) = [next word index, bits left in the current word, exhausted flag];
# cur (uint64, one entry) = the current word, its unread bits at the bottom
_NEXT, _LEFT, _EMPTY = 0, 1, 2
_ONE = np.uint64(1)
_LOW32 = np.uint64(0xFFFFFFFF)
FIXED_BITS = 30  # fixed point of the acceptance bounds: 1.0 == 2^30
_FIXED_ONE = 1 << FIXED_BITS
DONE, EMPTY, FALLBACK = 0, 1, 2  # kernel outcomes


@njit(cache=True, nogil=True)
def sum_squares(x):  # pragma: no cover - compiled
    """Sum of squares of x accumulated in float64 (the L2 norm for clipping, float32 inputs included)."""
    s = 0.0
    for i in range(x.size):
        v = float(x[i])
        s += v * v
    return s


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def _bits(words, st, cur, n):  # pragma: no cover - compiled
    """n (1..62) uniform random bits as an integer, least significant bits of the stream first
    (all ones, and the exhausted flag set, once the buffer is used up)."""
    k = np.uint64(n)
    mask = (_ONE << k) - _ONE
    if st[_LEFT] >= n:
        v = cur[0] & mask
        cur[0] >>= k
        st[_LEFT] -= n
        return np.int64(v)
    i = st[_NEXT]
    if i >= words.size:
        st[_EMPTY] = 1
        return np.int64(mask)
    have = st[_LEFT]
    w = words[i]
    v = (cur[0] | (w << np.uint64(have))) & mask
    st[_NEXT] = i + 1
    cur[0] = w >> np.uint64(n - have)
    st[_LEFT] = 64 - (n - have)
    return np.int64(v)


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def _mul_shift(a, b, sh):  # pragma: no cover - compiled
    """floor(a * b / 2^sh) for uint64 a, b and 32 <= sh < 128 (the 128-bit product from 32-bit halves)."""
    a1, a0 = a >> np.uint64(32), a & _LOW32
    b1, b0 = b >> np.uint64(32), b & _LOW32
    lo = a0 * b0
    mid1 = a1 * b0
    mid2 = a0 * b1
    carry = ((lo >> np.uint64(32)) + (mid1 & _LOW32) + (mid2 & _LOW32)) >> np.uint64(32)
    hi = a1 * b1 + (mid1 >> np.uint64(32)) + (mid2 >> np.uint64(32)) + carry
    low = a * b  # the low 64 bits (wrapping)
    if sh >= 64:
        return hi >> np.uint64(sh - 64)
    return (hi << np.uint64(64 - sh)) | (low >> np.uint64(sh))


@njit(cache=True, nogil=True, _nrt=False)
def dg_fill(out, start, words, start_bit, st, cur, thr, alias, block_start, g_hi, exp_hi, params):  # pragma: no cover
    """Fill out[start:] with discrete Gaussian draws (tables from securefl.dp.sampler.Tables).

    params (int64): [log2 t, log2 buckets, threshold bits, reject entry, tail entry, kt, shift, margin]; kt is
    read as uint64. Reads bits from words, the first start_bit bits of words[0] already used. Returns
    (next index, word, bit, outcome): out[start:next] is filled; unless outcome is DONE, sample `next`
    began at bit `bit` of words[word] and must be replayed (EMPTY: with more words; FALLBACK: exactly).
    """
    log_t, n_bits, h_bits, reject, tail = params[0], params[1], params[2], params[3], params[4]
    kt, sh, margin = np.uint64(params[5]), params[6], params[7]
    st[_NEXT], st[_LEFT], st[_EMPTY] = 0, 0, 0
    cur[0] = 0
    if start_bit > 0 and words.size > 0:
        st[_NEXT] = 1
        cur[0] = words[0] >> np.uint64(start_bit)
        st[_LEFT] = 64 - start_bit
    for i in range(start, out.size):
        word = st[_NEXT] - (1 if st[_LEFT] > 0 else 0)
        bit = (64 - st[_LEFT]) if st[_LEFT] > 0 else 0
        while True:
            bucket = _bits(words, st, cur, n_bits)
            u = _bits(words, st, cur, h_bits)
            if st[_EMPTY]:
                return i, word, bit, EMPTY
            entry = bucket if u < thr[bucket] else alias[bucket]
            if entry == reject:
                continue
            if entry == tail:
                return i, word, bit, FALLBACK
            j = _bits(words, st, cur, log_t) if log_t > 0 else 0
            neg = _bits(words, st, cur, 1)
            m = block_start[entry] + j
            if neg == 1 and m == 0:
                continue
            # 2^32 delta = j (2 m_a + j) 2^31 / S, through kt = floor(2^(sh + 31) / S); exact to 2 units
            d = _mul_shift(np.uint64(j * (2 * block_start[entry] + j)), kt, sh)
            e = exp_hi[np.int64(d >> np.uint64(24))]
            e = (e * exp_hi[256 + np.int64((d >> np.uint64(16)) & np.uint64(255))] + _FIXED_ONE - 1) >> FIXED_BITS
            e = (e * exp_hi[512 + np.int64((d >> np.uint64(8)) & np.uint64(255))] + _FIXED_ONE - 1) >> FIXED_BITS
            p_hi = (e * g_hi[entry] + _FIXED_ONE - 1) >> FIXED_BITS
            v = _bits(words, st, cur, FIXED_BITS)
            if st[_EMPTY]:
                return i, word, bit, EMPTY
            if v + 1 <= p_hi - margin:
                out[i] = -m if neg == 1 else m
                break
            if v < p_hi:
                return i, word, bit, FALLBACK
    return out.size, 0, 0, DONE
