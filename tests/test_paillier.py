"""Packed Paillier (phe): exact sums, no slot overflow, dropouts, private key only at the key holder, bad bytes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from phe import paillier

from securefl import wire
from securefl.codec import FixedPoint, flatten_all
from securefl.errors import ConfigError, DropoutError, ProtocolError
from securefl.he import DIGEST_BYTES, KEYHOLDER_ID, SERVER_ID, Signer, check_digest, with_digest
from securefl.he.paillier import (
    KIND_AGGREGATE,
    KIND_KEY,
    KIND_UPLOAD,
    Client,
    Packing,
    Paillier,
    Server,
    to_bytes,
)
from securefl.plaintext import Plaintext
from tests.conftest import state_updates
from tests.reference import assert_close

SESSION = bytes(range(16))
WEIGHTS = [1, 2, 3, 4, 5, 6]


@pytest.fixture(scope="module")
def agg():
    return Paillier(seed=0)  # default 2048-bit key, generated once for the module


@pytest.fixture(scope="module")
def parties(agg):
    """The module's key holder, a server and three clients with 200 values each (3 ciphertexts), set up."""
    ups = [torch.randn(200, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    layout, flats = flatten_all(ups)
    fixed = FixedPoint.choose(3, clip=8.0, frac_bits=16, int_bound=2**16)
    packing = Packing.choose(3, fixed, fixed.length(layout), 2048)
    agg.aggregate(ups)  # makes the module's key holder
    kh = agg._keyholder
    announce = kh.announce(SESSION)
    clients = []
    for i, f in enumerate(flats):
        c = Client(i, f, 1.0, packing, layout, kh.verify_key, SESSION, np.random.default_rng(i))
        c.setup(announce)
        clients.append(c)
    p = {"ups": ups, "packing": packing, "kh": kh, "announce": announce, "layout": layout, "flats": flats}
    p["uploads"] = [c.upload() for c in clients]
    return p


def fresh_server(p):
    server = Server(p["packing"], p["kh"].verify_key, SESSION)
    server.setup(p["announce"])
    return server


@pytest.mark.parametrize("weights", [None, WEIGHTS])
def test_state_dict_matches_reference_and_plaintext_exactly(agg, weights):
    ups = state_updates(6)
    res = agg.aggregate(ups, weights=weights)
    assert_close(res, ups, weights, range(6), clip=8.0)
    same = Plaintext(seed=0).aggregate(ups, weights=weights)  # same seed: same rounding, exact sums
    for k in res.mean:
        assert torch.equal(res.mean[k], same.mean[k]) and torch.equal(res.sum[k], same.sum[k]), k


def test_several_ciphertexts_per_client(agg):
    g = torch.Generator().manual_seed(4)
    ups = [[torch.randn(700, generator=g) * 3, torch.randint(-2**16, 2**16, (5,), generator=g)] for _ in range(4)]
    res = agg.aggregate(ups, weights=[2, 1, 1, 3])
    assert res.report.params["ciphertexts_per_client"] == math.ceil(706 / res.report.params["slots_per_ciphertext"]) > 1
    same = Plaintext(seed=0).aggregate(ups, weights=[2, 1, 1, 3])
    assert torch.equal(res.mean[0], same.mean[0]) and torch.equal(res.sum[1], same.sum[1])
    assert torch.equal(res.sum[1], sum(u[1] for u in ups).long())


def test_clipping_is_counted(agg):
    res = agg.aggregate([torch.tensor([0.5, 20.0, -30.0]), torch.tensor([0.5, 0.0, 0.0])])
    assert res.report.clipped_values == 2
    assert torch.allclose(res.mean, torch.tensor([0.5, 4.0, -4.0]), atol=1e-4)


@pytest.mark.parametrize("stage", ["setup", "upload", "decrypt"])
def test_dropout_at_each_stage(agg, stage):
    ups = state_updates(6)
    res = agg.aggregate(ups, weights=WEIGHTS, dropped={0: stage, 3: stage})
    included = list(range(6)) if stage == "decrypt" else [1, 2, 4, 5]
    assert_close(res, ups, WEIGHTS, included, clip=8.0)
    assert (res.report.bytes_received.get("client/0", 0) > 0) == (stage != "setup")


def test_all_dropped_raises(agg):
    with pytest.raises(DropoutError):
        agg.aggregate(state_updates(2), dropped=[0, 1])


def test_key_sizes():
    with pytest.raises(ConfigError, match="key_bits"):
        Paillier(key_bits=1024)
    assert Paillier().key_bits == 2048


def test_3072_bit_key_works():
    ups = state_updates(3)
    res = Paillier(key_bits=3072, seed=0).aggregate(ups)
    assert_close(res, ups, None, range(3), clip=8.0)
    assert res.report.params["key_bits"] == 3072


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 5000),
    clip=st.sampled_from([0.5, 1.0, 8.0, 100.0]),
    frac_bits=st.integers(0, 24),
    int_bound=st.sampled_from([0, 1, 2**16, 2**31]),
    key_bits=st.sampled_from([1024, 2048, 3072]),
    extreme=st.sampled_from(["max", "min", "random"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_slots_never_overflow_for_accepted_parameters(n, clip, frac_bits, int_bound, key_bits, extreme, seed):
    try:
        fixed = FixedPoint.choose(n, clip=clip, frac_bits=frac_bits, int_bound=int_bound)
        p = Packing.choose(n, fixed, 3 * 17 + 5, key_bits)
    except ConfigError:
        return  # refused parameters make no claim
    assert p.packed_bits <= key_bits - 1 and n * 2 * p.offset < 2**p.slot_bits
    rng = np.random.default_rng(seed)
    top = 2 * p.offset
    if extreme == "random":
        slots = rng.integers(0, top, size=(n, p.length), endpoint=True, dtype=np.uint64)
    else:
        slots = np.full((n, p.length), top if extreme == "max" else 0, np.uint64)
    packed = [sum(col) for col in zip(*(p.pack(row) for row in slots[: min(n, 50)]), strict=True)]
    # the other clients' plaintexts are the same rows again: multiply instead of repacking
    reps = n - min(n, 50)
    packed = [v + reps * u for v, u in zip(packed, p.pack(slots[0]), strict=True)] if reps else packed
    assert all(v < 2 ** (key_bits - 1) for v in packed)  # below any key_bits-bit Paillier modulus
    want = slots[: min(n, 50)].sum(axis=0, dtype=np.uint64) + np.uint64(reps) * slots[0]
    assert np.array_equal(p.unpack(packed), want)


def test_offset_slots_take_any_encoded_value():
    fixed = FixedPoint.choose(4, clip=2.0, frac_bits=10, int_bound=100)
    p = Packing.choose(4, fixed, 5, 2048)
    ring = np.array([-2048, 2048, -100, 100, 1024], np.int64).astype(fixed.signed).view(fixed.dtype)
    slots = p.offset_slots(ring)
    assert slots.min() >= 1 and slots.max() <= 2 * p.offset
    assert np.array_equal(slots.astype(np.int64) - p.offset, [-2048, 2048, -100, 100, 1024])


def test_packing_refuses_slots_wider_than_the_key():
    fixed = FixedPoint.choose(2**20, clip=2.0**21, frac_bits=20, int_bound=1)  # fits the 64-bit ring
    with pytest.raises(ConfigError, match="slot"):
        Packing.choose(2**20, fixed, 10, 2048)


def test_roundtrip_through_parties_is_exact(parties):
    p = parties
    server = fresh_server(p)
    for msg in p["uploads"]:
        server.receive(msg)
    ring = server.finish(p["kh"].decrypt(server.aggregate(), p["packing"], SESSION))
    floats, _, weight = p["packing"].fixed.decode(ring, p["layout"])
    assert weight == 3.0
    assert np.abs(floats - sum(u.numpy().astype(np.float64) for u in p["ups"])).max() <= 3 * 2**-16


def test_only_the_keyholder_holds_the_private_key(parties):
    p = parties
    server = fresh_server(p)
    client = Client(0, p["flats"][0], 1.0, p["packing"], p["layout"], p["kh"].verify_key, SESSION,
                    np.random.default_rng(0))
    client.setup(p["announce"])
    for party in (server, client):
        assert not any(isinstance(v, paillier.PaillierPrivateKey) for v in vars(party).values())
    assert any(isinstance(v, paillier.PaillierPrivateKey) for v in vars(p["kh"]).values())


def test_ciphertexts_are_randomised_and_randomness_is_single_use(parties):
    p = parties
    make = [Client(0, p["flats"][0], 1.0, p["packing"], p["layout"], p["kh"].verify_key, SESSION,
                   np.random.default_rng(0)) for _ in range(2)]
    for c in make:
        c.setup(p["announce"])
    a, b = (c.upload() for c in make)
    assert a != b  # same update, same rounding: only the encryption randomness differs
    with pytest.raises(ProtocolError, match="precomputed"):
        make[0].upload()


def test_replayed_uploads_are_refused(parties):
    server = fresh_server(parties)
    server.receive(parties["uploads"][0])
    with pytest.raises(ProtocolError, match="repeated"):
        server.receive(parties["uploads"][0])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pos=st.floats(0, 1, exclude_max=True), flip=st.integers(1, 255), cut=st.booleans())
def test_any_flipped_or_cut_byte_in_an_upload_is_refused(parties, pos, flip, cut):
    msg = bytearray(parties["uploads"][1])
    i = int(pos * len(msg))
    if cut:
        msg = msg[:i]
    else:
        msg[i] ^= flip
    with pytest.raises(ProtocolError):
        fresh_server(parties).receive(bytes(msg))


def _upload(p, cts: list[int], sender: int = 0, fingerprint: bytes | None = None) -> bytes:
    server = fresh_server(p)
    w = wire.Writer(KIND_UPLOAD, SESSION, 0, sender).raw(fingerprint or server._fingerprint).u32(len(cts))
    return with_digest(w.raw(to_bytes(cts, p["packing"].cipher_bytes)).finish())


def test_invalid_ciphertexts_with_valid_digest_are_refused(parties):
    p = parties
    pk = fresh_server(p)._public
    good = [pk.raw_encrypt(1) for _ in range(p["packing"].plaintexts)]
    for bad in (0, pk.n, 3 * pk.n):  # zero and multiples of N are not units modulo N^2
        with pytest.raises(ProtocolError, match="Z\\*"):
            fresh_server(p).receive(_upload(p, [bad] + good[1:]))
    with pytest.raises(ProtocolError):  # >= N^2 does not fit the fixed width
        fresh_server(p).receive(_upload(p, [pk.nsquare] + good[1:]))
    with pytest.raises(ProtocolError, match="another key"):
        fresh_server(p).receive(_upload(p, good, fingerprint=bytes(32)))
    with pytest.raises(ProtocolError, match="number of ciphertexts"):
        fresh_server(p).receive(_upload(p, good[:-1]))
    with pytest.raises(ProtocolError, match="unexpected"):
        fresh_server(p).receive(_upload(p, good, sender=9))


def test_swapped_or_malformed_public_key_is_refused(parties):
    p = parties
    client = Client(0, p["flats"][0], 1.0, p["packing"], p["layout"], p["kh"].verify_key, SESSION,
                    np.random.default_rng(0))
    bad = bytearray(p["announce"])
    bad[40] ^= 1
    with pytest.raises(ProtocolError, match="signature"):
        client.setup(bytes(bad))
    with pytest.raises(ProtocolError):
        client.setup(p["announce"][:-70] + p["announce"][-64:])
    signer = Signer()  # a key holder publishing an even modulus: refused after the signature checks out
    even = wire.Writer(KIND_KEY, SESSION, 0, KEYHOLDER_ID).u32(2048).raw((2**2047).to_bytes(256, "big")).finish()
    c2 = Client(0, p["flats"][0], 1.0, p["packing"], p["layout"], signer.verify_key, SESSION,
                np.random.default_rng(0))
    with pytest.raises(ProtocolError, match="odd"):
        c2.setup(signer.sign(even))


def test_keyholder_refuses_bad_aggregates(parties):
    p = parties
    kh, packing = p["kh"], p["packing"]
    server = fresh_server(p)
    server.receive(p["uploads"][0])
    agg = server.aggregate()
    bad = bytearray(agg)
    bad[-DIGEST_BYTES - 3] ^= 1
    with pytest.raises(ProtocolError, match="digest"):
        kh.decrypt(bytes(bad), packing, SESSION)
    r = wire.Reader(check_digest(agg, "t"), KIND_AGGREGATE, SESSION, 0)
    fp, _, rows = r.raw(32), r.u32(), r.u32()
    raw = r.raw(rows * packing.cipher_bytes)
    for count in (0, 4):
        msg = wire.Writer(KIND_AGGREGATE, SESSION, 0, SERVER_ID).raw(fp).u32(count).u32(rows).raw(raw).finish()
        with pytest.raises(ProtocolError, match="shape"):
            kh.decrypt(with_digest(msg), packing, SESSION)
    pk = server._public
    beyond = to_bytes([pk.raw_encrypt(2**packing.packed_bits)] * rows, packing.cipher_bytes)
    msg = wire.Writer(KIND_AGGREGATE, SESSION, 0, SERVER_ID).raw(fp).u32(1).u32(rows).raw(beyond).finish()
    with pytest.raises(ProtocolError, match="beyond"):
        kh.decrypt(with_digest(msg), packing, SESSION)


def test_tampered_result_and_out_of_range_sum_are_refused(parties):
    p = parties
    kh, packing = p["kh"], p["packing"]
    server = fresh_server(p)
    server.receive(p["uploads"][0])
    reply = bytearray(kh.decrypt(server.aggregate(), packing, SESSION))
    reply[50] ^= 1
    with pytest.raises(ProtocolError, match="signature"):
        server.finish(bytes(reply))
    # a slot above one client's range (the server sent the key holder a forged sum): the key holder refuses
    pk = server._public
    forged = [pk.raw_encrypt(2 * packing.offset + 1)] * packing.plaintexts
    r = wire.Reader(check_digest(server.aggregate(), "t"), KIND_AGGREGATE, SESSION, 0)
    msg = wire.Writer(KIND_AGGREGATE, SESSION, 0, SERVER_ID).raw(r.raw(32)).u32(1).u32(packing.plaintexts)
    with pytest.raises(ProtocolError, match="out of range"):
        kh.decrypt(with_digest(msg.raw(to_bytes(forged, packing.cipher_bytes)).finish()), packing, SESSION)
