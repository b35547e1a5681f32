"""CKKS (SEAL, packed coefficients): accuracy against float64, parameters, no secret key outside the key holder, bad
bytes. (The generic contract: tests/test_conformance.py.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tenseal import sealapi

from securefl import keys
from securefl.codec import FixedPoint, flatten_all
from securefl.errors import ConfigError, DropoutError, InputError, ProtocolError
from securefl.he import base
from securefl.he import ckks_io as ci
from securefl.he.ckks import CKKS, Client, KeyHolder
from securefl.he.ckks_params import WEIGHT_NOISE, Params, release
from securefl.he.server import Server
from securefl.protocol import rebuild
from securefl.session import ModelSpec, RoundConfig
from securefl.wire import KEYHOLDER, SERVER, Channel, Kind, PartyId, Role
from tests.conftest import state_updates
from tests.he_parties import SESSION, Deployment, make_config, sign_upload, upload_body
from tests.redteam_harness import Fed
from tests.reference import assert_close

ARRAY_HEAD = 9  # wire.Writer.array: a dtype code and a u64 count


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
    """A key holder, three clients of one round on small updates (uploads made), and the round's servers."""
    dep = Deployment("ckks", n=3)
    return {"dep": dep, "rnd": dep.open(), "params": dep.params, "kh": dep.keyholder}


def signed_upload(p, section: bytes, sender: int = 0, fingerprint: bytes | None = None, count=None) -> bytes:
    """An upload of this ciphertext section (sealed) from client `sender`, signed by client 0 (its own key when it is
    one)."""
    dep, number = p["dep"], p["rnd"].number
    body = upload_body(p["rnd"], section, sender, fingerprint, count)
    return sign_upload(dep, body, signer=sender if sender < dep.n else 0, round_=number, index=sender)


def server_rejects(p, reply: bytes, as_client: int = 0) -> str:
    """Why an honest server leaves this reply of `as_client` out of the round."""
    server = p["rnd"].server()
    server.step({PartyId.client(as_client): reply,
                 **{PartyId.client(i): p["rnd"].uploads[i] for i in range(3) if i != as_client}})
    assert as_client not in server.included
    return server.rejected[as_client]


def decrypt_section(kh, section: bytes, count: int = 1) -> np.ndarray:
    """What the key holder's Decrypter makes of one upload's packed ciphertexts."""
    return kh._decrypter.decrypt(kh._codec.from_bytes(section, count, "test"), "test")


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


@pytest.mark.parametrize("n", [3, 64, 1000])
def test_weight_slots_round_to_the_exact_weight_sum_under_noise(n):
    """The weight rides in R slots as F w; their mean over F rounds to the exact weight sum although one slot's
    noise (WEIGHT_NOISE per client, growing as sqrt(n)) reaches half a grid unit from a few dozen clients on:
    a zero sum stays zero (no mean over nothing) and no sum moves."""
    fixed = FixedPoint.choose(n, clip=8.0, frac_bits=16, int_bound=0)
    p = Params.choose(n, flatten_all([torch.zeros(10)])[0], fixed, None, False)  # floats only: F = clip = 8
    unit, rng = 2.0**-16, np.random.default_rng(n)
    sigma = WEIGHT_NOISE * math.sqrt(n) * unit
    assert p.weight_scale == 8 and p.count * p.per_ciphertext >= p.values == p.length - 1 + p.weight_slots
    for weight_sum in (0.0, 3 * unit, n / 2):
        for _ in range(20):
            values = np.zeros(p.values)
            values[p.length - 1 :] = p.weight_scale * weight_sum + rng.normal(0, sigma, p.weight_slots)
            ring = release(values, p, n, "test").view(p.fixed.signed)
            assert ring[p.length - 1] == round(weight_sum / unit)


def test_weight_sum_off_its_grid_is_refused():
    """Weights that do not sum to a grid point are no honest sum (and rounding them would turn the noise's sign
    into the released weight)."""
    fixed = FixedPoint.choose(3, clip=8.0, frac_bits=16, int_bound=2**16)
    p = Params.choose(3, flatten_all(state_updates(1))[0], fixed, None, False)
    values = np.zeros(p.values)
    values[p.length - 1 :] = p.weight_scale * 1.5 * 2.0**-16
    with pytest.raises(ProtocolError, match="off its"):
        release(values, p, 3, "test")


