"""Shamir over GF(2^61 - 1): field arithmetic, share/reconstruct, hiding, and the share codec."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from securefl.crypto import _kernels, shamir
from securefl.errors import ProtocolError
from tests.conftest import P_MIN

P = shamir.P
elements = st.integers(min_value=0, max_value=P - 1)


@settings(deadline=None)
@given(elements, elements)
def test_mulmod_matches_python_integers(a, b):
    assert int(_kernels.mulmod(np.uint64(a), np.uint64(b))) == a * b % P


def test_mulmod_extremes():
    for a in (0, 1, P - 1, 2**32 - 1, 2**32, 2**60):
        for b in (0, 1, P - 1, 2**32 + 7, 2**61 - 2):
            assert int(_kernels.mulmod(np.uint64(a), np.uint64(b))) == a * b % P


def test_random_elements_in_field():
    e = shamir.random_elements((4, 1000))
    assert e.shape == (4, 1000) and e.dtype == np.uint64 and (e < np.uint64(P)).all()
    assert len(np.unique(e)) == e.size  # 4000 draws from 2^61 values: a repeat means broken randomness


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=3),
    st.integers(1, 6),
    st.integers(0, 4),
    st.data(),
)
def test_any_t_shares_reconstruct(secrets, t, extra, data):
    holders = np.array(sorted(data.draw(st.sets(st.integers(0, 200), min_size=t + extra, max_size=t + extra))))
    shares = shamir.split_secrets(secrets, t, holders)
    assert shares.shape == (holders.size, shamir.ELEMS * len(secrets))
    pick = np.array(sorted(data.draw(st.permutations(range(holders.size)))[:t]))
    got = shamir.reconstruct(holders[pick][None, :], shares[pick][None, :, :])[0]
    assert shamir.elements_to_secrets(got.reshape(-1, shamir.ELEMS)) == secrets


def test_batched_reconstruction_with_different_holder_sets():
    secrets = [os.urandom(32) for _ in range(5)]
    holders = np.arange(9)
    all_shares = [shamir.split_secrets([s], 4, holders) for s in secrets]
    rows = [[0, 1, 2, 3], [5, 6, 7, 8], [0, 1, 2, 3], [1, 3, 5, 7], [8, 2, 4, 0]]
    hs = np.array(rows)
    sh = np.stack([all_shares[g][hs[g]] for g in range(5)])
    got = shamir.reconstruct(hs, sh)
    assert shamir.elements_to_secrets(got) == secrets


def test_fewer_than_t_shares_give_a_wrong_secret():
    s = os.urandom(32)
    sh = shamir.split_secrets([s], 3, np.arange(5))
    got = shamir.reconstruct(np.array([[0, 1]]), sh[[0, 1]][None])
    assert shamir.secrets_to_elements([s]).tolist()[0] != got[0].tolist()


def test_t_minus_one_shares_are_independent_of_the_secret():
    """With t = 2, one share is uniform in F_p whatever the secret: compare two secrets' share distributions."""
    draws = 3000
    zero, ones = bytes(32), b"\xff" * 32
    a = np.array([shamir.split_secrets([zero], 2, np.array([4, 9]))[0, 0] for _ in range(draws)], np.float64) / P
    b = np.array([shamir.split_secrets([ones], 2, np.array([4, 9]))[0, 0] for _ in range(draws)], np.float64) / P
    assert stats.ks_2samp(a, b).pvalue > P_MIN
    assert stats.kstest(a, "uniform").pvalue > P_MIN


def test_reconstruct_refuses_repeated_holders():
    sh = shamir.split_secrets([os.urandom(32)], 2, np.arange(3))
    with pytest.raises(ValueError):
        shamir.reconstruct(np.array([[1, 1]]), sh[[1, 1]][None])


@settings(deadline=None)
@given(st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=4))
def test_secret_element_codec_round_trip(secrets):
    e = shamir.secrets_to_elements(secrets)
    assert (e < np.uint64(1 << 56)).all()
    assert shamir.elements_to_secrets(e) == secrets


@settings(deadline=None)
@given(st.integers(0, shamir.ELEMS - 1), st.integers(1 << 56, P - 1))
def test_elements_out_of_chunk_range_are_refused(pos, value):
    e = shamir.secrets_to_elements([os.urandom(32)])
    e[0, pos] = value if pos < shamir.ELEMS - 1 else max(value, 1 << 32)
    with pytest.raises(ProtocolError):
        shamir.elements_to_secrets(e)


@settings(deadline=None)
@given(st.lists(elements, min_size=0, max_size=20))
def test_share_codec_round_trip(values):
    arr = np.array(values, np.uint64)
    assert shamir.decode_shares(shamir.encode_shares(arr), len(values), "t").tolist() == values


@settings(deadline=None)
@given(st.binary(max_size=200), st.integers(0, 25))
def test_share_codec_refuses_bad_blocks(data, count):
    words = np.frombuffer(data[: len(data) // 8 * 8], "<u8")
    valid = len(data) == 8 * count and bool((words < np.uint64(P)).all())
    if valid:
        assert shamir.decode_shares(data, count, "t").size == count
    else:
        with pytest.raises(ProtocolError):
            shamir.decode_shares(data, count, "t")


def test_share_codec_refuses_element_equal_to_p():
    with pytest.raises(ProtocolError, match="outside the field"):
        shamir.decode_shares(np.array([1, P], "<u8").tobytes(), 2, "t")
