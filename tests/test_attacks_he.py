"""Attacks on CKKS and Paillier (issue 10, attacks 4 and 7, item 10, and the red team's colluding client): every
role played maliciously, through the public parties and messages hand-built with wire.Channel.

A malicious server tries to use the key holder as a decryption oracle (one client's ciphertext as
"the aggregate", repeated, relabelled, replayed across rounds) and to average its noise away; it
equivocates keys and replays old messages; with one colluding client it tries to cancel another
client out of the sum with that client's own (sealed) upload; a malicious key holder sends wrong
replies; lying clients sign what they did not send, seal wrongly or upload as someone else. Each must be refused with a
ProtocolError naming the refusing party and, where it can be told, the offender (an upload the server
refuses is left out of the round and named in its `rejected`). Attack 7: Paillier with distributed
DP must finish its rounds. Every decoder refuses any flipped or cut byte; saved states restore.
"""

from __future__ import annotations

import math

import gmpy2
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import securefl
from securefl import dp, keys, schemes
from securefl.errors import ConfigError, DropoutError, ProtocolError
from securefl.he import base, paillier, sealing, state
from securefl.he import ckks_io as ci
from securefl.he import paillier_math as pm
from securefl.session import resolve_min_clients
from securefl.wire import KEYHOLDER, SERVER, Channel, PartyId
from tests.he_parties import (
    SESSION,
    Deployment,
    make_config,
    rewrite_header,
    sealed_body,
    section_of,
    sign_upload,
    upload_body,
)

N = 4  # default policy: the key holder decrypts sums of at least max(2, N / 2) = 2 clients
TARGET = 1
SCHEMES = ["ckks", "paillier"]
FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module", params=SCHEMES)
def dep(request) -> Deployment:
    return Deployment(request.param, n=N)


def released(d: Deployment, request: bytes, round_: int) -> np.ndarray | None:
    """The float sums the key holder releases for `request`, or None when it refuses (naming itself)."""
    try:
        reply = d.keyholder.handle(request)
    except ProtocolError as e:
        assert str(e).startswith("keyholder"), e
        return None
    return d.decode(reply, round_)


def isolates(got: np.ndarray, target: np.ndarray) -> bool:
    """Whether a release equals the target's update up to a public constant (Paillier: offsets of a claimed count)."""
    diff = got - target
    return bool(np.abs(diff - np.median(diff)).max() < 1e-3)


def relabel(d: Deployment, upload: bytes, index: int, round_: int) -> bytes:
    """An upload with another client as its sender (the header is not what a client signs)."""
    return rewrite_header(upload, d.kinds.upload, PartyId.client(index), SERVER, round_)


def open_message(d: Deployment, round_: int, fingerprint: bytes | None = None) -> bytes:
    """A server's OPEN of `round_` (under the deployment's configuration unless another fingerprint is given)."""
    w = Channel(SERVER, SESSION, round_).write(d.kinds.open, KEYHOLDER)
    return w.raw(fingerprint or d.config.fingerprint).finish()


def exact_sum(d: Deployment) -> np.ndarray:
    return sum(u.double().numpy() for u in d.ups)


def test_keyholder_is_not_a_decryption_oracle(dep):
    """Attack 4: a malicious server alone sends the target's own ciphertext as the aggregate (alone, repeated n
    times, relabelled as the other clients), repeatedly and again in later rounds."""
    rnd = dep.open()
    up = rnd.uploads[TARGET]
    others = [j for j in range(N) if j != TARGET]
    queries = {
        "count 1": rnd.forged_request([up]),
        "repeated n times": rnd.forged_request([up] * N),
        "relabelled as the others": rnd.forged_request([up] + [relabel(dep, up, j, rnd.number) for j in others]),
    }
    target = dep.ups[TARGET].double().numpy()
    leaks = []

    def attack(number):
        for name, query in queries.items():
            for _ in range(2):
                got = released(dep, query, number)
                if got is not None and isolates(got, target):
                    leaks.append(name)

    attack(rnd.number)
    later = dep.open()
    queries["old upload in a new round"] = later.forged_request([up, later.uploads[0]])
    attack(later.number)  # the old queries replayed, and the old upload beside a new one
    assert not leaks, f"{dep.scheme}: the server recovered client {TARGET}'s update via {leaks}"
    honest = released(dep, later.request(), later.number)  # nothing was decrypted: the round still serves it
    assert honest is not None and np.abs(honest - exact_sum(dep)).max() < N * 2.0**-14
    assert released(dep, later.request(), later.number) is None  # and then it is spent


