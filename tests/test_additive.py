"""AdditiveSharing: exactness, exclusion of bad envelopes, aggregator failures, malformed messages, privacy of views."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import securefl
from securefl import crypto, wire
from securefl.codec import FixedPoint, flatten_all
from securefl.crypto.prg import Expander, stream_key
from securefl.errors import AggregatorError, ConfigError, DropoutError, ProtocolError
from securefl.mpc import additive
from securefl.mpc.additive import (
    ENVELOPE_BYTES,
    KIND_ACCEPTED,
    KIND_FORWARD,
    KIND_KEY,
    KIND_PARTIAL,
    KIND_UPLOAD,
    KIND_VERDICT,
    LABEL_SEAL,
    LABEL_SHARE,
    AdditiveSharing,
    Client,
    Helper,
    Leader,
)
from securefl.simulation import Simulation
from tests.conftest import STRUCTURES, state_updates
from tests.reference import assert_close

WEIGHTS = [0.5, 0.0, 3.25, 1.0, 7.0, 2.0]


# --- exactness through the public API ---------------------------------------------------------


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("weights", [None, WEIGHTS])
def test_matches_reference_and_plaintext(updates, k, weights):
    res = AdditiveSharing(num_aggregators=k, seed=3).aggregate(updates, weights=weights)
    assert_close(res, updates, weights, range(6), clip=8.0)
    plain = securefl.Plaintext(seed=3).aggregate(updates, weights=weights)  # same rounding randomness
    for key in res.mean:
        assert torch.equal(res.mean[key], plain.mean[key]) and torch.equal(res.sum[key], plain.sum[key]), key
    assert res.report.params["num_aggregators"] == k and res.report.params["rejected"] == {}


@pytest.mark.parametrize("dropped", [[1, 4], {0: "upload", 5: "upload"}])
def test_dropped_clients_are_excluded(updates, dropped):
    res = AdditiveSharing(num_aggregators=3, seed=1).aggregate(updates, weights=WEIGHTS, dropped=dropped)
    gone = set(dropped)
    assert_close(res, updates, WEIGHTS, [i for i in range(6) if i not in gone], clip=8.0)
    assert res.report.dropped == {i: "upload" for i in gone}
    assert not any(f"client/{i}" in res.report.bytes_sent for i in gone)


def test_all_dropped_raises_dropout_error(updates):
    with pytest.raises(DropoutError):
        AdditiveSharing(num_aggregators=2).aggregate(updates, dropped=list(range(6)))


@pytest.mark.parametrize("structure", STRUCTURES)
def test_structures_match_plaintext(structure):
    g = torch.Generator().manual_seed(0)
    ups = [structure(g) for _ in range(4)]
    res = AdditiveSharing(num_aggregators=4, seed=2).aggregate(ups, weights=[1, 2, 3, 4], dropped=[2])
    plain = securefl.Plaintext(seed=2).aggregate(ups, weights=[1, 2, 3, 4], dropped=[2])
    got, want = (res.mean, plain.mean) if isinstance(res.mean, (list, tuple)) else ([res.mean], [plain.mean])
    assert type(res.mean) is type(ups[0]) and res.report.survivors == [0, 1, 3]
    for a, b in zip(got, want, strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)


def test_64_bit_ring_matches_reference():
    ups = state_updates(4, seed=5)
    res = AdditiveSharing(num_aggregators=3, frac_bits=40, seed=0).aggregate(ups, weights=[1, 2, 3, 4])
    plain = securefl.Plaintext(frac_bits=40, seed=0).aggregate(ups, weights=[1, 2, 3, 4])
    assert res.report.params["ring_bits"] == 64
    assert_close(res, ups, [1, 2, 3, 4], range(4), clip=8.0, tols=(1e-6, 1e-5))  # float32 output rounding
    assert all(torch.equal(res.sum[key], plain.sum[key]) for key in res.sum)


@pytest.mark.parametrize("k", [1, 0, -3, True, 2.5, "3", None])
def test_num_aggregators_must_be_an_integer_at_least_two(k):
    with pytest.raises(ConfigError, match="num_aggregators"):
        AdditiveSharing(num_aggregators=k)


def test_report_counts_every_party(updates):
    rep = AdditiveSharing(num_aggregators=3, seed=0).aggregate(updates).report
    parties = {"leader", "helper/1", "helper/2", *(f"client/{i}" for i in range(6))}
    assert set(rep.bytes_sent) == parties and set(rep.bytes_received) == parties
    assert set(rep.party_seconds) == parties and all(v > 0 for v in rep.party_seconds.values())
    assert sum(rep.bytes_sent.values()) == sum(rep.bytes_received.values())
    length = sum(v.numel() for v in updates[0].values()) + 1
    upload = wire.HEADER_SIZE + 9 + 4 * length + 2 * ENVELOPE_BYTES
    assert rep.bytes_sent["client/0"] == upload  # one ring vector and K-1 small envelopes
    assert rep.bytes_received["helper/1"] < 6 * 200  # helpers never receive a full vector from a client
    assert set(rep.seconds) == {"setup", "upload", "sum", "decode"}
    json.dumps(rep.to_dict())


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
@pytest.mark.parametrize("length, chunk", [(0, 4), (1, 4), (17, 3), (1000, 64), (70_000, 1 << 16)])
def test_chunked_share_accumulation_equals_the_full_keystream(dtype, length, chunk):
    """Clients subtract and helpers add shares chunk by chunk; both must be exactly PRG(key)."""
    key = os.urandom(32)
    words = Expander(length, dtype).expand(key).copy()
    acc = np.arange(length, dtype=dtype)
    exp = Expander(length, dtype, chunk=chunk)
    exp.add(acc, key)
    assert np.array_equal(acc, np.arange(length, dtype=dtype) + words)
    exp.sub(acc, key)
    exp.sub(acc, key)
    assert np.array_equal(acc, np.arange(length, dtype=dtype) - words)
    assert exp.bytes_expanded == 3 * length * np.dtype(dtype).itemsize


# --- bad envelopes and failing aggregators in a full round ------------------------------------


def _tampering_client(victim: int, how: str):
    class Tampering(Client):
        def upload(self) -> bytes:
            msg = bytearray(super().upload())
            if self.index == victim:
                end = len(msg)
                if how == "flip_helper2":  # corrupt the envelope sealed to helper 2 (the last one)
                    msg[end - 5] ^= 1
                elif how == "swap":  # envelopes for helpers 1 and 2 exchanged: each is misaddressed
                    e1, e2 = msg[end - 2 * ENVELOPE_BYTES : end - ENVELOPE_BYTES], msg[end - ENVELOPE_BYTES :]
                    msg[end - 2 * ENVELOPE_BYTES :] = e2 + e1
            return bytes(msg)

    return Tampering


@pytest.mark.parametrize("how", ["flip_helper2", "swap"])
def test_bad_envelope_excludes_client_at_every_aggregator(updates, monkeypatch, how):
    monkeypatch.setattr(additive, "Client", _tampering_client(2, how))
    res = AdditiveSharing(num_aggregators=3, seed=4).aggregate(updates, weights=WEIGHTS)
    # helper 1 opened client 2's seed in the "flip_helper2" case: a sum over different sets would be garbage
    assert_close(res, updates, WEIGHTS, [0, 1, 3, 4, 5], clip=8.0)
    reason = res.report.params["rejected"][2]
    assert "client 2" in reason and ("helper/2" if how == "flip_helper2" else "helper/1") in reason
    assert list(res.report.params["rejected"]) == [2]


class _HelperFailing(Helper):
    def receive_accepted(self, payload: bytes) -> bytes:
        if self.index == 2:
            raise RuntimeError("disk full")
        return super().receive_accepted(payload)


class _HelperShortPartial(Helper):
    def receive_accepted(self, payload: bytes) -> bytes:
        return super().receive_accepted(payload)[:-4]


class _HelperSilent(Helper):
    def receive_envelope(self, payload: bytes) -> bytes:
        super().receive_envelope(payload)
        return None  # type: ignore[return-value]


class _HelperBadKey(Helper):
    def announce_key(self) -> bytes:
        return super().announce_key()[:-1]


@pytest.mark.parametrize(
    "double, match",
    [
        (_HelperFailing, "helper/2 failed: disk full"),
        (_HelperShortPartial, "leader failed: .*partial sum"),
        (_HelperSilent, "helper/1 sent no message"),
    ],
)
def test_failing_aggregator_ends_round_with_aggregator_error(updates, monkeypatch, double, match):
    monkeypatch.setattr(additive, "Helper", double)
    with pytest.raises(AggregatorError, match=match):
        AdditiveSharing(num_aggregators=3, seed=0).aggregate(updates)


def test_bad_helper_key_is_refused_by_client(updates, monkeypatch):
    monkeypatch.setattr(additive, "Helper", _HelperBadKey)
    with pytest.raises(ProtocolError, match="client/0: helper key"):
        AdditiveSharing(num_aggregators=2).aggregate(updates)


def test_leader_never_sees_a_seed(updates, monkeypatch):
    seeds: list[bytes] = []
    real = os.urandom

    def spy(n: int) -> bytes:
        out = real(n)
        if n == 32:
            seeds.append(out)
        return out

    sent: list[tuple[str, str, bytes]] = []
    send = Simulation.send
    monkeypatch.setattr(os, "urandom", spy)
    monkeypatch.setattr(Simulation, "send", lambda self, s, d, p: sent.append((s, d, bytes(p))) or send(self, s, d, p))
    AdditiveSharing(num_aggregators=3).aggregate(updates)
    to_leader = [p for _, d, p in sent if d == "leader"]
    assert len(seeds) == 12 and len(to_leader) == 6 + 12 + 2
    assert not any(seed in p for seed in seeds for p in to_leader)


# --- the parties as bytes-in/bytes-out state machines -----------------------------------------


def _round(n: int = 3, k: int = 3, m: int = 5, round_: int = 0, session: bytes | None = None):
    """A round built by hand: keys exchanged, every client's upload ready."""
    session = session or os.urandom(16)
    g = torch.Generator().manual_seed(n + k + m)
    ups = [torch.randn(m, generator=g) for _ in range(n)]
    layout, flats = flatten_all(ups)
    fixed = FixedPoint.choose(n, clip=8.0, frac_bits=16, int_bound=2**16)
    length = fixed.length(layout)
    leader = Leader(n, k, length, fixed.dtype, session, round_)
    helpers = [Helper(j, n, length, fixed.dtype, session, round_) for j in range(1, k)]
    clients = [
        Client(i, flats[i], 1.0, fixed, layout, k, session, np.random.default_rng(i), round_) for i in range(n)
    ]
    for c in clients:
        for h in helpers:
            c.receive_key(h.announce_key())
    uploads = [c.upload() for c in clients]
    return SimpleNamespace(session=session, fixed=fixed, layout=layout, ups=ups, length=length, leader=leader,
                           helpers=helpers, clients=clients, uploads=uploads, n=n, k=k, round=round_)


