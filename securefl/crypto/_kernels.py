"""Numba kernels of the MPC modules: Shamir arithmetic over the Mersenne prime p = 2^61 - 1.

Field elements are uint64 < p. A product of two elements needs 122 bits, so mulmod splits both
operands into 32-bit halves and folds the partial products with 2^61 = 1 (mod p); every
intermediate stays below 2^64.
"""

from __future__ import annotations

import numpy as np
from numba import njit

P = np.uint64((1 << 61) - 1)
_LO32 = np.uint64(0xFFFFFFFF)
_LO29 = np.uint64((1 << 29) - 1)


@njit(cache=True, nogil=True, inline="always")
def _reduce(x):  # pragma: no cover - compiled
    """x mod p for any uint64 x (two folds of the top bits)."""
    x = (x & P) + (x >> np.uint64(61))
    x = (x & P) + (x >> np.uint64(61))
    return x - P if x >= P else x


@njit(cache=True, nogil=True, inline="always")
def mulmod(a, b):  # pragma: no cover - compiled
    """a * b mod p for a, b < p, without 128-bit integers."""
    ah, al = a >> np.uint64(32), a & _LO32  # ah < 2^29
    bh, bl = b >> np.uint64(32), b & _LO32
    hi = (ah * bh) << np.uint64(3)  # ah*bh*2^64 = ah*bh*8 (mod p); < 2^61
    mid = ah * bl + al * bh  # < 2^62
    mid_part = (mid >> np.uint64(29)) + ((mid & _LO29) << np.uint64(32))  # mid*2^32 (mod p); < 2^62
    lo = _reduce(al * bl)
    return _reduce(hi + _reduce(mid_part) + lo)


@njit(cache=True, nogil=True, inline="always")
def addmod(a, b):  # pragma: no cover - compiled
    s = a + b
    return s - P if s >= P else s


@njit(cache=True, nogil=True)
def powmod(a, e):  # pragma: no cover - compiled
    """a^e mod p by square-and-multiply."""
    r = np.uint64(1)
    while e > 0:
        if e & 1:
            r = mulmod(r, a)
        a = mulmod(a, a)
        e >>= 1
    return r


@njit(cache=True, nogil=True)
def share_eval(secrets, coeffs, xs, out):  # pragma: no cover - compiled
    """out[h, s] = f_s(xs[h]) with f_s(x) = secrets[s] + coeffs[s, 0] x + ... (Horner)."""
    deg = coeffs.shape[1]
    for h in range(xs.size):
        x = xs[h]
        for s in range(secrets.size):
            acc = np.uint64(0)
            for j in range(deg - 1, -1, -1):
                acc = addmod(mulmod(acc, x), coeffs[s, j])
            out[h, s] = addmod(mulmod(acc, x), secrets[s])


@njit(cache=True, nogil=True)
def lagrange_at_zero(xs, out):  # pragma: no cover - compiled
    """out[g, i] = prod_{j != i} x_j / (x_j - x_i) over row g of xs: interpolation weights at 0.

    Rows must hold distinct non-zero points; returns False if a row does not.
    """
    p = P
    t = xs.shape[1]
    for g in range(xs.shape[0]):
        for i in range(t):
            num = np.uint64(1)
            den = np.uint64(1)
            xi = xs[g, i]
            if xi == 0:
                return False
            for j in range(t):
                if j == i:
                    continue
                xj = xs[g, j]
                if xj == xi:
                    return False
                num = mulmod(num, xj)
                den = mulmod(den, addmod(xj, p - xi))
            out[g, i] = mulmod(num, powmod(den, p - np.uint64(2)))
    return True


@njit(cache=True, nogil=True)
def combine(lam, shares, out):  # pragma: no cover - compiled
    """out[g, s] = sum_i lam[g, i] * shares[g, i, s] mod p (the secrets at x = 0)."""
    for g in range(shares.shape[0]):
        for s in range(shares.shape[2]):
            acc = np.uint64(0)
            for i in range(shares.shape[1]):
                acc = addmod(acc, mulmod(lam[g, i], shares[g, i, s]))
            out[g, s] = acc