@pytest.mark.parametrize("scheme", SCHEMES)
def test_one_decryption_per_round_so_noise_cannot_be_averaged(scheme):
    """Attack 4b: repeating one request to average away the key holder's DP noise (and CKKS re-rounding)."""
    ups = [torch.randn(50, generator=torch.Generator().manual_seed(i)) * 0.01 for i in range(3)]  # L2 < clip
    d = Deployment(scheme, n=3, ups=ups, dp=dp.GaussianMechanism(noise_multiplier=1.0, clip=1.0).to_dict())
    rnd = d.open()
    server = rnd.server()
    request = server.step({PartyId.client(i): up for i, up in enumerate(rnd.uploads)})[KEYHOLDER]
    replies = []
    for _ in range(16):
        try:
            replies.append(d.keyholder.handle(request))
        except ProtocolError as e:
            assert "no round open" in str(e)
    assert len(replies) == 1, f"{scheme}: {len(replies)} decryptions of one request"
    noise = d.decode(replies[0], rnd.number) - exact_sum(d)
    assert 0.6 < noise.std() < 1.5 and np.abs(noise).max() < 6.0  # the one release carries noise of sd 1
    server.step({KEYHOLDER: replies[0]})
    totals = server.result()  # the server charges the released round to its accountant, once
    assert server.result() is totals
    assert totals.epsilon == pytest.approx(dp.epsilon(noise_multiplier=1.0, delta=1e-5), rel=1e-6)
    assert totals.params["dp"]["noisy_survivors"] == 3 and totals.params["dp"]["local_variance"] == 0


def test_rounds_cannot_be_reopened(dep):
    rnd = dep.open()
    assert released(dep, rnd.request(), rnd.number) is not None
    for number in (rnd.number, rnd.number - 1, 0):
        with pytest.raises(ProtocolError, match="keyholder: round .*replayed"):
            dep.keyholder.handle(open_message(dep, number))
    with pytest.raises(ProtocolError, match="no round open"):
        dep.keyholder.handle(rnd.request())


@pytest.mark.parametrize("scheme", SCHEMES)
def test_restored_keyholder_refuses_a_replayed_round_and_decrypts_the_next(scheme, tmp_path):
    """The key holder's state (secret key, replay guard) survives a restart: saved to a file, restored."""
    d = Deployment(scheme, n=3)
    rnd = d.open()
    assert released(d, rnd.request(), rnd.number) is not None
    public = d.keyholder.public
    (tmp_path / "keyholder.state").write_bytes(d.keyholder.state_dict())
    d.keyholder = d.recipe.party(d.config, d.identities[KEYHOLDER], (tmp_path / "keyholder.state").read_bytes())
    assert d.keyholder.public == public  # the same key pair
    with pytest.raises(ProtocolError, match="keyholder: round .*replayed"):
        d.keyholder.handle(rnd.open_message)
    later = d.open()
    got = released(d, later.request(), later.number)
    assert got is not None and np.abs(got - exact_sum(d)).max() < 3 * 2.0**-14


@pytest.mark.parametrize("scheme", SCHEMES)
def test_keyholder_restored_mid_round_decrypts_it_once(scheme):
    """Saved between OPEN and AGGREGATE: the open round survives, and is still spent by its one decryption."""
    d = Deployment(scheme, n=3)
    rnd = d.open()
    d.keyholder = d.recipe.party(d.config, d.identities[KEYHOLDER], d.keyholder.state_dict())
    request = rnd.request()
    assert released(d, request, rnd.number) is not None
    restored = d.recipe.party(d.config, d.identities[KEYHOLDER], d.keyholder.state_dict())
    with pytest.raises(ProtocolError, match="no round open"):
        restored.handle(request)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_client_restored_between_setup_and_upload(scheme):
    """A client's state between SETUP and REQUEST holds the round key (and Paillier's offline randomness): a
    client restarted there uploads once, and its upload counts like any other. Rolled back to that state after
    uploading, it uploads again (another encryption, sealed): the server can read neither, and the key holder
    sums one upload per client."""
    d = Deployment(scheme, n=3)
    rnd = d.open()
    before = rnd.client(0).state_dict()
    restored = d.client(0, before)
    first, again = rnd.upload(0, restored), rnd.upload(0, d.client(0, before))
    assert rnd.opened(first) != rnd.opened(again)
    with pytest.raises(ProtocolError, match="keyholder: .*repeated client"):
        d.keyholder.handle(rnd.forged_request([first, again, rnd.uploads[1]]))
    server = rnd.server()
    request = server.step({PartyId.client(0): first, **{PartyId.client(i): rnd.uploads[i] for i in (1, 2)}})[KEYHOLDER]
    assert server.rejected == {}
    server.step({KEYHOLDER: d.keyholder.handle(request)})
    assert np.abs(server.result().floats - exact_sum(d)).max() < 3 * 2.0**-14
    with pytest.raises(ProtocolError, match="client/0: asked for its upload in a round it has no key for"):
        d.client(0, restored.state_dict()).handle(rnd.request_message(0), d.update(0))