def _drive(r, uploads=None) -> np.ndarray:
    """Run a hand-built round through to the leader's ring total."""
    for up in r.uploads if uploads is None else uploads:
        for h, fwd in zip(r.helpers, r.leader.receive_upload(up), strict=True):
            r.leader.receive_verdict(h.receive_envelope(fwd))
    accepted = r.leader.announce()
    for h in r.helpers:
        r.leader.receive_partial(h.receive_accepted(accepted))
    return r.leader.total()


@pytest.mark.parametrize("round_", [0, 7])
def test_parties_by_hand_give_the_sum(round_):
    r = _round(n=4, k=4, round_=round_)
    floats, _, weight = r.fixed.decode(_drive(r), r.layout)
    assert weight == pytest.approx(4.0)
    assert np.abs(floats - sum(u.double().numpy() for u in r.ups)).max() <= r.fixed.sum_error_bound(4)
    assert r.leader.included == [0, 1, 2, 3] and r.leader.rejected == {}


def _header(kind, r, sender, *, round_=None, session=None):
    return wire.Writer(kind, session or r.session, r.round if round_ is None else round_, sender)


def _corruptions(msg: bytes, kind: int, r) -> list[bytes]:
    """Truncated, wrong magic/version/kind, other session, other round, trailing bytes."""
    other_round = bytearray(msg)
    other_round[20:24] = (r.round + 1).to_bytes(4, "little")
    return [
        msg[:-1], msg[: wire.HEADER_SIZE - 1], msg + b"\x00", b"XX" + msg[2:],
        msg[:2] + bytes([wire.VERSION + 1]) + msg[3:], msg[:3] + bytes([kind + 1]) + msg[4:],
        msg[:4] + bytes(16) + msg[20:], bytes(other_round),
    ]


