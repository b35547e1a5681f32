"""Numba kernels of the codec: one pass over a vector, no Python loop per parameter."""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def encode_fixed(x, u, clip, scale, out):  # pragma: no cover - compiled
    """Clip x to [-clip, clip], multiply by scale, round stochastically with uniforms u.

    Writes two's-complement integers into out (int32 or int64) and returns the number of
    clipped values. Rounding up happens with probability equal to the fractional part, so the
    result is unbiased.
    """
    clipped = 0
    for i in range(x.size):
        v = np.float64(x[i])
        if v > clip:
            v = clip
            clipped += 1
        elif v < -clip:
            v = -clip
            clipped += 1
        s = v * scale
        f = math.floor(s)
        r = np.int64(f)
        if u[i] < s - f:
            r += 1
        out[i] = r
    return clipped


@njit(cache=True, nogil=True)
def first_out_of_range(x, bound):  # pragma: no cover - compiled
    """Index of the first |x[i]| > bound, or -1."""
    for i in range(x.size):
        if x[i] > bound or x[i] < -bound:
            return i
    return -1