def test_a_silent_keyholder_ends_the_round_at_either_of_its_stages(dep):
    server = dep.recipe.coordinator(dep.config, SESSION, 10**6)
    assert set(server.start()) == {KEYHOLDER} and server.stage == "setup"
    with pytest.raises(DropoutError, match="key holder did not answer its open request"):
        server.step({})
    with pytest.raises(ProtocolError, match="not asked"):
        server.step({KEYHOLDER: b"", PartyId.client(0): b""})


def test_fewer_than_min_clients_are_refused_by_policy():
    d = Deployment("ckks", n=5, min_clients=4)
    rnd = d.open()
    with pytest.raises(DropoutError, match="at least 4"):
        rnd.server([0, 1, 2])  # an honest server does not even ask for uploads
    server = rnd.server()
    with pytest.raises(DropoutError, match="at least 4"):
        server.step({PartyId.client(i): rnd.uploads[i] for i in (0, 1, 2)})
    with pytest.raises(ProtocolError, match="keyholder: .* a sum of 3 clients"):
        d.keyholder.handle(rnd.forged_request(rnd.uploads[:3]))
    assert released(d, rnd.request([0, 1, 2, 4]), rnd.number) is not None


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 10**6), policy=st.one_of(st.none(), st.floats(0.001, 1.0), st.integers(1, 10**6)))
def test_min_clients_policy(n, policy):
    try:
        m = resolve_min_clients(n, policy)
    except ConfigError:  # never a batch of one, never more than the round's clients
        want = policy if isinstance(policy, int) else max(2, math.ceil((policy or 0.5) * n))
        assert want < 2 or want > n
        return
    assert 2 <= m <= n
    if not isinstance(policy, int):
        assert m == max(2, math.ceil((policy or 0.5) * n))
    else:
        assert m == policy


@pytest.mark.parametrize("name", ["ckks", "paillier"])
def test_key_holder_never_decrypts_a_batch_of_one(name):
    """A sum of one client is that client's update: neither a policy of 1 nor a one-client round is accepted."""
    with pytest.raises(ConfigError, match="min_clients must be >= 2"):
        schemes.make(name, min_clients=1)
    with pytest.raises(ConfigError, match="minimum batch of 2 clients cannot be met by 1"):
        schemes.make(name, seed=0).aggregate([torch.ones(4)])
    with pytest.raises(ConfigError, match="minimum batch"):
        Deployment(name, n=1)


def test_min_clients_policy_refuses_nonsense():
    for bad in (0, -1, 0.0, 1.5, "2", True):
        with pytest.raises(ConfigError):
            securefl.CKKS(min_clients=bad)
    assert securefl.Paillier(min_clients=0.75).min_clients_for(10) == 8


def test_server_cannot_give_clients_another_key(dep):
    """A server relaying another key (a key holder it runs), a key signed for another configuration, or one of
    another round: every client refuses it."""
    rnd = dep.open()
    rogue_ids = keys.create_identities(N, keyholder=True)
    rogue = dep.recipe.party(dep.make_config(rogue_ids), rogue_ids[KEYHOLDER])
    reply = rogue.handle(open_message(dep, rnd.number, rogue.policy.fingerprint))
    _, rogue_signature = base.read_key(Channel(SERVER, SESSION, rnd.number).read(reply, dep.kinds.key, KEYHOLDER),
                                       rogue.policy, rogue.policy.context(SESSION, rnd.number))
    forged = base.write_key(rnd.ch.write(dep.kinds.setup, PartyId.client(0)), dep.policy, rogue.public,
                            rogue_signature)
    with pytest.raises(ProtocolError, match="client/0: key holder's key: invalid signature of keyholder"):
        rnd.client(0, setup=forged)
    # the real key holder, made to hold another configuration (another minimum batch): refused by the fingerprint
    lax_config = dep.make_config(min_clients=dep.policy.min_clients + 1)
    lax = dep.recipe.party(lax_config, dep.identities[KEYHOLDER])
    lax_key = lax.handle(open_message(dep, rnd.number, lax_config.fingerprint))
    relayed = rewrite_header(lax_key, dep.kinds.setup, SERVER, PartyId.client(0), rnd.number)
    with pytest.raises(ProtocolError, match="client/0: .*configuration this party does not hold"):
        rnd.client(0, setup=relayed)
    server = dep.recipe.coordinator(dep.config, SESSION, rnd.number)
    server.start()
    with pytest.raises(ProtocolError, match="server: .*configuration this party does not hold"):
        server.step({KEYHOLDER: lax_key})
    later = dep.open()
    client = later.client(0)
    with pytest.raises(ProtocolError, match="client/0: round .* not after"):
        client.handle(rnd.setups[PartyId.client(0)])  # an old key, to a client past that round
    moved = rewrite_header(rnd.setups[PartyId.client(0)], dep.kinds.setup, SERVER, PartyId.client(0), later.number + 1)
    with pytest.raises(ProtocolError, match="invalid signature"):
        dep.client(0).handle(moved)  # an old key relabelled as a new round


