"""Red team: CKKS and Paillier against a malicious server (with and without colluding clients), replays,
restarts and malformed messages.

The promise (HEAggregator.threat_model): "a malicious server alone gets one decryption per round, of
the sum of >= min_clients signed uploads of its choice (so it isolates one update only with
min_clients - 1 colluding clients)". Each test asserts the SAFE outcome, so a successful attack is a
failing test.
"""

from __future__ import annotations

import gmpy2
import numpy as np
import pytest

from securefl.errors import ProtocolError, SecureFLError
from securefl.he import base
from securefl.he import ckks_io as ci
from securefl.he import paillier_math as pm
from securefl.he.ckks import CKKS
from securefl.he.paillier import Paillier, load_public_key
from securefl.wire import KEYHOLDER, SERVER, Channel, PartyId, peek

from .redteam_harness import Fed, clone, escapes, json_variants, mutations, non_bytes_escapes, only_securefl_errors

cid = PartyId.client
SCHEMES = {"ckks": lambda: CKKS(), "paillier": lambda: Paillier()}


def _fed(name: str, n: int = 6, **changes) -> Fed:
    return Fed(SCHEMES[name](), n=n, m=6, **changes)


def _upload_stage(fed: Fed, coord):
    """The server's REQUEST messages (every client set up with the key holder's key)."""
    outbox = coord.start()  # OPEN
    outbox = coord.step(fed.deliver(outbox))  # KEY -> SETUP
    outbox = coord.step(fed.deliver(outbox))  # READY -> REQUEST
    assert coord.stage == "upload"
    return outbox


def _section(upload: bytes) -> bytes:
    return upload[base.UPLOAD_PREFIX : -base.UPLOAD_TRAILER]


def _negated(fed: Fed, name: str, section: bytes) -> bytes:
    """Another client's ciphertexts turned into encryptions of minus its values, from public data only."""
    policy = fed.client(0).policy
    params = policy.params
    if name == "ckks":
        codec = ci.CoefficientCodec(params.scheme)
        coeffs = codec.from_bytes(section, params.count, "colluder")
        primes = codec.primes[None, None, :, None]
        return codec.pack((primes - coeffs) % primes).tobytes()
    public = load_public_key(fed.parties[KEYHOLDER].public, params.key_bits, "colluder")
    cts = pm.from_bytes(section, params.count, public, "colluder")
    return pm.to_bytes([gmpy2.invert(c, public.nsquare) for c in cts], public.cipher_bytes)


def _signed_upload(fed: Fed, index: int, session: bytes, round_: int, section: bytes) -> bytes:
    """Client `index`'s own, correctly signed upload whose ciphertexts are `section` (a colluding client)."""
    policy = fed.client(index).policy
    ctx = policy.context(session, round_)
    key = base.digest(fed.parties[KEYHOLDER].public)
    prefix, sha = base.write_upload(Channel(cid(index), session, round_).write(policy.kinds.upload, SERVER), key,
                                    policy.params, section)
    d = sha.digest()
    return prefix + section + d + fed.ids[cid(index)].sign(base.upload_digest(ctx, index, d))


# ------------------------------------------------------------------------------ isolating one update


@pytest.mark.parametrize("name", ["ckks", "paillier"])
def test_one_colluding_client_does_not_isolate_an_update(name):
    """n = 6, min_clients = 3: the threat model says isolating client 0 needs min_clients - 1 = 2 colluders.
    With ONE colluder (client 5): the server collects the honest uploads of 0 and 1, hands client 1's
    ciphertexts to the colluder, which negates them homomorphically (CKKS: q - c per coefficient; Paillier:
    c^-1 mod N^2) and uploads the result under its own signature. The key holder sums {0, 1, 5} -- three
    distinct, correctly signed clients -- and decrypts x0 + x1 - x1 = x0, which passes every range check."""
    fed = _fed(name)
    assert fed.client(0).policy.min_clients == 3
    coord = fed.coordinator()

    def attack():
        requests = _upload_stage(fed, coord)
        honest = fed.deliver({p: m for p, m in requests.items() if p.index in (0, 1)})
        colluder = _signed_upload(fed, 5, fed.session, coord._ctx.round, _negated(fed, name, _section(honest[cid(1)])))
        outbox = coord.step({**honest, cid(5): colluder})  # AGGREGATE of {0, 1, 5}
        coord.step(fed.deliver(outbox))
        return coord.result()

    outcome = only_securefl_errors(attack)
    if isinstance(outcome, SecureFLError):
        return
    isolated = np.allclose(outcome.floats, fed.ring([0]), atol=8 * 2.0**-16)
    assert not isolated, (f"{name}: server + 1 colluding client decrypted client 0's update alone "
                          f"(sum over {outcome.included} = x0; weight {outcome.weight})")


