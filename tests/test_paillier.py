"""Packed Paillier (gmpy2, phe keys): exact sums, no slot overflow, DJN randomness, private key only at the key
holder, bad bytes. (The generic contract: tests/test_conformance.py.)"""

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
from securefl.errors import ConfigError, ProtocolError
from securefl.he import base, state
from securefl.he import paillier_math as pm
from securefl.he import paillier_slots as ps
from securefl.he.paillier import KeyHolder, Packing, Paillier
from securefl.session import resolve_min_clients
from securefl.wire import KEYHOLDER, PartyId
from tests.conftest import state_updates
from tests.he_parties import SESSION, Deployment, make_config, sign_upload, upload_body
from tests.reference import assert_close, rounding_tolerances


@pytest.fixture(scope="module")
def agg():
    return Paillier(seed=0)  # default 2048-bit key, generated once for the module


@pytest.fixture(scope="module")
def parties():
    """A key holder and three clients with 200 values each (3 ciphertexts) of one round, uploads made."""
    ups = [torch.randn(200, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    dep = Deployment("paillier", n=3, ups=ups)
    return {"dep": dep, "rnd": dep.open(), "packing": dep.params, "kh": dep.keyholder}


def test_several_ciphertexts_per_client(agg):
    g = torch.Generator().manual_seed(4)
    ups = [[torch.randn(700, generator=g) * 3, torch.randint(-2**16, 2**16, (5,), generator=g)] for _ in range(4)]
    res = agg.aggregate(ups, weights=[2, 1, 1, 3])
    assert res.report.params["ciphertexts_per_client"] == math.ceil(706 / res.report.params["slots_per_ciphertext"]) > 1
    ref = sum(w * u[0].double().clamp(-8, 8) for w, u in zip([2, 1, 1, 3], ups, strict=True)) / 7
    assert (res.mean[0].double() - ref).abs().max().item() <= rounding_tolerances([2, 1, 1, 3], range(4), 8.0, 16)[0]
    assert torch.equal(res.sum[1], sum(u[1] for u in ups).long())


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


MODULUS = (1 << 4095) + 1155  # any odd N >= 2^(key_bits - 1) serves packing, which never decrypts


def extremes(p: Packing, sign: int) -> np.ndarray:
    """One client's ring values at their bounds: floats +-ceil(clip 2^f), ints +-int_bound, weight 2^f or 0."""
    f = p.fixed
    row = np.concatenate([np.full(p.floats, math.ceil(f.clip * f.scale)), np.full(p.ints, f.int_bound),
                          [int(f.scale) if sign > 0 else 0]]).astype(np.int64)
    row[: p.length - 1] *= sign
    return row


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 5000),
    clip=st.sampled_from([0.5, 1.0, 8.0, 100.0]),
    frac_bits=st.integers(0, 24),
    int_bound=st.sampled_from([0, 1, 2**16, 2**31]),
    key_bits=st.sampled_from([2048, 3072, 4096]),
    extreme=st.sampled_from(["max", "min", "random"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_slot_sums_never_overflow_for_accepted_parameters(n, clip, frac_bits, int_bound, key_bits, extreme, seed):
    """n clients' ring values anywhere in their bounds: the plaintext sum mod N unpacks to the exact slot sums,
    which the key holder's range check accepts for n clients."""
    try:
        fixed = FixedPoint.choose(n, clip=clip, frac_bits=frac_bits, int_bound=int_bound)
        p = Packing.choose(n, fixed, 3 * 17, 5, key_bits)
    except ConfigError:
        return  # refused parameters make no claim
    assert p.per_plaintext * p.slot_bits <= key_bits - 1 and p.sum_bound(n) < 2 ** (p.slot_bits - 1)
    top = extremes(p, 1)
    if extreme == "random":
        rows = np.random.default_rng(seed).integers(-top, top, endpoint=True, size=(min(n, 50), p.length))
        rows[:, -1] = np.abs(rows[:, -1])
    else:
        rows = extremes(p, 1 if extreme == "max" else -1)[None, :]
    packs = [ps.pack(r, p.slot_bits, p.per_plaintext, MODULUS) for r in rows]
    reps = n - len(rows) + 1  # the other clients send the first row again: multiply instead of repacking
    total = [(sum(col) + (reps - 1) * first) % MODULUS for col, first in zip(zip(*packs, strict=True), packs[0],
                                                                             strict=True)]
    sums = ps.unpack(total, p.slot_bits, p.per_plaintext, p.length, MODULUS, "keyholder")
    assert np.array_equal(sums, rows.sum(axis=0) + (reps - 1) * rows[0])
    p.check_sums(sums, n, "keyholder")
    beyond = top.copy()
    beyond[0] = 2 ** (p.slot_bits - 1)
    with pytest.raises(ConfigError, match="slot"):  # never wrapped into a neighbour slot
        ps.pack(beyond, p.slot_bits, p.per_plaintext, MODULUS)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 1000), z=st.floats(0.1, 10), clip=st.sampled_from([0.5, 1.0, 8.0]),
       frac_bits=st.integers(8, 20))
def test_slots_hold_the_sum_with_its_distributed_noise(n, z, clip, frac_bits):
    """Attack 7: with DistributedGaussian the slots hold n clients at the clip plus the bound on their summed noise
    (20 sd of the sum, not n times one client's), and one client's value with its own noise."""
    mech = dp.DistributedGaussian(z, min(clip, 1.0))
    m = resolve_min_clients(n)  # the default policy: the fewest clients a released sum holds
    variance = mech.client_variance(frac_bits, m)
    try:
        fixed = FixedPoint.choose(n, clip=clip, frac_bits=frac_bits, int_bound=2**16,
                                  noise_bound=mech.ring_headroom(frac_bits, n, m))
        p = Packing.choose(n, fixed, 10, 0, 3072, variance)
    except ConfigError:
        return
    half = 2 ** (p.slot_bits - 1)
    assert n * math.ceil(clip * fixed.scale) + math.floor(20 * math.sqrt(n * variance)) <= p.sum_bound(n) < half
    assert math.ceil(clip * fixed.scale) + math.floor(20 * math.sqrt(variance)) < half
    # never wider than slots holding n per-client offsets that each cover one client's value with its noise
    offset = max(math.ceil(clip * fixed.scale) + math.ceil(20 * math.sqrt(variance)), int(fixed.scale)) + 1
    assert p.slot_bits <= (n * 2 * offset).bit_length()


def test_packing_refuses_slots_wider_than_the_key():
    fixed = FixedPoint.choose(2**20, clip=2.0**21, frac_bits=20, int_bound=1)  # fits the 64-bit ring
    with pytest.raises(ConfigError, match="slot"):
        Packing.choose(2**20, fixed, 10, 0, 2048)
    for kwargs, match in (({"key_bits": 1024}, "key_bits"), ({"key_bits": 2048, "randomness": "weak"}, "randomness")):
        with pytest.raises(ConfigError, match=match):
            Packing.choose(4, FixedPoint.choose(4, clip=1.0, frac_bits=16, int_bound=0), 10, 0, **kwargs)


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
    assert restored._zeros == client._zeros and len(restored._zeros) == parties["packing"].count
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
    body = upload_body(rnd, pm.to_bytes(cts, p["packing"].ciphertext_bytes), sender, fingerprint,
                       count=len(cts))
    return sign_upload(dep, body, signer=sender if sender < dep.n else 0, round_=rnd.number, index=sender)


def test_invalid_ciphertexts_are_refused(parties):
    """The server checks counts and lengths; the key holder, which parses the integers, refuses non-units and
    values beyond N^2, naming the client."""
    p = parties
    pub, rnd = p["kh"]._public_key, p["dep"].open()
    good = [p["kh"]._private.public_key.raw_encrypt(1) for _ in range(p["packing"].count)]
    for bad in (0, pub.n, 3 * pub.n, pub.nsquare):  # zero and multiples of N are not units modulo N^2
        upload = signed_upload(p, rnd, [bad] + good[1:])
        server = rnd.server()
        server.step({PartyId.client(0): upload, PartyId.client(1): rnd.uploads[1]})
        assert server.included == [0, 1]
        with pytest.raises(ProtocolError, match="keyholder: .*client/0: ciphertext outside"):
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
    n = int(p["kh"]._public_key.n)
    # the pinned key holder publishing an even modulus, or a DJN base that is no unit (with the round's sealing
    # key): refused once signed
    for public, match in (((2**2047).to_bytes(256, "big") + bytes(512), "odd"),
                          (n.to_bytes(256, "big") + (1).to_bytes(512, "big"), "DJN base"),
                          (n.to_bytes(256, "big") + (n * 5).to_bytes(512, "big"), "DJN base")):
        key = public + rnd.sealing_key[1]
        signature = dep.identities[KEYHOLDER].sign(base.key_digest(dep.config.context(SESSION, rnd.number), key))
        forged = base.write_key(rnd.ch.write(dep.kinds.setup, PartyId.client(0)), dep.policy, key, signature)
        with pytest.raises(ProtocolError, match=f"client/0: .*{match}"):
            rnd.client(0, setup=forged)


def test_published_key_is_n_and_an_nth_residue_base(parties):
    """The key holder publishes N and hs = h^N (an encryption of zero); a client keeps its fixed-base table of hs
    while the key lives (a second round with the same key reuses it) and draws fresh exponents every round."""
    kh, dep = parties["kh"], parties["dep"]
    pub = kh._public_key
    assert kh.public == int(pub.n).to_bytes(256, "big") + int(pub.hs).to_bytes(512, "big")
    assert kh._private.raw_decrypt(int(pub.hs)) == 0
    client = dep.client(0)
    first = dep.open()
    client.handle(first.setups[PartyId.client(0)])
    table, zeros = client._randomness, list(client._zeros)
    assert isinstance(table, pm.FixedBaseRandomness) and len(zeros) == parties["packing"].count
    assert all(kh._private.raw_decrypt(int(z)) == 0 for z in zeros[:3])
    client.handle(dep.open().setups[PartyId.client(0)])
    assert client._randomness is table and not set(client._zeros) & set(zeros)


def test_plain_randomness_option():
    ups = [torch.randn(300, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    agg = Paillier(randomness="plain", seed=0)
    res = agg.aggregate(ups)
    assert res.report.params["randomness"] == "plain"
    assert isinstance(agg._fed.parties[PartyId.client(0)]._randomness, pm.PlainRandomness)
    assert (res.sum.double() - sum(u.double() for u in ups)).abs().max().item() <= 3 * 2**-16
    with pytest.raises(ConfigError, match="randomness"):
        Paillier(randomness="short")


def test_keyholder_state_keeps_its_djn_base_and_refuses_a_forged_one(parties):
    dep, kh = parties["dep"], parties["kh"]
    restored = KeyHolder(dep.config, dep.identities[KEYHOLDER], kh.state_dict())
    assert restored.public == kh.public
    blobs = kh._secret_blobs()
    other = pm.djn_base(kh._private) * 2 % int(kh._public_key.nsquare)  # a unit, but no encryption of zero
    forged = state.dump("paillier", KEYHOLDER, dep.config.fingerprint, kh._guard, {"open": None},
                        {**blobs, "hs": other.to_bytes(512, "big")})
    with pytest.raises(ProtocolError, match="keyholder: saved state: hs is not an encryption of zero"):
        KeyHolder(dep.config, dep.identities[KEYHOLDER], forged)


def test_keyholder_refuses_slot_sums_out_of_range(parties):
    """A sum beyond count clients' range (a lying client's values): refused, not decoded into a wrong result."""
    packing, kh = parties["packing"], parties["kh"]
    pub = kh._public_key
    over = 2 * extremes(packing, 1)  # two clients' worth in one upload
    plains = ps.pack(over, packing.slot_bits, packing.per_plaintext, pub.n)
    cts = pm.encrypt(pub, plains, pm.PlainRandomness(pub).zeros(len(plains)))
    with pytest.raises(ProtocolError, match="out of range for 1 clients"):
        kh._decrypt(list(cts), 1, "keyholder")
    assert kh._decrypt(list(cts), 2, "keyholder").size == packing.length
