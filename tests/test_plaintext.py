"""Plaintext: the size of an upload, the 64-bit ring, malformed messages, replayed rounds. (Exactness, weights,
dropouts, bad inputs and the report's fields: tests/test_conformance.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import securefl
from securefl import keys, wire
from securefl.errors import ProtocolError
from securefl.keys import Directory
from securefl.plaintext import Client, Server
from securefl.session import ModelSpec, RoundConfig, new_session
from securefl.wire import SERVER, Channel, Kind, PartyId


def test_an_upload_is_one_ring_vector(updates):
    rep = securefl.Plaintext(seed=0).aggregate(updates).report
    n_values = sum(v.numel() for v in updates[0].values()) + 1
    assert rep.bytes_sent["client/0"] == wire.PARTY_HEADER_SIZE + 9 + 4 * n_values  # 32-bit ring
    assert set(rep.seconds) == {"upload", "decode"} and rep.params["ring_bits"] == 32


def test_ring_widens_to_64_bits_when_needed():
    ups = [torch.ones(3) for _ in range(200)]
    res = securefl.Plaintext(clip=1000.0, frac_bits=20).aggregate(ups)
    assert res.report.params["ring_bits"] == 64
    assert torch.allclose(res.mean, torch.ones(3))


# --- the server's decoder ---------------------------------------------------------------------


def _round(n=3):
    ids = keys.create_identities(n)
    config = RoundConfig("plaintext", Directory.of(ids.values()), ModelSpec.of(torch.zeros(3)), clip=1.0, frac_bits=8,
                         int_bound=0)
    server = Server(config, new_session(), 1)
    return config, ids, server, server.start()


def _upload(server, sender=0, kind=Kind.PLAIN_UPLOAD, round_=None, session=None, to=SERVER, n=4, dtype=np.uint32):
    ch = Channel(PartyId.client(sender), session or server._ch.session, server._ch.round if round_ is None else round_)
    return ch.write(kind, to).array(np.arange(n, dtype=dtype)).finish()


MALFORMED = {
    "truncated": lambda s: _upload(s)[:-1],
    "header only": lambda s: _upload(s)[:5],
    "trailing": lambda s: _upload(s) + b"\x00",
    "kind": lambda s: _upload(s, kind=Kind.PLAIN_REQUEST),
    "round": lambda s: _upload(s, round_=2),
    "session": lambda s: _upload(s, session=b"\x01" * 16),
    "length": lambda s: _upload(s, n=5),
    "dtype": lambda s: _upload(s, dtype=np.uint64),
    "sender": lambda s: _upload(s, sender=2),
    "receiver": lambda s: _upload(s, to=PartyId.client(1)),
    "magic": lambda s: b"XX" + _upload(s)[2:],
    "version": lambda s: _upload(s)[:2] + b"\x09" + _upload(s)[3:],
}


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_uploads_raise_protocol_error(name):
    _, _, server, _ = _round()
    with pytest.raises(ProtocolError):
        server.step({PartyId.client(0): MALFORMED[name](server)})


def test_replies_after_the_round_and_from_strangers_are_refused():
    _, _, server, _ = _round()
    with pytest.raises(ProtocolError, match="not asked"):
        server.step({PartyId.client(7): _upload(server, sender=7)})
    server.step({PartyId.client(0): _upload(server)})
    with pytest.raises(ProtocolError, match="finished"):
        server.step({PartyId.client(1): _upload(server, sender=1)})


def test_client_refuses_replayed_rounds_and_foreign_configurations():
    config, ids, server, requests = _round()
    client = Client(config, ids[PartyId.client(0)])
    msg = requests[PartyId.client(0)]
    client.handle(msg, lambda: (torch.ones(3), 1.0))
    with pytest.raises(ProtocolError, match="not after round"):
        client.handle(msg, lambda: (torch.ones(3), 1.0))
    restored = Client(config, ids[PartyId.client(0)], client.state_dict())
    with pytest.raises(ProtocolError, match="not after round"):
        restored.handle(msg, lambda: (torch.ones(3), 1.0))
    other = RoundConfig("plaintext", config.directory, config.model, clip=2.0)
    foreign = Server(other, new_session(), 1).start()[PartyId.client(0)]
    with pytest.raises(ProtocolError, match="another round configuration"):
        client.handle(foreign, lambda: (torch.ones(3), 1.0))
    with pytest.raises(ProtocolError, match="addressed to client/1"):
        client.handle(Server(config, new_session(), 1).start()[PartyId.client(1)], lambda: (torch.ones(3), 1.0))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120), st.integers(0, 119), st.integers(0, 255))
def test_decoder_never_fails_otherwise(junk, pos, byte):
    """Random bytes, and single-byte corruptions of a valid upload, never raise anything but ProtocolError."""
    _, _, server, _ = _round()
    msg = bytearray(_upload(server))
    if pos < len(msg):
        msg[pos] = byte
    for data in (junk, bytes(msg)):
        _, _, server, _ = _round()
        try:
            server.step({PartyId.client(0): data})
        except ProtocolError:
            pass