def test_client_key_decoder():
    r = _round()
    key = r.helpers[0].announce_key()
    for bad in [*_corruptions(key, KIND_KEY, r), _header(KIND_KEY, r, 3).raw(bytes(32)).finish(),
                _header(KIND_KEY, r, 0).raw(bytes(32)).finish()]:
        with pytest.raises(ProtocolError):
            r.clients[0].receive_key(bad)
    with pytest.raises(ProtocolError, match="repeated"):
        r.clients[0].receive_key(key)
    lonely = Client(0, flatten_all(r.ups)[1][0], 1.0, r.fixed, r.layout, 3, r.session, np.random.default_rng(0))
    lonely.receive_key(key)
    with pytest.raises(ProtocolError, match="no public key from helper/2"):
        lonely.upload()


def test_leader_upload_decoder():
    r = _round()
    up = r.uploads[0]
    vec = np.zeros(r.length, np.uint32)
    bad_len = _header(KIND_UPLOAD, r, 0).array(np.zeros(r.length + 1, np.uint32)).raw(bytes(2 * ENVELOPE_BYTES))
    bad_dtype = _header(KIND_UPLOAD, r, 0).array(vec.astype(np.uint64)).raw(bytes(2 * ENVELOPE_BYTES))
    one_env = _header(KIND_UPLOAD, r, 0).array(vec).raw(bytes(ENVELOPE_BYTES))
    stranger = _header(KIND_UPLOAD, r, 3).array(vec).raw(bytes(2 * ENVELOPE_BYTES))
    for bad in [*_corruptions(up, KIND_UPLOAD, r), bad_len.finish(), bad_dtype.finish(), one_env.finish(),
                stranger.finish()]:
        with pytest.raises(ProtocolError):
            r.leader.receive_upload(bad)
    r.leader.receive_upload(up)
    with pytest.raises(ProtocolError, match="repeated upload from client/0"):
        r.leader.receive_upload(up)