# ------------------------------------------------------------------------------ one decryption per round


@pytest.mark.parametrize("name", ["ckks", "paillier"])
def test_key_holder_decrypts_once_per_round_even_after_a_restart(name):
    fed = _fed(name, n=4)
    coord = fed.coordinator()
    requests = _upload_stage(fed, coord)
    uploads = fed.deliver(requests)
    aggregate = coord.step(uploads)[KEYHOLDER]
    fed.parties[KEYHOLDER].handle(aggregate)
    with pytest.raises(ProtocolError):  # the same request again
        fed.parties[KEYHOLDER].handle(aggregate)
    kh = fed.restore(KEYHOLDER, fed.parties[KEYHOLDER].state_dict())
    with pytest.raises(ProtocolError):  # after a restart from its saved state
        kh.handle(aggregate)
    two = clone_request(fed, coord, {p: uploads[p] for p in list(uploads)[:3]})
    with pytest.raises(ProtocolError):
        kh.handle(two)
    with pytest.raises(ProtocolError):  # reopening the spent round
        kh.handle(Channel(SERVER, fed.session, coord._ctx.round).write(fed.client(0).policy.kinds.open, KEYHOLDER)
                  .raw(fed.config.fingerprint).finish())


def clone_request(fed: Fed, coord, uploads) -> bytes:
    """An AGGREGATE of these uploads for the coordinator's round (what a server may send instead)."""
    pol = fed.client(0).policy
    w = Channel(SERVER, fed.session, coord._ctx.round).write(pol.kinds.aggregate, KEYHOLDER).raw(pol.fingerprint)
    return base.write_uploads(w, [bytes(u) for u in uploads.values()])


@pytest.mark.parametrize("name", ["ckks", "paillier"])
def test_key_holder_refuses_small_or_repeated_sets(name):
    fed = _fed(name, n=4)  # min_clients = 2
    coord = fed.coordinator()
    uploads = fed.deliver(_upload_stage(fed, coord))
    kh = fed.parties[KEYHOLDER]
    with pytest.raises(ProtocolError):
        kh.handle(clone_request(fed, coord, {cid(0): uploads[cid(0)]}))
    with pytest.raises(ProtocolError):  # one client's upload twice
        kh.handle(base.write_uploads(
            Channel(SERVER, fed.session, coord._ctx.round).write(fed.client(0).policy.kinds.aggregate, KEYHOLDER)
            .raw(fed.config.fingerprint), [uploads[cid(0)], uploads[cid(0)]]))
    # the same ciphertexts re-signed by nobody: client 0's bytes with client 1's header
    forged = bytearray(uploads[cid(0)])
    hdr = Channel(cid(1), fed.session, coord._ctx.round).write(fed.client(0).policy.kinds.upload, SERVER).finish()
    forged[: len(hdr)] = hdr
    with pytest.raises(ProtocolError):
        kh.handle(clone_request(fed, coord, {cid(2): uploads[cid(2)], cid(1): bytes(forged)}))


@pytest.mark.parametrize("name", ["ckks", "paillier"])
def test_uploads_of_an_earlier_round_or_session_are_refused(name):
    fed = _fed(name, n=4)
    first = fed.coordinator()
    old = fed.deliver(_upload_stage(fed, first))
    second = fed.coordinator()
    _upload_stage(fed, second)
    with pytest.raises(ProtocolError):
        fed.parties[KEYHOLDER].handle(clone_request(fed, second, old))
    # the old uploads re-headed for the new round (the server writes headers): the signature binds the round
    rehead = {}
    for p, u in old.items():
        h = Channel(p, fed.session, second._ctx.round).write(fed.client(0).policy.kinds.upload, SERVER).finish()
        rehead[p] = h + u[len(h):]
    with pytest.raises(ProtocolError):
        fed.parties[KEYHOLDER].handle(clone_request(fed, second, rehead))


