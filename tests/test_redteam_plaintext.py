"""Red team: Plaintext's parties and the decoders every scheme shares (wire headers, pinned directories, round
configurations, replay guards, Flower registration hellos).

Plaintext promises nothing against the server; what it must still do is refuse malformed, replayed or
misaddressed messages with securefl errors, and never crash. Each test asserts the SAFE outcome.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import securefl
from securefl import keys
from securefl.errors import ProtocolError, SecureFLError
from securefl.flower import hello
from securefl.keys import Directory
from securefl.session import ReplayGuard, RoundConfig
from securefl.wire import SERVER, Channel, Kind, PartyId, peek

from .redteam_harness import (
    Fed,
    answers_once,
    clone,
    escapes,
    json_variants,
    mutations,
    non_bytes_escapes,
    only_securefl_errors,
)

cid = PartyId.client


def _fed() -> Fed:
    return Fed(securefl.Plaintext(), n=4)


def test_client_refuses_replays_and_other_configurations():
    fed = _fed()
    coord = fed.coordinator()
    answers_once(fed, 0, coord.start()[cid(0)])
    other = Fed(securefl.Plaintext(), n=4)
    with pytest.raises(ProtocolError):
        fed.client(1).handle(other.agg.coordinator(other.config, fed.session, 5).start()[cid(1)], fed.source(cid(1)))
    with pytest.raises(ProtocolError):  # a request to client 2 delivered to client 1
        fed.client(1).handle(coord.start()[cid(2)], fed.source(cid(1)))


def test_decoders_raise_only_securefl_errors():
    fed = _fed()
    coord = fed.coordinator()
    outbox = coord.start()
    replies = fed.deliver(outbox)
    rng = np.random.default_rng(0)
    for bad in mutations(outbox[cid(3)], rng, 40) + mutations(outbox[cid(3)], rng, 40, protect=40):
        c = fed.agg.party(fed.config, fed.ids[cid(3)], fed.client(3).state_dict())
        only_securefl_errors(lambda c=c, b=bad: c.handle(b, fed.source(cid(3))))
    for bad in mutations(replies[cid(1)], rng, 40, protect=peek(replies[cid(1)]).size):
        s = clone(coord)
        only_securefl_errors(lambda s=s, b=bad: s.step({**replies, cid(1): b}))


def test_client_state_decoder_raises_only_securefl_errors():
    fed = _fed()
    fed.deliver(fed.coordinator().start())
    good = json.loads(fed.client(0).state_dict())
    found = {}
    for raw in (b"", b"not json", b"[]", b"null", b"7"):
        try:
            fed.agg.party(fed.config, fed.ids[cid(0)], raw)
        except SecureFLError:
            pass
        except Exception as e:  # noqa: BLE001 - reported
            found.setdefault(f"{type(e).__name__}: {str(e)[:60]}", []).append(raw)
    found |= escapes(lambda b: fed.agg.party(fed.config, fed.ids[cid(0)], b), json_variants(good))
    assert not found, f"built-in exceptions escape Plaintext's state decoder: {found}"


def test_parties_refuse_a_message_that_is_not_bytes():
    fed = _fed()
    found = non_bytes_escapes(lambda j: fed.client(0).handle(j, fed.source(cid(0))))
    assert not found, f"Plaintext client: {found}"


# ------------------------------------------------------------------------------ shared decoders


def test_wire_peek_and_channel_raise_only_protocol_errors():
    ch = Channel(SERVER, bytes(16), 3)
    good = ch.write(Kind.PLAIN_REQUEST, cid(0)).raw(bytes(32)).finish()
    rng = np.random.default_rng(1)
    me = Channel(cid(0), bytes(16), 3)
    for bad in mutations(good, rng, 300):
        only_securefl_errors(lambda b=bad: peek(b))
        only_securefl_errors(lambda b=bad: me.read(b, Kind.PLAIN_REQUEST, SERVER).raw(32))
    with pytest.raises(ProtocolError):
        peek(b"SF" + bytes([2, 1]) + bytes(16) + b"\0\0\0\0" + bytes([9]) + bytes(8))  # role 9: no such role


def test_round_config_and_directory_decoders_raise_only_config_errors():
    fed = _fed()
    doc = fed.config.to_dict()
    found = escapes(lambda b: RoundConfig.from_json(b), json_variants(doc))
    assert not found, f"built-in exceptions escape RoundConfig.from_json: {found}"
    found = escapes(lambda b: Directory.from_json(b), json_variants(fed.config.directory.to_dict()))
    assert not found, f"built-in exceptions escape Directory.from_json: {found}"


def test_directory_refuses_a_duplicated_or_low_order_key():
    ids = keys.create_identities(2)
    a, b = ids[cid(0)], ids[cid(1)]
    with pytest.raises(SecureFLError):
        Directory({cid(0): (a.public_key, a.agreement_key), cid(1): (a.public_key, b.agreement_key)})
    with pytest.raises(SecureFLError):  # the all-zero X25519 point: every agreement with it is zero
        d = Directory({cid(0): (a.public_key, bytes(32)), cid(1): (b.public_key, b.agreement_key)})
        b.pairwise_key(cid(0), d.agreement_key(cid(0)), b"label")


def test_replay_guard_decoder():
    for bad in ({"zz": 1}, {"00": "x"}, {"00": None}, {"00": float("inf")}, {"00": [1]}):
        with pytest.raises(SecureFLError):
            ReplayGuard.from_dict(bad)


def test_hello_refuses_replays_and_malformed_answers():
    fed = _fed()
    me = fed.ids[cid(0)]
    session, nonce = bytes(range(16)), bytes(32)
    req = hello.request(fed.config, session, nonce, 7, 11)
    ans = hello.answer(req, fed.config, me, 7, 11)
    assert hello.verify(ans, fed.config, session, nonce, 7, 11) == cid(0)
    for args in ((session, bytes([1]) * 32, 7, 11), (bytes(16), nonce, 7, 11), (session, nonce, 8, 11),
                 (session, nonce, 7, 12)):
        with pytest.raises(ProtocolError):
            hello.verify(ans, fed.config, *args)
    rng = np.random.default_rng(2)
    for bad in mutations(ans, rng, 200):
        only_securefl_errors(lambda b=bad: hello.verify(b, fed.config, session, nonce, 7, 11))
    for bad in mutations(req, rng, 200):
        only_securefl_errors(lambda b=bad: hello.answer(b, fed.config, me, 7, 11))