@pytest.mark.parametrize("weight", [0.0, 1.0])
def test_many_clients_get_their_exact_weight_sum(weight):
    """64 honest clients through the real protocol: the weight sum released is exact in every round (one weight
    slot rounded to a neighbour in 8 of 20 such rounds), and all-zero weights give no mean."""
    fed = Fed(CKKS(), n=64, m=6)
    fed.source = lambda pid, values=None: None if pid.role != Role.CLIENT else (lambda i=pid.index: (
        fed.updates[i], weight))
    for _ in range(5):
        totals = fed.run(fed.coordinator())
        assert totals.weight * 2**16 == 64 * round(weight * 2**16)
        if weight == 0:
            with pytest.raises(DropoutError):
                rebuild(totals, fed.config.model.layout(), 1.0)


def test_larger_ring_degree_keeps_the_bound():
    ups = state_updates(3)
    res = CKKS(poly_modulus_degree=16384, seed=3).aggregate(ups, weights=[1, 5, 2])
    assert res.report.params["poly_modulus_degree"] == 16384 and res.report.params["scale_bits"] == 35
    assert_close(res, ups, [1, 5, 2], range(3), clip=8.0, tols=tolerances(res, [1, 5, 2], range(3), 8.0))


def test_bytes_count_context_once_per_client(agg):
    rep = agg.aggregate([torch.randn(10) for _ in range(3)]).report
    header = 34  # wire.PARTY_HEADER_SIZE: READY and REQUEST are a header only
    setup = rep.bytes_received["client/0"] - header  # each client gets the public context once, then REQUEST
    assert setup == rep.bytes_received["client/2"] - header > 10_000
    uploads = sum(rep.bytes_sent[f"client/{i}"] - header for i in range(3))
    reply = rep.bytes_sent["keyholder"] - setup  # the key holder sends its key (as large as SETUP), then the result
    assert rep.bytes_received["server"] == setup + 3 * header + uploads + reply
    assert 0 < reply < 500
    opened = header + base.DIGEST_BYTES
    assert rep.bytes_received["keyholder"] == opened + opened + 4 + sum(
        ARRAY_HEAD + rep.bytes_sent[f"client/{i}"] - header for i in range(3))
    params = CKKS().client_class.policy_of(agg.config(torch.zeros(10), 3)).params
    assert rep.bytes_sent["client/0"] - header == base.upload_bytes(params)  # one raw section, nothing else
    assert rep.bytes_sent["server"] == 3 * (setup + header) + rep.bytes_received["keyholder"]


def test_default_parameters_are_128_bit_and_documented():
    layout, _ = flatten_all([torch.zeros(1000)])
    p = Params.choose(10, layout, FixedPoint.choose(10, clip=8.0, frac_bits=16, int_bound=2**16))
    assert (p.degree, p.prime_bits, p.scale_bits, p.slots, p.per_ciphertext) == (4096, (43,), 33, 2048, 4096)
    assert p.ciphertext_bytes == 2 * 43 * 4096 // 8  # 10.75 bytes per value
    for n in (1, 10, 1000, 10**5):
        for frac in (8, 16, 30):
            fixed = FixedPoint.choose(n, clip=8.0, frac_bits=frac, int_bound=2**16)
            p = Params.choose(n, layout, fixed)
            assert sum(p.prime_bits) <= ci.max_coeff_bits(p.degree)
            assert max(p.prime_bits) <= 60
            # 8 sd of fresh noise (sd <= 4 N) below 2^-frac_bits; n summed values at 2 * clip fit with the sign bit
            assert 8 * 4 * p.degree <= 2.0 ** (p.scale_bits - frac)
            assert np.log2(n * 8.0) + p.scale_bits + 2 <= sum(p.prime_bits)


def test_unfit_parameters_raise_config_error():
    with pytest.raises(ConfigError, match="poly_modulus_degree"):
        CKKS(poly_modulus_degree=1000)
    with pytest.raises(ConfigError, match="exactly"):  # integer sums could round wrong
        CKKS(frac_bits=4).aggregate([torch.tensor([1, 2])] * 8)
    layout, _ = flatten_all([torch.zeros(3, dtype=torch.int64)])
    fixed = FixedPoint.choose(4, clip=8.0, frac_bits=30, int_bound=2**60)
    with pytest.raises(ConfigError, match="128-bit"):  # 112 bits of modulus: more than N = 4096 allows
        Params.choose(4, layout, fixed, degree=4096)
    assert Params.choose(4, layout, fixed).degree == 8192