def test_server_cannot_replay_relabel_or_reconfigure(dep):
    rnd = dep.open()
    server = rnd.server()
    server.step({PartyId.client(2): relabel(dep, rnd.uploads[0], 2, rnd.number),  # client 0's under client 2's name
                 PartyId.client(0): rnd.uploads[0], PartyId.client(1): rnd.uploads[1]})
    assert server.included == [0, 1]
    assert "server: " in server.rejected[2] and "upload of client/2: invalid signature" in server.rejected[2]
    later = dep.open()
    server = later.server()
    with pytest.raises(DropoutError):
        server.step({PartyId.client(0): rnd.uploads[0]})  # an old upload
    assert "round" in server.rejected[0]
    with pytest.raises(ProtocolError, match="keyholder: .*configuration this party does not hold"):
        dep.keyholder.handle(later.forged_request(later.uploads, fingerprint=bytes(32)))
    with pytest.raises(ProtocolError, match="keyholder: .*round"):
        dep.keyholder.handle(rnd.request())  # a whole old request
    body = rnd.uploads[0][: -base.UPLOAD_TRAILER]  # an old upload moved to the new round, digest redone
    bumped = rewrite_header(body, dep.kinds.upload, PartyId.client(0), SERVER, later.number)
    bumped += base.digest(bumped) + rnd.uploads[0][-base.SIGNATURE_BYTES :]
    with pytest.raises(ProtocolError, match="keyholder: .*client/0: invalid signature"):
        dep.keyholder.handle(later.forged_request([bumped, *later.uploads[1:]]))
    assert released(dep, later.request(), later.number) is not None


# --- no upload can depend on another client's ciphertexts (the red team's one colluding client) ---


def negated(d: Deployment, ciphertexts: bytes) -> bytes:
    """HE ciphertexts made into encryptions of minus their values from public data only (both schemes are
    malleable): CKKS q - c per coefficient, Paillier c^-1 mod N^2."""
    params = d.params
    if d.scheme == "ckks":
        codec = ci.CoefficientCodec(params.scheme)
        primes = codec.primes[None, None, :, None]
        return codec.pack((primes - codec.from_bytes(ciphertexts, params.count, "colluder")) % primes).tobytes()
    public = paillier.load_public_key(d.keyholder.public, params.key_bits, "colluder")
    cts = pm.from_bytes(ciphertexts, params.count, public, "colluder")
    return pm.to_bytes([gmpy2.invert(c, public.nsquare) for c in cts], public.cipher_bytes)


@pytest.fixture(scope="module", params=SCHEMES)
def six(request) -> Deployment:
    """n = 6, min_clients = 3: isolating one update must take min_clients - 1 = 2 colluding clients."""
    d = Deployment(request.param, n=6)
    assert d.policy.min_clients == 3
    return d


def colluder(rnd, sealed: bytes, index: int = 5) -> bytes:
    """Client `index`'s own correctly signed upload of a sealed section (what a colluding client can send)."""
    return sign_upload(rnd.dep, sealed_body(rnd, sealed, index), signer=index, round_=rnd.number)


def test_one_colluding_client_cannot_cancel_another_out(six):
    """The server holds the uploads of clients 0 and 1 and has one colluder (client 5) upload something made of
    client 1's upload under its own signature, so that the sum of three distinct signed clients is x0 + x1 - x1.
    All it holds of client 1 is sealed: replayed as the colluder's, it does not open and the key holder names
    the colluder, before decrypting anything; the round then decrypts an honest sum of three. Control: with the
    ciphertexts the seal hides (only the key holder's sealing key opens them), the same upload isolates x0."""
    d = six
    rnd = d.open()
    up = {i: rnd.uploads[i] for i in (0, 1, 2)}
    replayed = colluder(rnd, section_of(up[1]))
    server = rnd.server([0, 1, 2, 5])
    request = server.step({PartyId.client(i): u for i, u in up.items() if i != 2} | {PartyId.client(5): replayed})
    assert server.included == [0, 1, 5]  # signed by client 5 and of the right shape: the server cannot tell
    with pytest.raises(ProtocolError, match="keyholder: .*client/5: its ciphertexts do not open"):
        d.keyholder.handle(request[KEYHOLDER])
    honest = released(d, rnd.request([0, 1, 2]), rnd.number)
    assert honest is not None and np.abs(honest - sum(d.ups[i].double().numpy() for i in (0, 1, 2))).max() < 1e-3
    assert not isolates(honest, d.ups[0].double().numpy())

    control = d.open()
    negation = control.seal(negated(d, control.opened(control.uploads[1])), 5)  # needs the key holder's key
    got = released(d, control.forged_request([control.uploads[0], control.uploads[1], colluder(control, negation)]),
                   control.number)
    assert got is not None and np.abs(got - d.ups[0].double().numpy()).max() < 1e-3, "the control attack failed"


