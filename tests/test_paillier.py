"""Packed Paillier (phe): exact sums, no slot overflow, dropouts, private key only at the key holder, bad bytes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from phe import paillier

from securefl import dp, keys
from securefl.codec import FixedPoint
from securefl.errors import ConfigError, DropoutError, ProtocolError
from securefl.he import base
from securefl.he.paillier import Packing, Paillier, to_bytes
from securefl.wire import KEYHOLDER, SERVER, Channel, Kind, PartyId
from tests.conftest import state_updates
from tests.he_parties import SESSION, Deployment, make_config, sign_upload
from tests.reference import assert_close, rounding_tolerances

WEIGHTS = [1, 2, 3, 4, 5, 6]


@pytest.fixture(scope="module")
def agg():
    return Paillier(seed=0)  # default 2048-bit key, generated once for the module


@pytest.fixture(scope="module")
def parties():
    """A key holder and three clients with 200 values each (3 ciphertexts) of one round, uploads made."""
    ups = [torch.randn(200, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    dep = Deployment("paillier", n=3, ups=ups)
    return {"dep": dep, "rnd": dep.open(), "packing": dep.params, "kh": dep.keyholder}


@pytest.mark.parametrize("weights", [None, WEIGHTS])
def test_state_dict_matches_reference(agg, weights):
    ups = state_updates(6)
    res = agg.aggregate(ups, weights=weights)
    assert_close(res, ups, weights, range(6), clip=8.0)  # within the codec's rounding bound; integers exact


def test_several_ciphertexts_per_client(agg):
    g = torch.Generator().manual_seed(4)
    ups = [[torch.randn(700, generator=g) * 3, torch.randint(-2**16, 2**16, (5,), generator=g)] for _ in range(4)]
    res = agg.aggregate(ups, weights=[2, 1, 1, 3])
    assert res.report.params["ciphertexts_per_client"] == math.ceil(706 / res.report.params["slots_per_ciphertext"]) > 1
    ref = sum(w * u[0].double().clamp(-8, 8) for w, u in zip([2, 1, 1, 3], ups, strict=True)) / 7
    assert (res.mean[0].double() - ref).abs().max().item() <= rounding_tolerances([2, 1, 1, 3], range(4), 8.0, 16)[0]
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
    sent = res.report.bytes_sent.get("client/0", 0)  # nothing, its READY only, or its upload as well
    assert {"setup": sent == 0, "upload": 0 < sent < 100, "decrypt": sent > 500}[stage]


def test_all_dropped_raises(agg):
    with pytest.raises(DropoutError):
        agg.aggregate(state_updates(2), dropped=[0, 1])


def test_key_sizes():
    with pytest.raises(ConfigError, match="key_bits"):
        Paillier(key_bits=1024)
    assert Paillier().key_bits == 2048
    ids = keys.create_identities(2, keyholder=True)
    for options, match in [({"key_bits": 1024}, "key_bits"), ({"poly_modulus_degree": 4096}, "unknown")]:
        with pytest.raises(ConfigError, match=match):
            Paillier.party(make_config("paillier", ids, torch.zeros(3), options=options), ids[PartyId.client(0)])


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
    slots = p.offset_slots(ring, "client/0")
    assert slots.min() >= 1 and slots.max() <= 2 * p.offset
    assert np.array_equal(slots.astype(np.int64) - p.offset, [-2048, 2048, -100, 100, 1024])
    beyond = np.array([-p.offset - 1, 0, 0, 0, 0], np.int64).astype(fixed.signed).view(fixed.dtype)
    with pytest.raises(ProtocolError, match="client/0: .*offset"):  # never wrapped into a neighbour slot
        p.offset_slots(beyond, "client/0")


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 1000), z=st.floats(0.1, 10), clip=st.sampled_from([0.5, 1.0, 8.0]),
       frac_bits=st.integers(8, 20), sign=st.sampled_from([-1, 1]))
def test_offset_holds_one_clients_value_with_its_distributed_noise(n, z, clip, frac_bits, sign):
    """Attack 7: with DistributedGaussian a client's value reaches clip * 2^f plus its noise bound (20 sd)."""
    mech = dp.DistributedGaussian(z, min(clip, 1.0))
    m = base.resolve_min_clients(None, n)  # the default policy: the fewest clients a released sum holds
    try:
        fixed = FixedPoint.choose(n, clip=clip, frac_bits=frac_bits, int_bound=2**16,
                                  noise_bound=mech.ring_headroom(frac_bits, n, m))
        p = Packing.choose(n, fixed, 10, 3072, mech.ring_headroom(frac_bits, 1, m))
    except ConfigError:
        return
    variance = mech.client_variance(frac_bits, m)
    extreme = sign * (math.floor(clip * fixed.scale) + 1 + math.floor(20 * math.sqrt(variance)))
    ring = np.full(10, extreme, np.int64).astype(fixed.signed).view(fixed.dtype)
    slots = p.offset_slots(ring, "client/0")
    assert 0 <= slots.min() and slots.max() <= 2 * p.offset and n * 2 * p.offset < 2**p.slot_bits