def test_parties_take_only_a_consistent_configuration():
    """A party checks its own configuration: scheme, options, the key holder in the directory, its identity."""
    from securefl import dp

    ids = keys.create_identities(3, keyholder=True)
    for options, match in [({"poly_modulus_degree": 1000}, "poly_modulus_degree"), ({"key_bits": 2048}, "unknown")]:
        with pytest.raises(ConfigError, match=match):
            CKKS.party(make_config("ckks", ids, torch.zeros(4), options=options), ids[PartyId.client(0)])
    with pytest.raises(ConfigError, match="distributed noise"):
        CKKS.party(make_config("ckks", ids, torch.zeros(4), dp=dp.DistributedGaussian(1.0, 1.0).to_dict()),
                   ids[PartyId.client(0)])
    with pytest.raises(ConfigError, match="scheme 'paillier'"):
        CKKS.party(make_config("paillier", ids, torch.zeros(4)), ids[PartyId.client(0)])
    without = {p: i for p, i in ids.items() if p != KEYHOLDER}
    with pytest.raises(ConfigError, match="pins no key holder"):
        CKKS.coordinator(make_config("ckks", without, torch.zeros(4)), SESSION, 1)
    config = make_config("ckks", ids, torch.zeros(4))
    with pytest.raises(ConfigError, match="another key-holder identity"):
        CKKS.party(config, keys.Identity.generate(KEYHOLDER))
    with pytest.raises(ConfigError, match="client/1: the directory pins another identity"):
        CKKS.party(config, keys.Identity.generate(PartyId.client(1)))
    with pytest.raises(ConfigError, match="parties are clients and the key holder"):
        CKKS.party(config, keys.Identity.generate(PartyId.helper(1)))


def test_only_the_keyholder_holds_a_secret_key(parties):
    p = parties
    client, server = p["rnd"].client(0), p["rnd"].server()
    secret_kinds = (sealapi.SecretKey, sealapi.Decryptor, ci.Decrypter)
    assert not any(isinstance(v, secret_kinds) for v in vars(client).values())
    assert not any(isinstance(v, (*secret_kinds, ci.CoefficientCodec)) for v in vars(server).values())
    # only the key holder decrypts, and it gives the client's values back, two per complex slot
    kh = p["kh"]
    got = decrypt_section(kh, p["rnd"].opened(p["rnd"].uploads[0]))
    assert np.abs(got[:50] - p["dep"].ups[0].numpy()).max() < 1e-4
    params, w = kh.policy.params, slice(50, 50 + kh.policy.params.weight_slots)
    assert np.abs(got[w] - params.weight_scale).max() < 1e-4  # the weight slots (F w, w = 1), then zero padding
    assert np.abs(got[w.stop :]).max() < 1e-4
    r = Channel(PartyId.client(0), SESSION, p["rnd"].number).read(p["rnd"].setups[PartyId.client(0)], Kind.CKKS_SETUP)
    key, _ = base.read_key(r, p["dep"].policy, p["dep"].config.context(SESSION, p["rnd"].number))
    public, seal = base.split_round_key(key, "test")
    assert public == kh.public and seal == p["rnd"].sealing_key[1]  # SEAL's public key, then the sealing key
    ci.load_public_key(kh._codec, public, "test")


def test_roundtrip_through_parties():
    dep = Deployment("ckks", n=3)
    rnd = dep.open()
    server = rnd.server()
    request = server.step({PartyId.client(i): up for i, up in enumerate(rnd.uploads)})
    assert server.step({KEYHOLDER: dep.keyholder.handle(request[KEYHOLDER])}) == {}
    totals = server.result()
    assert abs(totals.weight - 3) <= 3 * 2**-16 and totals.included == [0, 1, 2]
    assert np.abs(totals.floats - sum(u.numpy().astype(np.float64) for u in dep.ups)).max() < 4 * 2**-16


def test_upload_before_setup_and_bad_weights_raise(parties):
    rnd, dep = parties["rnd"], parties["dep"]
    with pytest.raises(ProtocolError, match="client/0: asked for its upload in a round it has no key for"):
        dep.client(0).handle(rnd.request_message(0), dep.update(0))
    with pytest.raises(InputError, match="client 0: weight 1.5"):
        rnd.client(0).handle(rnd.request_message(0), lambda: (dep.ups[0], 1.5))


def test_foreign_session_and_misrouted_replies_are_refused(parties):
    p = parties
    other = CKKS.coordinator(p["dep"].config, bytes(16), p["rnd"].number)
    other.start()
    with pytest.raises(ProtocolError, match="another session"):
        other.step({KEYHOLDER: p["rnd"].key_reply})  # the key is bound to its session
    assert "sent by client/0, expected client/1" in server_rejects(p, p["rnd"].uploads[0], as_client=1)
    with pytest.raises(ProtocolError, match="not all of them asked"):
        p["rnd"].server().step({PartyId.client(7): p["rnd"].uploads[0]})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pos=st.floats(0, 1, exclude_max=True), flip=st.integers(1, 255))