@pytest.mark.parametrize("name", ["ckks", "paillier"])
def test_clients_refuse_a_substituted_or_replayed_key(name):
    fed = _fed(name, n=4)
    first = fed.coordinator()
    setup1 = first.step(fed.deliver(first.start()))[cid(0)]  # round 1's signed key, as sent to client 0
    fed.client(0).handle(setup1)
    second = fed.coordinator()
    second.step(fed.deliver(second.start()))
    body = setup1[peek(setup1).size :]
    replayed = Channel(SERVER, fed.session, second._ctx.round).write(fed.client(0).policy.kinds.setup, cid(0)) \
        .raw(body).finish()
    with pytest.raises(ProtocolError):
        fed.client(0).handle(replayed)
    # a key of the server's own, "signed" by a client identity the server colludes with
    other = Fed(SCHEMES[name](), n=4, m=6)
    theirs = other.parties[KEYHOLDER].public
    pol = fed.client(0).policy
    ctx = pol.context(fed.session, second._ctx.round)
    sig = fed.ids[cid(3)].sign(base.key_digest(ctx, theirs))
    forged = base.write_key(Channel(SERVER, fed.session, second._ctx.round).write(pol.kinds.setup, cid(0)), pol,
                            theirs, sig)
    with pytest.raises(ProtocolError):
        fed.client(0).handle(forged)


def test_client_uploads_once_per_round_and_refuses_after_a_restart():
    fed = _fed("ckks", n=4)
    coord = fed.coordinator()
    requests = _upload_stage(fed, coord)
    fed.client(0).handle(requests[cid(0)], fed.source(cid(0)))
    with pytest.raises(ProtocolError):
        fed.client(0).handle(requests[cid(0)], fed.source(cid(0)))
    fed.restore(cid(0), fed.client(0).state_dict())
    with pytest.raises(ProtocolError):
        fed.client(0).handle(requests[cid(0)], fed.source(cid(0)))


@pytest.mark.parametrize("name", ["ckks", "paillier"])
def test_encryption_randomness_is_fresh_every_round(name):
    """The same client, the same update, two rounds: the ciphertexts must differ (Paillier's encryptions of zero
    and CKKS's are used once; equal ciphertexts would tell the server the update did not change)."""
    fed = _fed(name, n=4)
    sections = []
    for _ in range(2):
        coord = fed.coordinator()
        sections.append(_section(fed.deliver(_upload_stage(fed, coord))[cid(0)]))
    assert sections[0] != sections[1]


# ------------------------------------------------------------------------------ malformed messages


@pytest.mark.parametrize("name", ["ckks", "paillier"])
def test_key_holder_decoder_raises_only_securefl_errors(name):
    fed = _fed(name, n=4)
    coord = fed.coordinator()
    uploads = fed.deliver(_upload_stage(fed, coord))
    aggregate = coord.step(uploads)[KEYHOLDER]
    saved = fed.parties[KEYHOLDER].state_dict()
    kh = fed.agg.party(fed.config, fed.ids[KEYHOLDER], saved)
    rng = np.random.default_rng(1)
    header = peek(aggregate).size
    cases = mutations(aggregate, rng, 25, protect=header)
    # ciphertext bytes only (past the uploads' own headers): what decryption-side parsing must survive
    first = aggregate.index(uploads[cid(0)][:16])
    cases += mutations(aggregate, rng, 25, protect=first + base.UPLOAD_PREFIX)
    for bad in cases:
        only_securefl_errors(lambda b=bad, k=kh: k.handle(b))  # refused before decryption: the round stays open
        if kh._open is None:  # it decrypted: fresh copy for the next case
            kh = fed.agg.party(fed.config, fed.ids[KEYHOLDER], saved)


@pytest.mark.parametrize("name", ["ckks", "paillier"])
def test_key_holder_survives_garbage_ciphertexts_a_client_signs(name):
    """A malicious client signs whatever it likes: ciphertext sections of the right length but arbitrary bytes
    must be refused with a securefl error (naming it), never a library exception or a crash."""
    fed = _fed(name, n=4)
    coord = fed.coordinator()
    uploads = fed.deliver(_upload_stage(fed, coord))
    kh_state = fed.parties[KEYHOLDER].state_dict()
    section = _section(uploads[cid(3)])
    rng = np.random.default_rng(5)
    width = len(section)
    garbage = [bytes(width), b"\xff" * width, rng.integers(0, 256, width, dtype=np.uint8).tobytes()]
    if name == "paillier":
        public = load_public_key(fed.parties[KEYHOLDER].public, fed.client(0).policy.params.key_bits, "test")
        cb = public.cipher_bytes
        for value in (int(public.n), int(public.nsquare) - 1, 1, int(public.n) + 1):
            garbage.append(value.to_bytes(cb, "big") + section[cb:])
    for junk in garbage:
        forged = _signed_upload(fed, 3, fed.session, coord._ctx.round, junk)
        kh = fed.agg.party(fed.config, fed.ids[KEYHOLDER], kh_state)
        request = clone_request(fed, coord, {cid(0): uploads[cid(0)], cid(1): uploads[cid(1)], cid(3): forged})
        only_securefl_errors(lambda k=kh, r=request: k.handle(r))


