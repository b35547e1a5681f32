"""Bit packing (securefl.he.bitpack): natural order equals the row read as one integer; the fused numba add
inverts the planar pack exactly."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from securefl.errors import ConfigError
from securefl.he import bitpack


def values(bits: int, rows: int, per: int, seed: int) -> np.ndarray:
    u = np.random.default_rng(seed).integers(0, 1 << bits, (rows, per), dtype=np.uint64)
    u[:, :1] = (1 << bits) - 1  # the largest value in every row
    return u


@settings(max_examples=80, deadline=None)
@given(bits=st.integers(1, 62), rows=st.integers(1, 4), per=st.integers(1, 300), seed=st.integers(0, 2**32 - 1))
def test_natural_is_the_row_as_one_integer(bits, rows, per, seed):
    u = values(bits, rows, per, seed)
    w = bitpack.pack(u, bits)
    assert w.shape == (rows, bitpack.words(bits, per))
    for r in range(rows):
        as_int = int.from_bytes(w[r].astype("<u8").tobytes(), "little")
        assert as_int == sum(int(x) << (bits * j) for j, x in enumerate(u[r]))
    assert (bitpack.unpack(w, bits, per) == u).all()


@settings(max_examples=60, deadline=None)
@given(bits=st.integers(1, 62), rows=st.integers(1, 4), groups=st.integers(1, 8), seed=st.integers(0, 2**32 - 1))
def test_planar_round_trips_and_adds(bits, rows, groups, seed):
    per = groups * (64 // np.gcd(64, bits))
    u = values(bits, rows, per, seed)
    w = bitpack.pack_planar(u, bits)
    assert w.shape == (rows, bitpack.words(bits, per))
    acc = np.full((rows, per), 7, np.uint64)
    assert bitpack.add_planar(w, bits, acc, 1 << bits)
    assert (acc == u + 7).all()
    assert not bitpack.add_planar(w, bits, acc, (1 << bits) - 1)  # the largest value is out of bounds
    assert bitpack.add_planar(w, bits, acc, 1 << bits, negate=True) is True
    assert (acc == u + 7).all()  # one add undone by the negated one


def test_planar_layout():
    """32-bit values, two per word: value j * groups + k is position j of group k; group k's word is word k."""
    u = np.array([[1, 2, 3, 4]], np.uint64)
    assert bitpack.pack_planar(u, 32).tolist() == [[1 | 3 << 32, 2 | 4 << 32]]
    assert bitpack.pack(u, 32).tolist() == [[1 | 2 << 32, 3 | 4 << 32]]


def test_refusals():
    with pytest.raises(ConfigError):
        bitpack.pack(np.zeros((1, 4), np.uint64), 63)
    with pytest.raises(ConfigError):
        bitpack.pack(np.zeros((1, 4), np.uint64), 0)
    with pytest.raises(ConfigError, match="multiple"):
        bitpack.pack_planar(np.zeros((1, 65), np.uint64), 43)