def test_mutated_ciphertext_bytes_never_crash(parties, pos, flip):
    """Below the signature and the seal: the coefficient check refuses a coefficient beyond its prime; anything it
    accepts SEAL loads (validating it) and decrypts, never crashing."""
    section = bytearray(parties["rnd"].opened(parties["rnd"].uploads[2]))
    section[int(pos * len(section))] ^= flip
    try:
        decrypt_section(parties["kh"], bytes(section))
    except ProtocolError as e:
        assert "test" in str(e)


def test_structural_faults_are_refused_by_the_server(parties):
    p = parties
    section = p["rnd"].opened(p["rnd"].uploads[0])
    cases = {
        "another key": signed_upload(p, section, fingerprint=bytes(32)),
        "number of ciphertexts": signed_upload(p, section + section, count=2),
        "sent by client/7": signed_upload(p, section, sender=7),
        "bytes of ciphertexts": signed_upload(p, section[: len(section) // 2]),
        "expected 1 x": signed_upload(p, section + b"\x28\x01"),  # trailing bytes
    }
    for match, msg in cases.items():
        assert match in server_rejects(p, msg) and server_rejects(p, msg).startswith("server: ")


def test_unreduced_or_alien_ciphertexts_are_refused_by_the_keyholder_naming_the_client(parties):
    """The server checks count and length; a signed ciphertext with a coefficient beyond its prime passes it and is
    refused by the key holder, which names its client. Ciphertexts of other parameters have another length."""
    p = parties
    kh = p["kh"]
    coeffs = kh._codec.from_bytes(p["rnd"].opened(p["rnd"].uploads[0]), 1, "test")
    coeffs[0, 1, 0, 17] = kh._codec.primes[0]  # fits the 43 bits, not the prime
    unreduced = signed_upload(p, kh._codec.pack(coeffs).tobytes())
    server = p["rnd"].server()
    server.step({PartyId.client(0): unreduced, PartyId.client(1): p["rnd"].uploads[1]})
    assert server.included == [0, 1]  # the right length: the server forwards it
    with pytest.raises(ProtocolError, match="keyholder: .*client/0: a coefficient is not reduced"):
        kh.handle(p["rnd"].forged_request([unreduced, p["rnd"].uploads[1]]))
    big = ci.CoefficientCodec(ci.Scheme(8192, (43,), 33))
    secret, public = ci.keygen(big, bytes(64))
    alien = ci.Encrypter(big, ci.load_public_key(big, public, "test")).encrypt(np.zeros(8192)).tobytes()
    assert "bytes of ciphertexts" in server_rejects(p, signed_upload(p, alien))
    with pytest.raises(ProtocolError, match="keyholder: .*client/0: .*bytes of ciphertexts"):
        kh.handle(p["rnd"].forged_request([signed_upload(p, alien), p["rnd"].uploads[1]]))


def test_upload_under_another_key_is_refused(parties):
    p = parties
    dep = p["dep"]
    other = KeyHolder(dep.config, dep.identities[KEYHOLDER])  # the same identity, another key pair
    client = p["rnd"].client(0)
    client._take_key(other.public)  # a client that encrypts under another key, and says so
    client._key = base.digest(other.public + p["rnd"].sealing_key[1])
    assert "upload of client/0: encrypted under another key" in server_rejects(p, p["rnd"].upload(0, client))


def test_swapped_or_tampered_key_is_refused(parties):
    p = parties
    dep, rnd = p["dep"], p["rnd"]
    bad = bytearray(rnd.setups[PartyId.client(0)])
    bad[len(bad) // 2] ^= 1
    with pytest.raises(ProtocolError, match="client/0: key holder's key: invalid signature"):
        rnd.client(0, setup=bytes(bad))
    kh = parties["kh"]
    other = ci.CoefficientCodec(ci.Scheme(8192, (43,), 33))
    secret = kh._codec.bridge.save(ci.keygen(kh._codec, kh._seed)[0])
    for public in (secret, ci.keygen(other, bytes(64))[1]):  # its secret key; a key of other parameters
        leaky = KeyHolder(dep.config, dep.identities[KEYHOLDER])  # the pinned key holder, misbehaving
        leaky.public = public
        key = leaky.handle(Channel(SERVER, SESSION, rnd.number).write(Kind.CKKS_OPEN, KEYHOLDER)
                           .raw(dep.config.fingerprint).finish())
        server = CKKS.coordinator(dep.config, SESSION, rnd.number)
        server.start()
        setup = server.step({KEYHOLDER: key})[PartyId.client(0)]
        with pytest.raises(ProtocolError, match="client/0: key"):
            rnd.client(0, setup=setup)


def test_precomputed_encryptions_of_zero_are_made_in_setup_and_used_once():
    ups = [torch.randn(5000, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    dep = Deployment("ckks", n=3, ups=ups, options={"precompute": True})
    rnd = dep.open()
    client = rnd.client(0)
    assert len(client._encrypter._zeros) == dep.params.count == 2
    upload = rnd.upload(0, client)
    assert client._encrypter._zeros == []
    assert np.abs(decrypt_section(dep.keyholder, rnd.opened(upload), 2)[:5000] - ups[0].numpy()).max() < 1e-4
    restored = dep.client(1, rnd.client(1).state_dict())  # restored between setup and upload: encrypts afresh
    assert restored._encrypter._zeros == []
    server = rnd.server()
    request = server.step({PartyId.client(0): upload, PartyId.client(1): rnd.upload(1, restored),
                           PartyId.client(2): rnd.uploads[2]})
    server.step({KEYHOLDER: dep.keyholder.handle(request[KEYHOLDER])})
    assert np.abs(server.result().floats - sum(u.double().numpy() for u in ups)).max() < 4 * 2**-16


def test_keyholder_keys_come_from_its_saved_seed(parties):
    dep, kh = parties["dep"], parties["kh"]
    assert len(kh._secret_blobs()["seed"]) == ci.SEED_BYTES
    assert KeyHolder(dep.config, dep.identities[KEYHOLDER], kh.state_dict()).public == kh.public
    assert KeyHolder(dep.config, dep.identities[KEYHOLDER]).public != kh.public  # a fresh seed, fresh keys


def test_keyholder_refuses_counts_outside_its_policy(parties):
    rnd = parties["rnd"]
    for uploads in ([], rnd.uploads[:1], rnd.uploads * 2):  # min_clients is 2 of 3
        with pytest.raises(ProtocolError, match="keyholder: .*a sum of"):
            parties["kh"].handle(rnd.forged_request(uploads))


def test_a_deployment_round_from_identity_files_and_round_config(tmp_path):
    """Identities, the pinned directory and the RoundConfig as a deployment keeps them (files); every party built
    from its own copy; one round through the protocol's plain loop."""
    ids = keys.create_identities(clients=3, keyholder=True)
    directory = keys.save_federation(ids, tmp_path)
    ups = [torch.randn(20, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    RoundConfig(scheme="ckks", directory=directory, model=ModelSpec.of(ups[0]), min_clients=3).save(
        tmp_path / "round.json")
    config = RoundConfig.load(tmp_path / "round.json")
    load = keys.Identity.load
    parties = {p: CKKS.party(config, load(keys.identity_path(tmp_path, p))) for p in ids}
    server = CKKS.coordinator(config, SESSION, 7)
    assert isinstance(server, Server) and isinstance(parties[KEYHOLDER], KeyHolder)
    assert isinstance(parties[PartyId.client(0)], Client)
    outbox = server.start()
    while outbox:
        outbox = server.step({p: parties[p].handle(m, lambda p=p: (ups[p.index], 1.0)) for p, m in outbox.items()})
    totals = server.result()
    assert totals.params["min_clients"] == 3 and abs(totals.weight - 3) < 1e-4
    assert np.abs(totals.floats - sum(u.double().numpy() for u in ups)).max() < 1e-4


class _OffGridClient(Client):
    """A lying client (its own key, its own signature): its weight slots carry w = 1.5 grid units, which no honest
    client's weight on the 2^-frac_bits grid can sum to."""

    def _ciphertexts(self, update, weight):
        p = self.policy.params
        buf = np.zeros(p.count * p.per_ciphertext)
        buf[p.floats + p.ints : p.values] = 1.5 * 2.0**-p.fixed.frac_bits * p.weight_scale
        return self._encrypter.encrypt(buf), 0


def test_key_holder_refuses_a_lying_clients_off_grid_weight():
    """Honest key holder, server and two honest clients: the sum is refused, so no release turns the decryption
    noise's sign into the weight."""
    fed = Fed(CKKS(min_clients=3), n=3, m=6)
    fed.parties[PartyId.client(2)] = _OffGridClient(fed.config, fed.ids[PartyId.client(2)])
    with pytest.raises(ProtocolError, match="off its"):
        fed.run(fed.coordinator())
