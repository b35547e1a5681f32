"""Codec properties: flatten/unflatten, fixed-point round trip, unbiased rounding, headroom."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from securefl.codec import FixedPoint, Flat, Layout, flatten_all
from securefl.errors import ConfigError, InputError, StructureError

DTYPES = [
    torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int64, torch.int32, torch.uint8, torch.bool,
]


@st.composite
def structures(draw):
    n = draw(st.integers(1, 5))
    tensors = []
    for _ in range(n):
        dtype = draw(st.sampled_from(DTYPES))
        shape = tuple(draw(st.lists(st.integers(0, 4), min_size=0, max_size=3)))
        seed = draw(st.integers(0, 2**31))
        g = torch.Generator().manual_seed(seed)
        if dtype.is_floating_point:
            t = (torch.randn(shape, generator=g) * 3).to(dtype)
        elif dtype == torch.bool:
            t = torch.randint(0, 2, shape, generator=g).bool()
        else:
            t = torch.randint(0, 100, shape, generator=g).to(dtype)
        tensors.append(t)
    kind = draw(st.sampled_from(["mapping", "list", "tuple", "tensor"]))
    if kind == "tensor":
        return tensors[0]
    if kind == "mapping":
        return {f"layer{i}.w": t for i, t in enumerate(tensors)}
    return tensors if kind == "list" else tuple(tensors)


def _as_list(s):
    if isinstance(s, torch.Tensor):
        return [s]
    return list(s.values()) if isinstance(s, dict) else list(s)


@settings(max_examples=150, deadline=None)
@given(structures())
def test_flatten_unflatten_round_trip_exact(struct):
    layout = Layout.of(struct)
    flat = layout.flatten(struct, 0)
    back = layout.unflatten(flat.floats.astype(np.float64), flat.ints)
    assert type(back) is type(struct)
    for a, b in zip(_as_list(struct), _as_list(back), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape and a.device == b.device
        assert torch.equal(a, b)


def test_structure_errors_name_client_and_tensor():
    base = {"a": torch.zeros(2, 3), "b": torch.zeros(4, dtype=torch.int64)}
    cases = [
        ({"a": torch.zeros(2, 3)}, r"client 1: missing tensors \['b'\]"),
        ({**base, "c": torch.zeros(1)}, r"client 1: .*unexpected tensors \['c'\]"),
        ({"a": torch.zeros(3, 2), "b": base["b"]}, r"client 1: tensor 'a' has shape"),
        ({"a": torch.zeros(2, 3).double(), "b": base["b"]}, r"client 1: tensor 'a' has dtype"),
        ([torch.zeros(2, 3), base["b"]], r"client 1: update is a list"),
    ]
    for other, match in cases:
        with pytest.raises(StructureError, match=match):
            flatten_all([base, other])


def test_mapping_order_does_not_matter():
    a = {"x": torch.ones(2), "y": torch.zeros(3)}
    b = {"y": torch.full((3,), 2.0), "x": torch.full((2,), 4.0)}
    layout, flats = flatten_all([a, b])
    assert flats[1].floats.tolist() == [4, 4, 2, 2, 2]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_names_client_and_tensor(bad):
    ups = [{"w": torch.zeros(3), "v": torch.zeros(2)} for _ in range(3)]
    ups[2]["v"][1] = bad
    with pytest.raises(InputError, match=r"client 2: tensor 'v' contains NaN or Inf"):
        flatten_all(ups)


def test_unsupported_inputs():
    with pytest.raises(InputError, match="sequence"):
        flatten_all(torch.zeros(3))
    with pytest.raises(InputError, match="empty"):
        flatten_all([])
    with pytest.raises(InputError, match="client 0: entry 'w'"):
        flatten_all([{"w": [1.0]}])
    with pytest.raises(InputError, match="dtype"):
        flatten_all([torch.zeros(2, dtype=torch.complex64)])


def _fixed(n=1, clip=4.0, frac_bits=16, int_bound=1000):
    return FixedPoint.choose(n, clip=clip, frac_bits=frac_bits, int_bound=int_bound)


def _layout(nf, ni):
    parts = [torch.zeros(nf)] + ([torch.zeros(ni, dtype=torch.int64)] if ni else [])
    return Layout.of(parts)


@settings(max_examples=100, deadline=None)
@given(
    arrays(np.float64, st.integers(0, 50), elements=st.floats(-10, 10)),
    st.floats(0.0, 1.0),
    st.integers(0, 30),
    st.integers(0, 2**31),
)
def test_encode_decode_round_trip_within_one_unit(x, weight, frac_bits, seed):
    fp = _fixed(clip=4.0, frac_bits=frac_bits)
    layout = Layout.of([torch.zeros(x.size, dtype=torch.float64)])
    vec, clipped = fp.encode(Flat(x, np.zeros(0, np.int64)), weight, np.random.default_rng(seed), layout, 0)
    floats, ints, w = fp.decode(vec, layout)
    expect = np.clip(x, -4.0, 4.0) * weight
    assert np.all(np.abs(floats - expect) < 1.0 / fp.scale + 1e-12)
    assert abs(w - weight) < 1.0 / fp.scale
    assert clipped == int(np.sum(np.abs(x) > 4.0))


def test_stochastic_rounding_is_unbiased():
    fp = _fixed(frac_bits=4)
    x = np.full(200_000, 0.3 / 16)  # 0.3 of one unit: rounds up with probability 0.3
    layout = _layout(x.size, 0)
    vec, _ = fp.encode(Flat(x.astype(np.float32), np.zeros(0, np.int64)), 1.0, np.random.default_rng(7), layout, 0)
    floats, _, _ = fp.decode(vec, layout)
    units = floats * 16
    assert set(np.unique(units)) <= {0.0, 1.0}
    # mean 0.3, std of the mean sqrt(0.21/200000) ~ 0.001: 5 sigma
    assert abs(units.mean() - 0.3) < 0.005


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 400),
    st.floats(0.01, 1e4),
    st.integers(0, 40),
    st.integers(0, 2**20),
    st.sampled_from([-1.0, 1.0]),
)
def test_headroom_never_overflows(n, clip, frac_bits, int_bound, sign):
    """For every accepted parameter set, n worst-case clients sum without wrapping."""
    try:
        fp = FixedPoint.choose(n, clip=clip, frac_bits=frac_bits, int_bound=int_bound)
    except ConfigError:
        assert np.log2(n * clip * 2.0**frac_bits) > 62
        return
    layout = _layout(2, 1)
    flat = Flat(np.array([sign * clip, sign * clip * 2]), np.array([int(sign) * int_bound], np.int64))
    acc = np.zeros(4, fp.dtype)
    for i in range(min(n, 50)):
        vec, _ = fp.encode(flat, 1.0, np.random.default_rng(i), layout, 0)
        acc += vec
    if n > 50:  # the rest of the clients: the same vector, multiplied in the ring
        acc += (vec * fp.dtype.type(n - 50)).astype(fp.dtype)
    floats, ints, w = fp.decode(acc, layout)
    assert np.all(np.abs(floats - sign * clip * n) <= n / fp.scale * (1 + 1e-9) + 1e-6 * clip * n)
    assert ints[0] == int(sign) * int_bound * n
    assert abs(w - n) <= n / fp.scale + 1e-9


def test_ring_width_choice():
    assert _fixed(n=100, clip=8.0, frac_bits=16).ring_bits == 32
    assert _fixed(n=10_000, clip=8.0, frac_bits=16).ring_bits == 64
    with pytest.raises(ConfigError, match="frac_bits"):
        _fixed(n=10_000, clip=1e6, frac_bits=40)
    with pytest.raises(ConfigError):
        _fixed(clip=0.0)


def test_integer_beyond_bound_names_tensor():
    fp = _fixed(int_bound=10)
    layout = Layout.of({"f": torch.zeros(2), "count": torch.zeros(3, dtype=torch.int64)})
    flat = layout.flatten({"f": torch.zeros(2), "count": torch.tensor([1, 11, 2])}, 4)
    with pytest.raises(InputError, match=r"client 4: integer tensor 'count' holds 11"):
        fp.encode(flat, 1.0, np.random.default_rng(0), layout, 4)


def test_large_vector_encodes_in_one_pass():
    """2M values: exercises the compiled kernel path end to end (speed is measured in benchmarks)."""
    x = np.linspace(-1, 1, 2_000_000, dtype=np.float32)
    layout = _layout(x.size, 0)
    fp = _fixed(clip=1.0)
    vec, clipped = fp.encode(Flat(x, np.zeros(0, np.int64)), 1.0, np.random.default_rng(0), layout, 0)
    floats, _, _ = fp.decode(vec, layout)
    assert clipped == 0 and np.max(np.abs(floats - x)) < 1 / fp.scale
