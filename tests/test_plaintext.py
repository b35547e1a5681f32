"""Plaintext: exactness against float64, weights, dropouts, bad inputs, malformed messages, report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import securefl
from securefl import keys, wire
from securefl.errors import DropoutError, InputError, ProtocolError, StructureError
from securefl.keys import Directory
from securefl.plaintext import Client, Server
from securefl.session import ModelSpec, RoundConfig, new_session
from securefl.wire import SERVER, Channel, Kind, PartyId
from tests.conftest import STRUCTURES
from tests.reference import assert_close


@pytest.mark.parametrize("weights", [None, [1, 2, 3, 4, 5, 6], [0.5, 0.0, 3.25, 1.0, 7.0, 2.0]])
def test_state_dict_with_batchnorm_matches_reference(updates, weights):
    result = securefl.Plaintext(seed=0).aggregate(updates, weights=weights)
    assert_close(result, updates, weights, range(6), clip=8.0)
    assert result.mean["bn.num_batches_tracked"].dtype == torch.int64


def test_clipping_is_counted_and_applied():
    ups = [torch.tensor([0.5, 20.0, -30.0]), torch.tensor([0.5, 0.0, 0.0])]
    res = securefl.Plaintext(clip=1.0, seed=0).aggregate(ups)
    assert res.report.clipped_values == 2
    assert torch.allclose(res.mean, torch.tensor([0.5, 0.5, -0.5]), atol=1e-4)


@pytest.mark.parametrize("dropped", [[1, 4], {1: "upload", 4: "upload"}])
def test_dropped_clients_are_excluded(updates, dropped):
    res = securefl.Plaintext(seed=1).aggregate(updates, weights=[1, 2, 3, 4, 5, 6], dropped=dropped)
    assert_close(res, updates, [1, 2, 3, 4, 5, 6], [0, 2, 3, 5], clip=8.0)
    assert res.report.dropped == {1: "upload", 4: "upload"}
    assert "client/1" not in res.report.bytes_sent


def test_all_dropped_raises_dropout_error(updates):
    with pytest.raises(DropoutError):
        securefl.Plaintext().aggregate(updates, dropped=list(range(6)))


def test_positive_weights_all_dropped_raises(updates):
    with pytest.raises(DropoutError, match="weights sum to 0"):
        securefl.Plaintext().aggregate(updates, weights=[1, 0, 0, 0, 0, 0], dropped=[0])


@pytest.mark.parametrize("structure", STRUCTURES)
def test_structures_and_dtypes_round_trip(structure):
    g = torch.Generator().manual_seed(0)
    ups = [structure(g) for _ in range(4)]
    res = securefl.Plaintext(seed=0).aggregate(ups)
    flat = [u if isinstance(u, (list, tuple)) else [u] for u in ups]
    got = res.mean if isinstance(res.mean, (list, tuple)) else [res.mean]
    assert type(res.mean) is type(ups[0])
    for j, t in enumerate(got):
        assert t.dtype == flat[0][j].dtype and t.shape == flat[0][j].shape
        if t.dtype.is_floating_point:
            ref = sum(f[j].double() for f in flat) / 4
            tol = {torch.float16: 1e-3, torch.bfloat16: 1e-2}.get(t.dtype, 1e-4)
            assert (t.double() - ref).abs().max() <= tol
        else:
            assert torch.equal(t, torch.div(2 * sum(f[j] for f in flat) + 4, 8, rounding_mode="floor"))


@pytest.mark.parametrize(
    "weights, match",
    [
        ([1, 2], "2 entries"),
        ([1, -1, 1, 1, 1, 1], "client 1"),
        ([1, float("nan"), 1, 1, 1, 1], "client 1"),
        ([0] * 6, "sum to 0"),
        ("abcdef", "sequence"),
        ([1, "x", 1, 1, 1, 1], "numbers"),
    ],
)
def test_bad_weights(updates, weights, match):
    with pytest.raises(InputError, match=match):
        securefl.Plaintext().aggregate(updates, weights=weights)


def test_bad_updates_name_client_and_tensor(updates):
    bad = [dict(u) for u in updates]
    bad[3]["fc.weight"] = bad[3]["fc.weight"].clone()
    bad[3]["fc.weight"][0, 0] = float("nan")
    with pytest.raises(InputError, match=r"client 3: tensor 'fc.weight'"):
        securefl.Plaintext().aggregate(bad)
    bad[3]["fc.weight"][0, 0] = float("inf")
    with pytest.raises(InputError, match=r"client 3: tensor 'fc.weight'"):
        securefl.Plaintext().aggregate(bad)


def test_bad_dropped(updates):
    with pytest.raises(InputError, match="stage"):
        securefl.Plaintext().aggregate(updates, dropped={0: "unmasking"})
    with pytest.raises(InputError, match="index"):
        securefl.Plaintext().aggregate(updates, dropped=[6])


def test_structure_mismatch(updates):
    other = [dict(u) for u in updates]
    del other[2]["fc.bias"]
    with pytest.raises(StructureError, match="client 2"):
        securefl.Plaintext().aggregate(other)


def test_report_counts_bytes_and_serialises(updates):
    res = securefl.Plaintext(seed=0).aggregate(updates)
    rep = res.report
    assert rep.scheme == "plaintext" and rep.clients == 6 and rep.survivors == list(range(6))
    assert rep.bytes_received["server"] == sum(rep.bytes_sent[f"client/{i}"] for i in range(6))
    n_values = sum(v.numel() for v in updates[0].values()) + 1
    assert rep.bytes_sent["client/0"] == wire.PARTY_HEADER_SIZE + 9 + 4 * n_values  # 32-bit ring
    assert set(rep.seconds) == {"upload", "decode"}
    assert rep.params["ring_bits"] == 32
    json.dumps(rep.to_dict())


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
