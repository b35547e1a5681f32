"""CKKS (TenSEAL): accuracy against float64, parameters, dropouts, no secret key outside the key holder, bad bytes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tenseal as ts
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tenseal import sealapi

from securefl import wire
from securefl.codec import FixedPoint, flatten_all
from securefl.errors import ConfigError, DropoutError, InputError, ProtocolError
from securefl.he import DIGEST_BYTES, SERVER_ID, check_digest, with_digest
from securefl.he.ckks import (
    CKKS,
    KIND_AGGREGATE,
    KIND_UPLOAD,
    Client,
    KeyHolder,
    Params,
    SealIO,
    Server,
    max_coeff_bits,
)
from tests.conftest import state_updates
from tests.reference import assert_close

SESSION = bytes(range(16))
WEIGHTS = [1, 2, 3, 4, 5, 6]


def tolerances(result, weights, included, clip):
    """(mean, sum) tolerances from the scheme's documented bound on the normalised weighted sum."""
    w = [1.0] * (max(included) + 1) if weights is None else [float(x) for x in weights]
    err = result.report.params["sum_error_bound"]
    wnorm = sum(w[i] for i in included) / max(w)
    return (1 + clip) * err / (wnorm - err), err * max(w)


@pytest.fixture(scope="module")
def agg():
    return CKKS(seed=0)