def _forward(r, client: int, envelope: bytes, sender: int = 0, round_=None) -> bytes:
    return _header(KIND_FORWARD, r, sender, round_=round_).u32(client).raw(envelope).finish()


def _verdict_of(msg: bytes, r) -> tuple[int, int, str]:
    rd = wire.Reader(msg, KIND_VERDICT, r.session, r.round)
    out = rd.u32(), rd.u8(), rd.blob(512).decode()
    rd.end()
    return out


def test_helper_envelope_decoder_and_misaddressed_envelopes():
    r = _round()
    fwd1, fwd2 = r.leader.receive_upload(r.uploads[0])
    h1 = r.helpers[0]
    for bad in [*_corruptions(fwd1, KIND_FORWARD, r), _forward(r, 0, bytes(ENVELOPE_BYTES), sender=1),
                _forward(r, 3, bytes(ENVELOPE_BYTES))]:
        with pytest.raises(ProtocolError):
            h1.receive_envelope(bad)
    env2 = fwd2[-ENVELOPE_BYTES:]
    assert _verdict_of(h1.receive_envelope(_forward(r, 1, env2)), r)[:2] == (1, 1)  # helper 2's envelope
    env_c0 = fwd1[-ENVELOPE_BYTES:]
    client, status, reason = _verdict_of(h1.receive_envelope(_forward(r, 2, env_c0)), r)  # client 0's, as 2
    assert (client, status) == (2, 1) and "helper/1: client 2" in reason
    assert _verdict_of(h1.receive_envelope(fwd1), r) == (0, 0, "")
    with pytest.raises(ProtocolError, match="repeated envelope of client 0"):
        h1.receive_envelope(fwd1)