def test_packing_refuses_slots_wider_than_the_key():
    fixed = FixedPoint.choose(2**20, clip=2.0**21, frac_bits=20, int_bound=1)  # fits the 64-bit ring
    with pytest.raises(ConfigError, match="slot"):
        Packing.choose(2**20, fixed, 10, 2048)


def test_roundtrip_through_parties_is_exact(parties):
    dep = parties["dep"]
    rnd = dep.open()
    server = rnd.server()
    request = server.step({PartyId.client(i): up for i, up in enumerate(rnd.uploads)})
    server.step({KEYHOLDER: dep.keyholder.handle(request[KEYHOLDER])})
    totals = server.result()
    assert totals.weight == 3.0
    assert np.abs(totals.floats - sum(u.numpy().astype(np.float64) for u in dep.ups)).max() <= 3 * 2**-16


def test_only_the_keyholder_holds_the_private_key(parties):
    rnd = parties["rnd"]
    for party in (rnd.server(), rnd.client(0)):
        assert not any(isinstance(v, paillier.PaillierPrivateKey) for v in vars(party).values())
    assert any(isinstance(v, paillier.PaillierPrivateKey) for v in vars(parties["kh"]).values())


def test_ciphertexts_are_randomised_and_randomness_is_single_use(parties):
    rnd = parties["rnd"]
    clients = [rnd.client(0) for _ in range(2)]
    assert clients[0]._zeros != clients[1]._zeros  # each client's own encryptions of zero
    a, b = (rnd.upload(0, c) for c in clients)
    assert a[: -base.UPLOAD_TRAILER] != b[: -base.UPLOAD_TRAILER]
    with pytest.raises(ProtocolError, match="client/0: asked for its upload in a round it has no key for"):
        rnd.upload(0, clients[0])  # a second upload of the round, with the randomness used up


def test_client_restored_mid_round_uses_its_saved_randomness(parties):
    """Between setup and upload a client's state holds its key and its offline encryptions of zero: restored, not
    recomputed; its upload then counts like any other."""
    dep, rnd = parties["dep"], parties["dep"].open()
    client = rnd.client(0)
    restored = dep.client(0, client.state_dict())
    assert restored._zeros == client._zeros and len(restored._zeros) == parties["packing"].plaintexts
    server = rnd.server()
    request = server.step({PartyId.client(0): rnd.upload(0, restored),
                           **{PartyId.client(i): rnd.uploads[i] for i in (1, 2)}})
    server.step({KEYHOLDER: dep.keyholder.handle(request[KEYHOLDER])})
    assert np.abs(server.result().floats - sum(u.double().numpy() for u in dep.ups)).max() <= 3 * 2**-16
    after = dep.client(0, restored.state_dict())  # after the upload: only the replay guard is left
    with pytest.raises(ProtocolError, match="client/0: round .* not after"):
        after.handle(rnd.setups[PartyId.client(0)])