@pytest.fixture(scope="module")
def parties():
    """A key holder, a server and three clients of one round on small updates, set up."""
    ups = [torch.randn(50, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    layout, flats = flatten_all(ups)
    fixed = FixedPoint.choose(3, clip=8.0, frac_bits=16, int_bound=2**16)
    params = Params.choose(3, layout, fixed)
    kh = KeyHolder(params)
    announce = kh.announce(SESSION)
    server = Server(params, kh.verify_key, SESSION)
    server.setup(announce)
    clients = [Client(i, f, 1.0, params, layout, kh.verify_key, SESSION) for i, f in enumerate(flats)]
    for c in clients:
        c.setup(announce)
    return {"ups": ups, "params": params, "kh": kh, "server": server, "clients": clients, "announce": announce,
            "layout": layout, "flats": flats, "uploads": [c.upload() for c in clients]}


def upload_blob(upload: bytes) -> bytes:
    """The (only) ciphertext of a one-ciphertext upload."""
    r = wire.Reader(check_digest(upload, "test"), KIND_UPLOAD, SESSION, 0)
    r.raw(32)
    assert r.u32() == 1
    return r.blob(1 << 30)


def encrypt_one(ctx: ts.Context, values: np.ndarray, params: Params) -> bytes:
    """One serialized ciphertext of `values` under ctx's public key."""
    io = SealIO(ctx)
    (blob,) = io.encrypt(sealapi.Encryptor(io.seal, ctx.public_key().data), values, params)
    return blob


def fresh_server(p):
    server = Server(p["params"], p["kh"].verify_key, SESSION)
    server.setup(p["announce"])
    return server


@pytest.mark.parametrize("weights", [None, WEIGHTS])
def test_state_dict_with_batchnorm_matches_reference(agg, weights):
    ups = state_updates(6)
    res = agg.aggregate(ups, weights=weights)
    assert_close(res, ups, weights, range(6), clip=8.0, tols=tolerances(res, weights, range(6), 8.0))
    assert res.mean["bn.num_batches_tracked"].dtype == torch.int64
    assert res.report.scheme == "ckks"


def test_mean_over_100_clients_within_1e5_clip():
    g = torch.Generator().manual_seed(3)
    ups = [torch.randn(300, generator=g) * 2 for _ in range(100)]
    weights = (torch.rand(100, generator=g) * 10 + 0.1).tolist()
    res = CKKS(clip=4.0, seed=1).aggregate(ups, weights=weights)
    w = torch.tensor(weights, dtype=torch.float64)
    ref = sum(wi * u.double().clamp(-4, 4) for wi, u in zip(w, ups, strict=True)) / w.sum()
    err = (res.mean.double() - ref).abs().max().item()
    assert err <= 1e-5 * 4.0
    assert err > 0  # CKKS is approximate: an exact match would mean nothing was encrypted


def test_several_ciphertexts_per_client_and_ints():
    g = torch.Generator().manual_seed(5)
    ups = [[torch.randn(5000, generator=g), torch.randint(-50, 50, (7,), generator=g)] for _ in range(4)]
    res = CKKS(poly_modulus_degree=4096, seed=2).aggregate(ups, weights=[3, 1, 2, 1])
    assert res.report.params["ciphertexts_per_client"] == 2  # 5008 values, 4096 (two per complex slot) each
    ref = sum(w * u[0].double() for w, u in zip([3, 1, 2, 1], ups, strict=True)) / 7
    assert (res.mean[0].double() - ref).abs().max().item() < 1e-4
    assert torch.equal(res.sum[1], sum(u[1] for u in ups).long())


def test_larger_ring_degree_keeps_the_bound():
    ups = state_updates(3)
    res = CKKS(poly_modulus_degree=16384, seed=3).aggregate(ups, weights=[1, 5, 2])
    assert res.report.params["poly_modulus_degree"] == 16384 and res.report.params["scale_bits"] == 31
    assert_close(res, ups, [1, 5, 2], range(3), clip=8.0, tols=tolerances(res, [1, 5, 2], range(3), 8.0))


def test_clipping_is_counted_and_applied():
    res = CKKS(clip=1.0, seed=0).aggregate([torch.tensor([0.5, 20.0, -30.0]), torch.tensor([0.5, 0.0, 0.0])])
    assert res.report.clipped_values == 2
    assert torch.allclose(res.mean, torch.tensor([0.5, 0.5, -0.5]), atol=1e-4)


@pytest.mark.parametrize("stage", ["setup", "upload", "decrypt"])
def test_dropout_at_each_stage(agg, stage):
    ups = state_updates(6)
    res = agg.aggregate(ups, weights=WEIGHTS, dropped={1: stage, 4: stage})
    included = [0, 1, 2, 3, 4, 5] if stage == "decrypt" else [0, 2, 3, 5]
    assert_close(res, ups, WEIGHTS, included, clip=8.0, tols=tolerances(res, WEIGHTS, included, 8.0))
    got = res.report.bytes_received.get("client/1", 0)
    assert (got == 0) if stage == "setup" else (got > 0)
    assert ("client/1" in res.report.bytes_sent) == (stage == "decrypt")


def test_all_dropped_raises(agg):
    with pytest.raises(DropoutError):
        agg.aggregate(state_updates(3), dropped={0: "setup", 1: "upload", 2: "upload"})


def test_bytes_count_context_once_per_client(agg):
    rep = agg.aggregate([torch.randn(10) for _ in range(3)]).report
    announce = rep.bytes_received["client/0"]  # each client gets the public context once, nothing else
    assert announce == rep.bytes_received["client/2"] > 10_000
    uploads = sum(rep.bytes_sent[f"client/{i}"] for i in range(3))
    reply = rep.bytes_sent["keyholder"] - announce  # the key holder sends the context to the server, then the result
    assert rep.bytes_received["server"] == announce + uploads + reply
    assert 0 < reply < 500
    assert rep.bytes_sent["server"] == 3 * announce + rep.bytes_received["keyholder"]


def test_keyholder_is_reused_while_parameters_fit():
    agg = CKKS(seed=0)
    agg.aggregate([torch.randn(10) for _ in range(3)])
    first = agg._keyholder
    agg.aggregate([torch.randn(10) for _ in range(3)])
    assert agg._keyholder is first
    agg.aggregate([torch.randn(10) for _ in range(20)])  # more clients: more bits, new context
    assert agg._keyholder is not first


def test_default_parameters_are_128_bit_and_documented():
    layout, _ = flatten_all([torch.zeros(1000)])
    p = Params.choose(10, layout, FixedPoint.choose(10, clip=8.0, frac_bits=16, int_bound=2**16))
    assert (p.degree, p.coeff_bits, p.scale_bits, p.slots, p.per_ciphertext) == (4096, (39, 20), 29, 2048, 4096)
    for n in (1, 10, 1000, 10**5):
        for frac in (8, 16, 30):
            fixed = FixedPoint.choose(n, clip=8.0, frac_bits=frac, int_bound=2**16)
            p = Params.choose(n, layout, fixed)
            assert sum(p.coeff_bits) <= max_coeff_bits(p.degree)
            assert max(p.coeff_bits) <= 60
            # n summed values at 2 * clip * 2^scale_bits fit the data modulus with the sign bit
            assert np.log2(n * 8.0) + p.scale_bits + 2 <= sum(p.coeff_bits[:-1])


def test_unfit_parameters_raise_config_error():
    with pytest.raises(ConfigError, match="poly_modulus_degree"):
        CKKS(poly_modulus_degree=1000)
    with pytest.raises(ConfigError, match="exactly"):  # integer sums could round wrong
        CKKS(frac_bits=4).aggregate([torch.tensor([1, 2])] * 8)
    layout, _ = flatten_all([torch.zeros(3, dtype=torch.int64)])
    fixed = FixedPoint.choose(4, clip=8.0, frac_bits=30, int_bound=2**50)
    with pytest.raises(ConfigError, match="128-bit"):  # 118 bits of modulus: more than N = 4096 allows
        Params.choose(4, layout, fixed, degree=4096)
    assert Params.choose(4, layout, fixed).degree == 8192


def test_server_and_client_contexts_hold_no_secret_key(parties):
    p = parties
    blob = upload_blob(p["uploads"][0])
    for party in (p["server"], p["clients"][0]):
        assert party._ctx.is_public() and not party._ctx.has_secret_key()
        with pytest.raises(ValueError, match="Secret key"):
            party._ctx.secret_key()  # nothing to build a SEAL Decryptor from
        assert not hasattr(party, "_decryptor")
    # only the key holder decrypts, and it gives the client's values back, two per complex slot
    kh = p["kh"]
    got = kh._io.decrypt(kh._decryptor, [kh._io.load(blob, p["params"], "test")], p["params"])
    assert np.abs(got[:50] - p["ups"][0].numpy()).max() < 1e-4
    assert abs(got[50] - 1.0) < 1e-4 and np.abs(got[51:]).max() < 1e-4  # the weight slot, then zero padding
    published = ts.context_from(_context_blob(p["announce"]))  # what travels: public key only
    assert published.is_public() and not published.has_secret_key() and not published.has_relin_keys()


def _context_blob(announce: bytes) -> bytes:
    r = wire.Reader(announce[:-64], 40, SESSION, 0)
    r.u32()
    for _ in range(r.u8()):
        r.u8()
    r.u8()
    return r.blob(1 << 30)


def test_roundtrip_through_parties(parties):
    p = parties
    server = fresh_server(p)
    for msg in p["uploads"]:
        server.receive(msg)
    reply = p["kh"].decrypt(server.aggregate(), p["params"], SESSION)
    floats, _, weight = p["params"].fixed.decode(server.finish(reply), p["layout"])
    assert abs(weight - 3) <= 3 * 2**-16
    assert np.abs(floats - sum(u.numpy().astype(np.float64) for u in p["ups"])).max() < 4 * 2**-16


def test_upload_before_setup_raises(parties):
    p = parties
    client = Client(0, p["flats"][0], 1.0, p["params"], p["layout"], p["kh"].verify_key, SESSION)
    with pytest.raises(ProtocolError, match="before"):
        client.upload()
    with pytest.raises(InputError, match="weight"):
        Client(0, p["flats"][0], 1.5, p["params"], p["layout"], p["kh"].verify_key, SESSION)


def test_replayed_and_foreign_session_uploads_are_refused(parties):
    p = parties
    server = fresh_server(p)
    server.receive(p["uploads"][0])
    with pytest.raises(ProtocolError, match="repeated"):
        server.receive(p["uploads"][0])
    other = Server(p["params"], p["kh"].verify_key, bytes(16))
    with pytest.raises(ProtocolError):
        other.setup(p["announce"])  # the announcement is bound to its session


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pos=st.floats(0, 1, exclude_max=True), flip=st.integers(1, 255))
def test_any_flipped_byte_in_an_upload_is_refused(parties, pos, flip):
    msg = bytearray(parties["uploads"][1])
    msg[int(pos * len(msg))] ^= flip
    with pytest.raises(ProtocolError):
        fresh_server(parties).receive(bytes(msg))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pos=st.floats(0, 1, exclude_max=True), flip=st.integers(1, 255), cut=st.booleans())