def test_the_server_sees_no_ciphertext(dep):
    """Everything the server holds of a round -- the round key, the uploads, its request to the key holder -- holds
    none of the HE ciphertexts the key holder opens (a sealed section is the ciphertexts' length plus 48 bytes)."""
    rnd = dep.open()
    server = rnd.server()
    request = server.step({PartyId.client(i): u for i, u in enumerate(rnd.uploads)})[KEYHOLDER]
    seen = b"".join([rnd.key_reply, *rnd.setups.values(), *rnd.uploads, request])
    for upload in rnd.uploads:
        ciphertexts = rnd.opened(upload)
        assert len(section_of(upload)) == len(ciphertexts) + sealing.OVERHEAD
        for start in (0, len(ciphertexts) // 2, len(ciphertexts) - 24):
            assert ciphertexts[start : start + 24] not in seen


def test_sealed_sections_open_only_for_their_round_client_and_key(dep):
    """A client's own validly signed upload, of the right shape and round key, whose sealed section was made for
    an earlier round, for another client index, to the earlier round's sealing key, changed after sealing, or
    with a small-order ephemeral key: the key holder refuses each naming that client, before decrypting."""
    earlier = dep.open()
    old = earlier.uploads[0]
    rnd = dep.open()  # the key holder's sealing key of `earlier` is gone
    ciphertexts = earlier.opened(old)  # a client re-sealing its own ciphertexts, as a liar can
    stale = bytearray(ciphertexts)
    stale_tags = sealing.seal(earlier.key[-sealing.KEY_BYTES :], stale, rnd.ctx, 0)
    flipped = bytearray(rnd.seal(ciphertexts, 0))
    flipped[sealing.KEY_BYTES + 3] ^= 1
    cases = {
        "an earlier round's section": section_of(old),
        "sealed for client 1": rnd.seal(ciphertexts, 1),
        "sealed to the earlier round's key": stale_tags[0] + bytes(stale) + stale_tags[1],
        "changed after sealing": bytes(flipped),
        "small-order ephemeral key": bytes(32) + section_of(rnd.uploads[0])[sealing.KEY_BYTES :],
    }
    for name, sealed in cases.items():
        liar = sign_upload(dep, sealed_body(rnd, sealed, 0), signer=0, round_=rnd.number)
        with pytest.raises(ProtocolError, match="keyholder: .*client/0: "):
            dep.keyholder.handle(rnd.forged_request([liar, *rnd.uploads[1:]]))
        assert dep.keyholder._open is not None, name  # refused before decryption: the round stays open
    honest = sign_upload(dep, upload_body(rnd, ciphertexts, 0), signer=0, round_=rnd.number)  # re-sealed right
    assert released(dep, rnd.forged_request([honest, *rnd.uploads[1:]]), rnd.number) is not None


def test_round_key_is_signed_whole(dep):
    """A server substituting a sealing key of its own (to open the uploads) breaks the key holder's signature; a
    small-order sealing key, even signed by the pinned key holder, is refused by the client."""
    rnd = dep.open()
    r = Channel(SERVER, SESSION, rnd.number).read(rnd.key_reply, dep.kinds.key, KEYHOLDER)
    key, signature = base.read_key(r, dep.policy, rnd.ctx)
    _, own = sealing.new_key()
    swapped = base.write_key(rnd.ch.write(dep.kinds.setup, PartyId.client(0)), dep.policy,
                             key[: -sealing.KEY_BYTES] + own, signature)
    with pytest.raises(ProtocolError, match="client/0: key holder's key: invalid signature"):
        rnd.client(0, setup=swapped)
    weak = key[: -sealing.KEY_BYTES] + bytes(32)
    signed = dep.identities[KEYHOLDER].sign(base.key_digest(rnd.ctx, weak))
    with pytest.raises(ProtocolError, match="client/0: .*sealing key: X25519 public key of small order"):
        rnd.client(0, setup=base.write_key(rnd.ch.write(dep.kinds.setup, PartyId.client(0)), dep.policy, weak, signed))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_keyholder_keeps_the_sealing_key_of_its_open_round_only(scheme):
    """Saved with a round open, the key holder's state holds that round's sealing key (restored, it opens the
    round's uploads); once it decrypts, the key is gone from it and from its state. A state with an open round
    and no sealing key, or a sealing key and no open round, is refused."""
    d = Deployment(scheme, n=3)
    rnd = d.open()
    saved = d.keyholder.state_dict()
    blobs = state.load(saved, scheme, KEYHOLDER, d.config.fingerprint).blobs
    assert blobs["seal"] == rnd.sealing_key[0].private_bytes_raw()
    d.keyholder = d.recipe.party(d.config, d.identities[KEYHOLDER], saved)
    assert released(d, rnd.request(), rnd.number) is not None
    assert d.keyholder._seal is None
    spent = state.load(d.keyholder.state_dict(), scheme, KEYHOLDER, d.config.fingerprint)
    assert "seal" not in spent.blobs and spent.fields["open"] is None
    opened = state.load(saved, scheme, KEYHOLDER, d.config.fingerprint)
    for fields, extra in (({"open": opened.fields["open"]}, {}), ({"open": None}, {"seal": blobs["seal"]})):
        forged = state.dump(scheme, KEYHOLDER, d.config.fingerprint, opened.guard, fields,
                            {k: v for k, v in blobs.items() if k != "seal"} | extra)
        with pytest.raises(ProtocolError, match="keyholder: saved state: an open round needs its sealing key"):
            d.recipe.party(d.config, d.identities[KEYHOLDER], forged)


def test_server_refuses_wrong_keyholder_replies(dep):
    """A malicious key holder (or whoever sits between): tampered, replayed, other clients, unpinned signer.
    A well-signed wrong sum cannot be detected: correct results rest on the key holder (see securefl.he.base)."""
    rnd = dep.open()
    server = rnd.server()
    server.step({PartyId.client(i): rnd.uploads[i] for i in (0, 1, 2)})
    reply = dep.keyholder.handle(rnd.request([0, 1, 2]))
    bad = bytearray(reply)
    bad[-base.SIGNATURE_BYTES - 3] ^= 1  # inside the ring vector
    with pytest.raises(ProtocolError, match="server: .* result: invalid signature"):
        server.step({KEYHOLDER: bytes(bad)})
    body = Channel(SERVER, SESSION, rnd.number).read(reply, dep.kinds.result, KEYHOLDER)
    body.raw(base.DIGEST_BYTES)
    body.array(np.uint32)
    ring = body.array(dep.policy.codec.fixed.dtype)

    def signed(ids, sk=dep.identities[KEYHOLDER], number=rnd.number, cfg=dep.config.fingerprint):
        ids = np.array(ids, np.uint32)
        sig = sk.sign(base.result_digest(dep.config.context(SESSION, number), ids, ring))
        ch = Channel(KEYHOLDER, SESSION, number)
        return ch.write(dep.kinds.result, SERVER).raw(cfg).array(ids).array(ring).raw(sig).finish()

    with pytest.raises(ProtocolError, match="other clients"):
        server.step({KEYHOLDER: signed([0, 1])})
    with pytest.raises(ProtocolError, match="round"):
        server.step({KEYHOLDER: signed([0, 1, 2], number=rnd.number - 1)})
    with pytest.raises(ProtocolError, match="configuration"):
        server.step({KEYHOLDER: signed([0, 1, 2], cfg=bytes(32))})
    with pytest.raises(ProtocolError, match="invalid signature"):
        server.step({KEYHOLDER: signed([0, 1, 2], sk=keys.Identity.generate(KEYHOLDER))})
    with pytest.raises(DropoutError, match="key holder did not answer"):
        server.step({})
    assert server.step({KEYHOLDER: reply}) == {}
    assert np.abs(server.result().floats - sum(dep.ups[i].double().numpy() for i in (0, 1, 2))).max() < 1e-3


def test_lying_clients_are_named(dep):
    """A client signing a digest of other bytes, a client uploading under another's name."""
    rnd = dep.open()
    body = rnd.uploads[0][: -base.UPLOAD_TRAILER]
    wrong = base.digest(body + b"!")
    liar = body + wrong + dep.identities[PartyId.client(0)].sign(
        base.upload_digest(dep.config.context(SESSION, rnd.number), 0, wrong))
    server = rnd.server()
    request = server.step({PartyId.client(0): liar, PartyId.client(1): rnd.uploads[1],
                           PartyId.client(2): rnd.uploads[2]})[KEYHOLDER]
    assert server.included == [0, 1, 2]  # the server checks the signature over the stated digest only
    with pytest.raises(ProtocolError, match="keyholder: .*client/0: its bytes do not hash"):
        dep.keyholder.handle(request)
    impostor = sign_upload(dep, relabel(dep, body, 3, rnd.number), signer=0, round_=rnd.number, index=3)
    server = rnd.server()
    server.step({PartyId.client(3): impostor, PartyId.client(1): rnd.uploads[1], PartyId.client(2): rnd.uploads[2]})
    assert "upload of client/3: invalid signature" in server.rejected[3]
    assert released(dep, rnd.request(), rnd.number) is not None  # refusals before decryption keep the round


def test_out_of_range_sums_are_refused_and_spend_the_round(dep):
    """A lying client that encrypts values no honest client could: the key holder refuses the sum after
    decrypting (it cannot tell who lied: sums assume clients encode honestly; input validity is future work)."""
    rnd = dep.open()
    liar = rnd.client(0)
    p = dep.params

    def lie(update, weight) -> tuple[object, int]:
        if dep.scheme == "ckks":
            return liar._encrypter.encrypt(np.full(p.count * p.per_ciphertext, (N + 1) * p.fixed.clip)), 0
        # every slot all ones: the sum carries out of every slot
        pub = liar._public_key
        cts = pm.encrypt(pub, [2 ** (p.per_plaintext * p.slot_bits) - 1] * p.count, liar._zeros)
        return bytearray(pm.to_bytes(cts, p.ciphertext_bytes)), 0

    liar._ciphertexts = lie
    server = rnd.server()
    request = server.step({PartyId.client(0): rnd.upload(0, liar),
                           **{PartyId.client(i): rnd.uploads[i] for i in (1, 2, 3)}})[KEYHOLDER]
    with pytest.raises(ProtocolError, match="keyholder: .*(out of range|beyond)"):
        dep.keyholder.handle(request)
    with pytest.raises(ProtocolError, match="no round open"):
        dep.keyholder.handle(rnd.request())


@pytest.mark.parametrize("n", [2, 3, 6])
def test_paillier_with_distributed_dp_finishes_the_round(n):
    """Attack 7: DistributedGaussian's ring noise used to overflow Paillier's packing offset (ProtocolError)."""
    ups = [torch.randn(1000, generator=torch.Generator().manual_seed(i)) * 0.01 for i in range(n)]
    res = securefl.Paillier(clip=1.0, dp=dp.DistributedGaussian(noise_multiplier=1.0, clip=1.0), seed=0).aggregate(ups)
    info = res.report.params["dp"]
    sd = math.sqrt(info["noisy_survivors"] * info["local_variance"]) / 2**16  # of the noise on each summed float
    err = res.sum.double() - sum(u.double() for u in ups)
    assert 0 < err.abs().max().item() < 6 * sd and err.std().item() == pytest.approx(sd, rel=0.15)


def test_paillier_slots_cover_the_clients_noise():
    mech = dp.DistributedGaussian(noise_multiplier=1.0, clip=1.0)
    config = make_config("paillier", keys.create_identities(10, keyholder=True), torch.zeros(100), dp=mech.to_dict())
    pol = paillier.policy(config)
    assert pol.codec.client_variance == mech.client_variance(16, pol.min_clients) > 0
    noise = 20 * math.sqrt(10 * pol.codec.client_variance)  # the bound on the sum of the 10 clients' noise
    assert pol.params.sum_bound(10) >= 10 * 8 * 2**16 + noise  # clip 8 (the config's)
    assert pol.params.sum_bound(10) < 2 ** (pol.params.slot_bits - 1)


# --- every decoder refuses any flipped or cut byte (a refused request leaves the round open) ---

def mutate(msg: bytes, pos: float, flip: int, cut: bool) -> bytes:
    b = bytearray(msg)
    i = int(pos * len(b))
    if cut:
        return bytes(b[:i])
    b[i] ^= flip
    return bytes(b)


MUTATION = {"pos": st.floats(0, 1, exclude_max=True), "flip": st.integers(1, 255), "cut": st.booleans()}


@pytest.fixture(scope="module")
def fuzz_round(dep):
    rnd = dep.open()
    server = rnd.server()
    request = server.step({PartyId.client(i): rnd.uploads[i] for i in range(3)})[KEYHOLDER]
    set_up = rnd.client(0)
    return {"dep": dep, "rnd": rnd, "server": server, "request": request, "client_state": set_up.state_dict(),
            "keyholder_state": dep.keyholder.state_dict()}


@FUZZ
@given(**MUTATION)
def test_open_decoder(fuzz_round, pos, flip, cut):
    """OPEN is not signed: a mutation is refused, or is an OPEN of another session or round (what any server may
    send), answered with the key signed for that round only."""
    dep, rnd = fuzz_round["dep"], fuzz_round["rnd"]
    kh = dep.recipe.party(dep.config, dep.identities[KEYHOLDER], fuzz_round["keyholder_state"])
    bad = mutate(rnd.open_message, pos, flip, cut)
    try:
        reply = kh.handle(bad)
    except ProtocolError as e:
        assert str(e).startswith("keyholder")
        return
    h = securefl.wire.peek(bad)
    assert (h.session, h.round) != (SESSION, rnd.number)
    ctx = dep.config.context(h.session, h.round)
    key = base.read_key(Channel(SERVER, h.session, h.round).read(reply, dep.kinds.key, KEYHOLDER), dep.policy, ctx)[0]
    assert base.split_round_key(key, "test") == (kh.public, kh._seal[1])


@FUZZ
@given(**MUTATION)
def test_key_decoder(fuzz_round, pos, flip, cut):
    dep, rnd = fuzz_round["dep"], fuzz_round["rnd"]
    server = dep.recipe.coordinator(dep.config, SESSION, rnd.number)
    server.start()
    with pytest.raises(ProtocolError, match="server"):
        server.step({KEYHOLDER: mutate(rnd.key_reply, pos, flip, cut)})


@FUZZ
@given(**MUTATION)
def test_setup_decoder(fuzz_round, pos, flip, cut):
    dep, rnd = fuzz_round["dep"], fuzz_round["rnd"]
    with pytest.raises(ProtocolError, match="client/0"):
        dep.client(0).handle(mutate(rnd.setups[PartyId.client(0)], pos, flip, cut))


@FUZZ
@given(**MUTATION)
def test_ready_decoder(fuzz_round, pos, flip, cut):
    dep, rnd = fuzz_round["dep"], fuzz_round["rnd"]
    server = dep.recipe.coordinator(dep.config, SESSION, rnd.number)
    server.start()
    server.step({KEYHOLDER: rnd.key_reply})
    asked = server.step({PartyId.client(0): mutate(rnd.ready(0), pos, flip, cut),
                         **{PartyId.client(i): rnd.ready(i) for i in (1, 2)}})
    assert set(asked) == {PartyId.client(1), PartyId.client(2)} and "server" in server.rejected[0]


@FUZZ
@given(**MUTATION)
def test_request_decoder(fuzz_round, pos, flip, cut):
    dep, rnd = fuzz_round["dep"], fuzz_round["rnd"]
    client = dep.client(0, fuzz_round["client_state"])  # restored between setup and upload
    with pytest.raises(ProtocolError, match="client/0"):
        client.handle(mutate(rnd.request_message(0), pos, flip, cut), dep.update(0))


@FUZZ
@given(**MUTATION)
def test_upload_is_refused_by_the_server_or_the_keyholder(fuzz_round, pos, flip, cut):
    """The server checks shape and signature over the stated digest; the ciphertext bytes only the key holder
    hashes. Either refuses; the key holder before it decrypts anything."""
    dep, rnd = fuzz_round["dep"], fuzz_round["rnd"]
    bad = mutate(rnd.uploads[3], pos, flip, cut)
    server = rnd.server()
    server.step({PartyId.client(3): bad, **{PartyId.client(i): rnd.uploads[i] for i in (0, 1)}})
    if 3 in server.rejected:
        assert server.rejected[3].startswith("server")
        return
    with pytest.raises(ProtocolError, match="keyholder: .*client/3"):
        dep.keyholder.handle(rnd.forged_request([bad, *rnd.uploads[:2]]))


@FUZZ
@given(**MUTATION)
def test_request_decoder_refuses_before_decrypting(fuzz_round, pos, flip, cut):
    dep = fuzz_round["dep"]
    with pytest.raises(ProtocolError, match="keyholder"):
        dep.keyholder.handle(mutate(fuzz_round["request"], pos, flip, cut))


@FUZZ
@given(**MUTATION, party=st.sampled_from(["client", "keyholder"]))
def test_state_decoder(fuzz_round, pos, flip, cut, party):
    dep = fuzz_round["dep"]
    saved = fuzz_round[f"{party}_state"]
    ident = dep.identities[PartyId.client(0) if party == "client" else KEYHOLDER]
    with pytest.raises(ProtocolError, match=f"{ident.party}: saved state"):
        dep.recipe.party(dep.config, ident, mutate(saved, pos, flip, cut))


@pytest.fixture(scope="module")
def fuzz_reply(fuzz_round) -> bytes:
    """The key holder's one decryption of the fuzzed round (first used after the request fuzzing)."""
    return fuzz_round["dep"].keyholder.handle(fuzz_round["request"])


@FUZZ
@given(**MUTATION)
def test_result_decoder(fuzz_round, fuzz_reply, pos, flip, cut):
    with pytest.raises(ProtocolError, match="server"):
        fuzz_round["server"].step({KEYHOLDER: mutate(fuzz_reply, pos, flip, cut)})


def test_result_is_taken_after_refused_ones(fuzz_round, fuzz_reply):
    server = fuzz_round["server"]
    assert server.step({KEYHOLDER: fuzz_reply}) == {} and server.result().included == [0, 1, 2]
    with pytest.raises(ProtocolError, match="after the round finished"):
        server.step({KEYHOLDER: fuzz_reply})


def test_saved_states_are_bound_to_their_party_and_configuration(fuzz_round):
    dep = fuzz_round["dep"]
    client_state = fuzz_round["client_state"]
    with pytest.raises(ProtocolError, match="client/1: saved state: saved by 'client/0'"):
        dep.client(1, client_state)
    with pytest.raises(ProtocolError, match="saved under another round configuration"):
        dep.recipe.party(dep.make_config(min_clients=N), dep.identities[PartyId.client(0)], client_state)
    with pytest.raises(ProtocolError, match="keyholder: saved state: saved by 'client/0'"):
        dep.recipe.party(dep.config, dep.identities[KEYHOLDER], client_state)


def test_aggregator_numbers_rounds_and_keeps_the_keyholder():
    agg = securefl.CKKS(seed=0)
    ups = [torch.randn(10) for _ in range(3)]
    reports = [agg.aggregate(ups).report for _ in range(3)]
    assert [r.params["round"] for r in reports] == [1, 2, 3]
    assert reports[0].params["min_clients"] == 2
    with pytest.raises(DropoutError, match="at least 2"):
        agg.aggregate(ups, dropped=[0, 1])