def test_envelope_replayed_from_another_round_is_rejected():
    session = os.urandom(16)
    old, new = _round(round_=1, session=session), _round(round_=2, session=session)
    env = old.leader.receive_upload(old.uploads[0])[0][-ENVELOPE_BYTES:]
    h1 = new.helpers[0]
    h1._sk, h1._pub = old.helpers[0]._sk, old.helpers[0]._pub  # even with the same helper key
    with pytest.raises(ProtocolError, match="round 1, expected round 2"):
        h1.receive_envelope(old.leader.receive_upload(old.uploads[1])[0])
    client, status, reason = _verdict_of(h1.receive_envelope(_forward(new, 0, env)), new)
    assert (client, status) == (0, 1) and "client 0" in reason


def test_verdict_decoder_and_exclusion():
    r = _round()
    fwds = r.leader.receive_upload(r.uploads[0])
    v1 = r.helpers[0].receive_envelope(fwds[0])
    bads = [
        *_corruptions(v1, KIND_VERDICT, r),
        _header(KIND_VERDICT, r, 3).u32(0).u8(0).blob(b"").finish(),  # no helper 3
        _header(KIND_VERDICT, r, 1).u32(1).u8(0).blob(b"").finish(),  # client 1 has not uploaded
        _header(KIND_VERDICT, r, 1).u32(0).u8(2).blob(b"").finish(),  # unknown status
        _header(KIND_VERDICT, r, 1).u32(0).u8(0).blob(b"why").finish(),  # opened, with a reason
        _header(KIND_VERDICT, r, 1).u32(0).u8(1).blob(b"").finish(),  # rejected, no reason
        _header(KIND_VERDICT, r, 1).u32(0).u8(1).blob(b"x" * 513).finish(),  # reason too long
    ]
    for bad in bads:
        with pytest.raises(ProtocolError):
            r.leader.receive_verdict(bad)
    r.leader.receive_verdict(v1)
    with pytest.raises(ProtocolError, match="repeated verdict"):
        r.leader.receive_verdict(v1)
    with pytest.raises(AggregatorError, match="no verdict"):
        r.leader.announce()
    r.leader.receive_verdict(_header(KIND_VERDICT, r, 2).u32(0).u8(1).blob(b"helper/2: client 0: bad").finish())
    assert r.leader.rejected == {0: "helper/2: client 0: bad"} and r.leader.included == []


def test_accepted_set_decoder():
    r = _round()
    for up in r.uploads[:2]:
        for h, fwd in zip(r.helpers, r.leader.receive_upload(up), strict=True):
            r.leader.receive_verdict(h.receive_envelope(fwd))
    good = r.leader.announce()
    h1 = r.helpers[0]

    def ann(ids, sender=0):
        return _header(KIND_ACCEPTED, r, sender).array(np.array(ids, np.uint32)).finish()

    for bad in [*_corruptions(good, KIND_ACCEPTED, r), ann([0, 0]), ann([1, 0]), ann([0, 2]), ann([5]),
                ann([0, 1], sender=1), _header(KIND_ACCEPTED, r, 0).array(np.array([0, 1], np.uint64)).finish()]:
        with pytest.raises(ProtocolError):
            h1.receive_accepted(bad)
    h1.receive_accepted(ann([1]))  # a subset is fine: the others were excluded elsewhere
    with pytest.raises(ProtocolError, match="announced twice"):
        h1.receive_accepted(good)