@pytest.mark.parametrize("name", ["ckks", "paillier"])
def test_client_refuses_malformed_keys_signed_by_the_key_holder(name):
    """Even a key the pinned key holder signs is parsed defensively: SEAL / the Paillier checks refuse it with
    a ProtocolError, never a library exception."""
    fed = _fed(name, n=4)
    coord = fed.coordinator()
    coord.step(fed.deliver(coord.start()))
    pol = fed.client(0).policy
    ctx = pol.context(fed.session, coord._ctx.round)
    public = fed.parties[KEYHOLDER].public
    rng = np.random.default_rng(2)
    saved = fed.client(0).state_dict()
    for bad in mutations(public, rng, 30)[1:]:
        sig = fed.ids[KEYHOLDER].sign(base.key_digest(ctx, bad))
        setup = base.write_key(Channel(SERVER, fed.session, coord._ctx.round).write(pol.kinds.setup, cid(0)), pol,
                               bad, sig)
        client = fed.agg.party(fed.config, fed.ids[cid(0)], saved)
        only_securefl_errors(lambda c=client, s=setup: c.handle(s))


@pytest.mark.parametrize("name", ["ckks", "paillier"])
def test_server_decoders_raise_only_securefl_errors(name):
    fed = _fed(name, n=4)
    coord = fed.coordinator()
    uploads = fed.deliver(_upload_stage(fed, coord))
    rng = np.random.default_rng(4)
    for bad in mutations(uploads[cid(1)], rng, 30, protect=peek(uploads[cid(1)]).size):
        c = clone(coord)
        only_securefl_errors(lambda c=c, b=bad: c.step({**uploads, cid(1): b}))
    aggregate = coord.step(uploads)[KEYHOLDER]
    result = fed.parties[KEYHOLDER].handle(aggregate)
    for bad in mutations(result, rng, 30, protect=peek(result).size):
        c = clone(coord)
        only_securefl_errors(lambda c=c, b=bad: c.step({KEYHOLDER: b}))


@pytest.mark.parametrize("who", ["keyholder", "client"])
def test_saved_state_decoders_raise_only_securefl_errors(who):
    """An HE state carries a checksum, so only a well-formed document reaches the field checks: fuzz it with a
    correct checksum."""
    import hashlib
    import json
    import struct

    from securefl.he import state as st

    fed = _fed("ckks", n=4)
    coord = fed.coordinator()
    _upload_stage(fed, coord)
    pid = KEYHOLDER if who == "keyholder" else cid(0)
    good = fed.parties[pid].state_dict()
    body = good[:-32]
    (size,) = struct.unpack_from("<I", body, len(st.MAGIC))
    head, blobs = body[len(st.MAGIC) + 4 : len(st.MAGIC) + 4 + size], body[len(st.MAGIC) + 4 + size :]

    def rebuilt(doc: bytes) -> bytes:
        b = st.MAGIC + struct.pack("<I", len(doc)) + doc + blobs
        return b + hashlib.sha256(b).digest()

    found = escapes(lambda d: fed.agg.party(fed.config, fed.ids[pid], rebuilt(d)), json_variants(json.loads(head)))
    assert not found, f"built-in exceptions escape the HE {who} state decoder: {found}"


def test_parties_refuse_a_message_that_is_not_bytes():
    fed = _fed("ckks", n=4)
    found = non_bytes_escapes(lambda j: fed.parties[KEYHOLDER].handle(j))
    found |= {f"client {k}": v for k, v in non_bytes_escapes(lambda j: fed.client(0).handle(j)).items()}
    assert not found, f"HE parties: {found}"


def test_honest_rounds_still_exact():
    """Control: an honest round of each scheme gives the sum (the refusals above are not the protocol failing)."""
    for name in SCHEMES:
        fed = _fed(name, n=4)
        totals = fed.run(fed.coordinator())
        assert np.allclose(totals.floats, fed.ring(totals.included), atol=8 * 2.0**-16)