def test_mutated_ciphertext_bytes_never_crash(parties, pos, flip, cut):
    """Bypassing the digest: the header check and SEAL refuse or accept, never crash."""
    p = parties
    blob = bytearray(upload_blob(p["uploads"][2]))
    i = int(pos * len(blob))
    blob = blob[:i] if cut else blob
    if not cut:
        blob[i] ^= flip
    try:
        p["server"]._io.load(bytes(blob), p["params"], "test")
    except ProtocolError:
        pass


def _reupload(p, blob: bytes, sender: int = 0, fingerprint: bytes | None = None, copies: int = 1):
    w = wire.Writer(KIND_UPLOAD, SESSION, 0, sender).raw(fingerprint or p["server"]._fingerprint).u32(copies)
    for _ in range(copies):
        w.blob(blob)
    return with_digest(w.finish())


def test_structural_faults_with_valid_digest_are_refused(parties):
    p = parties
    blob = upload_blob(p["uploads"][0])
    cases = {
        "another context": _reupload(p, blob, fingerprint=bytes(32)),
        "number of ciphertexts": _reupload(p, blob, copies=2),
        "unexpected": _reupload(p, blob, sender=7),
        "truncated": _reupload(p, blob[: len(blob) // 2]),
        "padded": _reupload(p, blob + b"\x28\x01"),  # trailing bytes
        "header": _reupload(p, b"\0" * 16 + blob[16:]),
    }
    for match, msg in cases.items():
        with pytest.raises(ProtocolError, match=match):
            fresh_server(p).receive(msg)
    # a ciphertext under other parameters (N = 8192): refused by the decoder or SEAL
    big = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[40, 20])
    alien = encrypt_one(big, np.zeros(8192), dataclasses.replace(p["params"], degree=8192, coeff_bits=(40, 20)))
    with pytest.raises(ProtocolError):
        fresh_server(p).receive(_reupload(p, alien))


def test_client_under_a_foreign_key_holder_is_refused(parties):
    p = parties
    other = KeyHolder(p["params"])
    client = Client(0, p["flats"][0], 1.0, p["params"], p["layout"], other.verify_key, SESSION)
    client.setup(other.announce(SESSION))
    with pytest.raises(ProtocolError, match="another context"):
        fresh_server(p).receive(client.upload())


def test_swapped_or_tampered_context_is_refused(parties):
    p = parties
    other = KeyHolder(p["params"])
    client = Client(0, p["flats"][0], 1.0, p["params"], p["layout"], p["kh"].verify_key, SESSION)
    with pytest.raises(ProtocolError, match="signature"):
        client.setup(other.announce(SESSION))  # a server swapping in a key of its own
    bad = bytearray(p["announce"])
    bad[len(bad) // 2] ^= 1
    with pytest.raises(ProtocolError, match="signature"):
        client.setup(bytes(bad))
    leaky = KeyHolder(p["params"])
    leaky._public = leaky._ctx.serialize(save_secret_key=True)  # a key holder leaking its secret key
    client = Client(0, p["flats"][0], 1.0, p["params"], p["layout"], leaky.verify_key, SESSION)
    with pytest.raises(ProtocolError, match="no secret key"):
        client.setup(leaky.announce(SESSION))


def test_keyholder_refuses_bad_aggregates(parties):
    p = parties
    server = fresh_server(p)
    server.receive(p["uploads"][0])
    agg = server.aggregate()
    bad = bytearray(agg)
    bad[-DIGEST_BYTES - 5] ^= 1
    with pytest.raises(ProtocolError, match="digest"):
        p["kh"].decrypt(bytes(bad), p["params"], SESSION)
    body = check_digest(agg, "t")
    r = wire.Reader(body, KIND_AGGREGATE, SESSION, 0)
    fp, _, chunks, blob = r.raw(32), r.u32(), r.u32(), r.blob(1 << 30)
    for count in (0, 4):  # no client, more clients than the round has
        msg = wire.Writer(KIND_AGGREGATE, SESSION, 0, SERVER_ID).raw(fp).u32(count).u32(chunks).blob(blob).finish()
        with pytest.raises(ProtocolError, match="not possible"):
            p["kh"].decrypt(with_digest(msg), p["params"], SESSION)
    # a sum out of range for one client: refused, not rounded into a wrong result
    values = np.zeros(p["params"].per_ciphertext)
    values[0] = 9.0 * 2  # beyond clip for count = 1
    huge = encrypt_one(p["kh"]._ctx, values, p["params"])
    msg = wire.Writer(KIND_AGGREGATE, SESSION, 0, SERVER_ID).raw(fp).u32(1).u32(chunks).blob(huge).finish()
    with pytest.raises(ProtocolError, match="out of range"):
        p["kh"].decrypt(with_digest(msg), p["params"], SESSION)


def test_server_refuses_tampered_or_forged_result(parties):
    p = parties
    server = fresh_server(p)
    server.receive(p["uploads"][0])
    reply = bytearray(p["kh"].decrypt(server.aggregate(), p["params"], SESSION))
    reply[40] ^= 1
    with pytest.raises(ProtocolError, match="signature"):
        server.finish(bytes(reply))