def test_partial_decoder_and_missing_partials():
    r = _round()
    for up in r.uploads:
        for h, fwd in zip(r.helpers, r.leader.receive_upload(up), strict=True):
            r.leader.receive_verdict(h.receive_envelope(fwd))
    early = _header(KIND_PARTIAL, r, 1).array(np.zeros(r.length, np.uint32)).finish()
    with pytest.raises(ProtocolError, match="partial sum from helper/1"):
        r.leader.receive_partial(early)  # before the announcement
    accepted = r.leader.announce()
    p1 = r.helpers[0].receive_accepted(accepted)
    for bad in [*_corruptions(p1, KIND_PARTIAL, r), _header(KIND_PARTIAL, r, 3).array(np.zeros(r.length, np.uint32))
                .finish(), _header(KIND_PARTIAL, r, 1).array(np.zeros(r.length - 1, np.uint32)).finish()]:
        with pytest.raises(ProtocolError):
            r.leader.receive_partial(bad)
    r.leader.receive_partial(p1)
    with pytest.raises(ProtocolError, match="repeated"):
        r.leader.receive_partial(p1)
    with pytest.raises(AggregatorError, match="no partial sum from helper/2"):
        r.leader.total()


_R = _round(n=2, k=3, m=3)


def _decoders():
    """Fresh parties of _R and one valid message for each of their decoders."""
    r = _R
    leader = Leader(r.n, r.k, r.length, r.fixed.dtype, r.session)
    fwd = leader.receive_upload(r.uploads[0])[0]
    verdict = Helper(1, r.n, r.length, r.fixed.dtype, r.session).receive_envelope(fwd)  # a valid rejection
    helper = Helper(1, r.n, r.length, r.fixed.dtype, r.session)
    helper._sk, helper._pub = r.helpers[0]._sk, r.helpers[0]._pub
    client = Client(0, flatten_all(r.ups)[1][0], 1.0, r.fixed, r.layout, r.k, r.session, np.random.default_rng(0))
    return [
        (Leader(r.n, r.k, r.length, r.fixed.dtype, r.session).receive_upload, r.uploads[1]),
        (helper.receive_envelope, fwd),
        (leader.receive_verdict, verdict),
        (client.receive_key, r.helpers[1].announce_key()),
    ]


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 10**6), st.integers(0, 255), st.integers(0, 10**6))
def test_decoders_raise_only_protocol_error(junk, pos, byte, cut):
    """Random bytes, a corrupted byte or a truncation of a valid message: ProtocolError, or a valid parse."""
    for decode, msg in _decoders():
        corrupted = bytearray(msg)
        corrupted[pos % len(msg)] = byte
        with pytest.raises(ProtocolError):
            decode(junk)
        with pytest.raises(ProtocolError):
            decode(msg[: cut % len(msg)])
        try:
            decode(bytes(corrupted))
        except ProtocolError:
            pass
        if pos % len(msg) < wire.HEADER_SIZE - 4 and corrupted != bytearray(msg):
            with pytest.raises(ProtocolError):  # magic, version, kind, session and round are all checked
                decode(bytes(corrupted))


# --- privacy: what any K-1 aggregators see does not depend on the inputs -----------------------


