"""Numba kernels of the DP layer."""

from __future__ import annotations

from numba import njit


@njit(cache=True, nogil=True)
def sum_squares(x):  # pragma: no cover - compiled
    """Sum of squares of x accumulated in float64 (the L2 norm for clipping, float32 inputs included)."""
    s = 0.0
    for i in range(x.size):
        v = float(x[i])
        s += v * v
    return s