def signed_upload(p, rnd, cts: list[int], sender: int = 0, fingerprint: bytes | None = None) -> bytes:
    """An upload of these ciphertexts for round `rnd` from client `sender`, signed by client 0 (its own key when it
    is one)."""
    dep = p["dep"]
    w = Channel(PartyId.client(sender), SESSION, rnd.number).write(Kind.PAILLIER_UPLOAD, SERVER)
    w.raw(fingerprint or base.digest(p["kh"].public))
    body = w.u32(len(cts)).raw(to_bytes(cts, p["packing"].cipher_bytes)).finish()
    return sign_upload(dep, body, signer=sender if sender < dep.n else 0, round_=rnd.number, index=sender)


def test_invalid_ciphertexts_are_refused(parties):
    """The server checks counts and lengths; the key holder, which parses the integers, refuses non-units and
    values beyond N^2, naming the client."""
    p = parties
    pk, rnd = p["kh"]._public_key, p["dep"].open()
    good = [pk.raw_encrypt(1) for _ in range(p["packing"].plaintexts)]
    for bad in (0, pk.n, 3 * pk.n, pk.nsquare):  # zero and multiples of N are not units modulo N^2
        upload = signed_upload(p, rnd, [bad] + good[1:])
        server = rnd.server()
        server.step({PartyId.client(0): upload, PartyId.client(1): rnd.uploads[1]})
        assert server.included == [0, 1]
        with pytest.raises(ProtocolError, match="keyholder: .*client/0: ciphertext outside Z\\*"):
            p["kh"].handle(rnd.forged_request([upload, rnd.uploads[1]]))
    for match, upload in {"another key": signed_upload(p, rnd, good, fingerprint=bytes(32)),
                          "number of ciphertexts": signed_upload(p, rnd, good[:-1]),
                          "sent by client/9": signed_upload(p, rnd, good, sender=9)}.items():
        server = rnd.server()
        server.step({PartyId.client(0): upload, **{PartyId.client(i): rnd.uploads[i] for i in (1, 2)}})
        assert server.rejected[0].startswith("server: ") and match in server.rejected[0]


def test_swapped_or_malformed_public_key_is_refused(parties):
    p = parties
    dep, rnd = p["dep"], p["rnd"]
    setup = rnd.setups[PartyId.client(0)]
    bad = bytearray(setup)
    bad[80] ^= 1
    with pytest.raises(ProtocolError, match="signature"):
        rnd.client(0, setup=bytes(bad))
    with pytest.raises(ProtocolError, match="client/0"):
        rnd.client(0, setup=setup[:-70] + setup[-64:])
    # the pinned key holder publishing an even modulus: refused once the signature checks out
    even = (2**2047).to_bytes(256, "big")
    signature = dep.identities[KEYHOLDER].sign(base.key_digest(dep.config.context(SESSION, rnd.number), even))
    forged = base.write_key(rnd.ch.write(Kind.PAILLIER_SETUP, PartyId.client(0)), dep.policy, even, signature)
    with pytest.raises(ProtocolError, match="odd"):
        rnd.client(0, setup=forged)


def test_keyholder_refuses_slot_sums_out_of_range(parties):
    """A sum above count clients' range (a lying client's values): refused, not decoded into a wrong result."""
    packing, kh = parties["packing"], parties["kh"]
    over = [kh._public_key.raw_encrypt(packing.pack(np.full(packing.length, 2 * packing.offset + 1))[j])
            for j in range(packing.plaintexts)]
    with pytest.raises(ProtocolError, match="out of range"):
        kh._decrypt(over, 1, "keyholder")
    assert kh._decrypt(over, 2, "keyholder").size == packing.length