def _views(inputs, weights, k: int, runs: int, monkeypatch, rng) -> tuple[list[dict[str, np.ndarray]], list[int]]:
    """Per round and client, the ring words each aggregator can decode from what it received (the
    masked vector for the leader, the expansion of its opened seed for a helper); and all message sizes."""
    monkeypatch.setattr(os, "urandom", lambda n: rng.bytes(n))  # deterministic seeds: a deterministic test
    send = Simulation.send
    sent: list[tuple[bytes, str, str, bytes]] = []
    helpers: list[Helper] = []

    class Recording(Helper):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            helpers.append(self)

    def record(sim, src, dst, payload):
        sent.append((sim.session, src, dst, payload))
        return send(sim, src, dst, payload)

    monkeypatch.setattr(additive, "Helper", Recording)
    monkeypatch.setattr(Simulation, "send", record)
    views, sizes = [], []
    for _ in range(runs):
        sent.clear()
        helpers.clear()
        AdditiveSharing(num_aggregators=k, seed=0).aggregate(inputs, weights=weights)
        length = inputs[0].numel() + 1
        expander = Expander(length, np.uint32)
        per_client: dict[int, dict[str, np.ndarray]] = {}
        for session, src, dst, p in sent:
            sizes.append(len(p))
            if dst == "leader" and src.startswith("client/"):
                vec = wire.Reader(p, KIND_UPLOAD, session, 0).array(np.uint32, length)
                per_client.setdefault(int(src[7:]), {})["leader"] = vec.copy()
            elif dst.startswith("helper/") and len(p) == wire.HEADER_SIZE + 4 + ENVELOPE_BYTES:  # a FORWARD
                h = helpers[int(dst[7:]) - 1]
                rd = wire.Reader(p, KIND_FORWARD, session, 0)
                c = rd.u32()
                seed = crypto.open_from(h._sk, rd.raw(ENVELOPE_BYTES), LABEL_SEAL, session, 0, c, h.index, who="test")
                share = expander.expand(stream_key(seed, LABEL_SHARE, session, 0, c, h.index)).copy()
                per_client.setdefault(c, {})[dst] = share
        views.extend(per_client.values())
    return views, sizes


def _combined(views: list[dict[str, np.ndarray]], parties: tuple[str, ...]) -> np.ndarray:
    """What a coalition can compute: the ring sum of its members' views, over all rounds and clients."""
    return np.concatenate([sum((v[p] for p in parties), np.zeros_like(v["leader"])) for v in views])


def _chi2_uniform(words: np.ndarray) -> float:
    """p-value of uniformity of the top 4 and the low 4 bits of 32-bit words (the smaller of the two)."""
    return min(stats.chisquare(np.bincount(b, minlength=16)).pvalue for b in (words >> 28, words & 15))


@pytest.mark.parametrize("k", [2, 3])
def test_views_of_any_k_minus_1_aggregators_are_independent_of_inputs(monkeypatch, k):
    m, n, runs = 300, 4, 6
    zeros = [torch.zeros(m) for _ in range(n)]
    g = torch.Generator().manual_seed(9)
    extreme = [torch.sign(torch.randn(m, generator=g)) * 7.5 for _ in range(n)]
    seeds = np.random.default_rng(2024)
    view_a, sizes_a = _views(zeros, None, k, runs, monkeypatch, seeds)
    view_b, sizes_b = _views(extreme, [1, 5, 10, 100], k, runs, monkeypatch, seeds)
    assert sizes_a == sizes_b  # every message has the same size whatever the inputs
    parties = ("leader", *(f"helper/{j}" for j in range(1, k)))
    coalitions = [tuple(p for p in parties if p != out) for out in parties]
    for coalition in [*((p,) for p in parties), *coalitions]:
        a, b = _combined(view_a, coalition), _combined(view_b, coalition)
        assert a.size == b.size == n * runs * (m + 1)
        assert _chi2_uniform(a) > 1e-3 and _chi2_uniform(b) > 1e-3, coalition
        assert stats.ks_2samp(a, b).pvalue > 1e-3, coalition
    # the test has power: all K together recover the encoded inputs, which are far from uniform
    everyone_a, everyone_b = _combined(view_a, parties), _combined(view_b, parties)
    assert _chi2_uniform(everyone_a) < 1e-12 and stats.ks_2samp(everyone_a, everyone_b).pvalue < 1e-12
