"""AdditiveSharing: other K, the minimum batch, exclusion of bad envelopes, failing helpers, malformed messages, party
state, privacy of views. (The generic contract for K = 3: tests/test_conformance.py.)"""

from __future__ import annotations

import dataclasses
import functools
import json
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from securefl import crypto, wire
from securefl.crypto.prg import Expander, stream_key
from securefl.encoding import RoundCodec
from securefl.errors import AggregatorError, ConfigError, DropoutError, ProtocolError
from securefl.keys import Identity
from securefl.mpc.additive import AdditiveSharing, Client, Helper, Leader
from securefl.mpc.additive.policy import ENVELOPE_BYTES, LABEL_SEAL, LABEL_SHARE, MACED_ENVELOPE_BYTES
from securefl.protocol import run_round
from securefl.session import resolve_min_clients
from securefl.simulation import Simulation
from securefl.wire import LEADER, PARTY_HEADER_SIZE, Kind, PartyId
from tests.additive_parties import H1, H2, Deployment, client, upload_parts, with_header, with_parties
from tests.conftest import P_MIN, state_updates
from tests.reference import assert_close

WEIGHTS = [0.5, 0.0, 3.25, 1.0, 7.0, 2.0]


# --- exactness through the public API ---------------------------------------------------------


@pytest.mark.parametrize("k", [2, 5])  # K = 3 (the registry's): tests/test_conformance.py
def test_other_numbers_of_aggregators_match_reference(updates, k):
    res = AdditiveSharing(num_aggregators=k, seed=3).aggregate(updates, weights=WEIGHTS)
    assert_close(res, updates, WEIGHTS, range(6), clip=8.0)
    p = res.report.params
    assert p["num_aggregators"] == k and p["rejected"] == {} and p["min_clients"] == 3 and p["round"] == 1


@pytest.mark.parametrize("dropped", [list(range(6)), [0, 1, 2, 3]])
def test_fewer_survivors_than_the_minimum_batch_raise_dropout_error(updates, dropped):
    with pytest.raises(DropoutError, match="below the minimum batch of 3"):
        AdditiveSharing(num_aggregators=2).aggregate(updates, dropped=dropped)


def test_64_bit_ring_matches_reference():
    ups = state_updates(4, seed=5)
    res = AdditiveSharing(num_aggregators=3, frac_bits=40, seed=0).aggregate(ups, weights=[1, 2, 3, 4])
    assert res.report.params["ring_bits"] == 64
    assert_close(res, ups, [1, 2, 3, 4], range(4), clip=8.0, tols=(1e-6, 1e-5))  # float32 output rounding


@pytest.mark.parametrize("k", [1, 0, -3, True, 2.5, "3", None])
def test_num_aggregators_must_be_an_integer_at_least_two(k):
    with pytest.raises(ConfigError, match="num_aggregators"):
        AdditiveSharing(num_aggregators=k)


def test_message_sizes_and_phases(updates):
    rep = AdditiveSharing(num_aggregators=3, seed=0).aggregate(updates).report
    length = sum(v.numel() for v in updates[0].values()) + 1
    upload = PARTY_HEADER_SIZE + 9 + 4 * length + 2 * MACED_ENVELOPE_BYTES
    assert rep.bytes_sent["client/0"] == upload  # one ring vector and K-1 small MAC'd envelopes
    assert rep.bytes_received["client/0"] == PARTY_HEADER_SIZE + 32 + 2 * (32 + 64)  # fingerprint, signed keys
    assert rep.bytes_received["helper/1"] < 2000  # helpers never receive a full vector
    assert set(rep.seconds) == {"setup", "upload", "forward", "accept", "sum", "decode"}


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


# --- the minimum batch --------------------------------------------------------------------------


@pytest.mark.parametrize("spec, n, want", [(None, 6, 3), (None, 2, 2), (None, 101, 51), (0.1, 100, 10),
                                           (0.01, 100, 2), (1.0, 7, 7), (4, 10, 4), (2, 2, 2)])
def test_minimum_batch_policy(spec, n, want):
    assert resolve_min_clients(n, spec) == want


@pytest.mark.parametrize("spec, n", [(1, 5), (0, 5), (6, 5), (0.0, 5), (1.5, 5), (-0.5, 5), (True, 5), ("3", 5),
                                     (None, 1)])
def test_minimum_batch_policy_refuses_what_cannot_protect_anyone(spec, n):
    with pytest.raises(ConfigError, match="min"):
        resolve_min_clients(n, spec)


def test_minimum_batch_comes_from_each_partys_configuration():
    with pytest.raises(ConfigError, match="min_clients"):
        AdditiveSharing(min_clients=1)
    with pytest.raises(ConfigError, match="minimum batch of 2 clients cannot be met by 1"):
        AdditiveSharing().aggregate(state_updates(1))
    with pytest.raises(ConfigError, match="minimum batch of 7 clients cannot be met by 6"):
        Deployment(n=6, min_clients=7)
    dep = Deployment(n=6, min_clients=4)
    sim = Simulation("additive", 6, AdditiveSharing.stages, "upload", [0, 1, 2])
    with pytest.raises(DropoutError, match="3 clients' inputs arrived, below the minimum batch of 4"):
        run_round(dep.begin().leader, dep.parties, sim, lambda i: (dep.ups[i], 1.0))
    sim = Simulation("additive", 6, AdditiveSharing.stages, "upload", [0, 1])
    totals = run_round(dep.begin().leader, dep.parties, sim, lambda i: (dep.ups[i], 1.0))
    assert totals.included == [2, 3, 4, 5] and totals.params["min_clients"] == 4
    with pytest.raises(ConfigError, match="asking 3 clients cannot meet the minimum batch of 4"):
        dep.begin(clients=[0, 1, 2])


def test_minimum_batch_through_the_api(updates):
    with pytest.raises(DropoutError, match="below the minimum batch of 4"):
        AdditiveSharing(min_clients=4, seed=0).aggregate(updates, dropped=[0, 1, 2])


# --- the parties, driven by hand ------------------------------------------------------------------


def test_parties_by_hand_give_the_exact_ring_sum(monkeypatch):
    encoded: list[np.ndarray] = []
    encode = RoundCodec.encode
    monkeypatch.setattr(RoundCodec, "encode", lambda *a: (lambda out: encoded.append(out[0].copy()) or out)(encode(*a)))
    dep = Deployment(n=4, k=4)
    for round_ in (1, 2):  # the same long-lived parties, two rounds
        rnd = dep.begin()
        assert rnd.stage == "setup" and set(rnd.outbox) == set(dep.helpers)
        assert set(rnd.step()) == {client(i) for i in range(4)} and rnd.stage == rnd.leader.input_stage == "upload"
        totals = rnd.finish()
        codec = rnd.leader.policy.codec
        assert np.array_equal(rnd.leader._acc, sum(encoded[-4:]))  # exactly the ring sum of the four encodings
        assert totals.weight == pytest.approx(4.0) and totals.included == [0, 1, 2, 3]
        reference = sum(u.double().numpy() for u in dep.ups)
        assert np.abs(totals.floats - reference).max() <= codec.fixed.sum_error_bound(4)
        assert rnd.leader.rejected == {} and dep.round == round_


def test_the_leader_asks_only_the_clients_it_names():
    dep = Deployment(n=5, min_clients=2)
    rnd = dep.begin(clients=[4, 1, 1])
    rnd.step()
    assert set(rnd.outbox) == {client(1), client(4)}
    assert rnd.finish().included == [1, 4]
    with pytest.raises(ConfigError, match="indices in"):
        dep.begin(clients=[0, 5])


def test_party_construction_checks_its_own_configuration():
    dep = Deployment(n=3, k=3)
    me = dep.ids[client(0)]
    for change, match in [({"scheme": "plaintext"}, "scheme"), ({"options": {}}, "num_aggregators"),
                          ({"options": {"num_aggregators": True}}, "num_aggregators"),
                          ({"options": {"num_aggregators": 4}}, "lists 2 helpers")]:
        with pytest.raises(ConfigError, match=match):
            AdditiveSharing.party(dataclasses.replace(dep.config, **change), me)
    with pytest.raises(ConfigError, match="client/0: its identity key is not the one the directory pins"):
        AdditiveSharing.party(dep.config, Identity.generate("client/0"))
    with pytest.raises(ConfigError, match="client/3: its identity key is not the one"):  # not in the directory
        AdditiveSharing.party(dep.config, Identity.generate("client/3"))
    with pytest.raises(ConfigError, match="parties are clients and helpers"):
        AdditiveSharing.party(dep.config, Identity.generate("keyholder"))
    with pytest.raises(ConfigError, match="needs its own"):
        Client(dep.config, dep.ids[H1])
    assert isinstance(AdditiveSharing.party(dep.config, dep.ids[H2]), Helper)
    agg = AdditiveSharing(num_aggregators=3, min_clients=0.8)
    assert agg.options() == {"num_aggregators": 3} and agg.roles() == (2, False) and agg.min_clients_for(10) == 8


def test_missing_or_failing_helper_ends_the_round():
    dep = Deployment()
    rnd = dep.begin()
    with pytest.raises(AggregatorError, match="no reply from helper/2 at stage 'setup'"):
        rnd.step(skip=[H2])
    rnd = dep.begin().until("sum")
    with pytest.raises(AggregatorError, match="no reply from helper/1 at stage 'sum'"):
        rnd.step(skip=[H1])
    with pytest.raises(AggregatorError, match="stopped at stage 'sum'"):
        rnd.leader.result()

    class Failing(Helper):
        def handle(self, message, update=None):
            if wire.peek(message).kind == Kind.ADD_ACCEPT and self.id == H2:
                raise RuntimeError("disk full")
            return super().handle(message, update)

    class ShortPartial(Helper):
        def handle(self, message, update=None):
            out = super().handle(message, update)
            return out[:-4] if wire.peek(message).kind == Kind.ADD_ENDORSEMENTS else out

    with pytest.raises(AggregatorError, match="helper/2 failed: RuntimeError: disk full"):
        with_parties(helper=Failing)(num_aggregators=3, seed=0).aggregate(state_updates(6))
    with pytest.raises(ProtocolError, match="leader: add partial: truncated"):
        with_parties(helper=ShortPartial)(num_aggregators=3, seed=0).aggregate(state_updates(6))


def _tampering_client(victim: int, how: str) -> type[Client]:
    class Tampering(Client):
        def handle(self, message, update=None):
            msg = bytearray(super().handle(message, update))
            if self.id.index == victim:
                end, part = len(msg), MACED_ENVELOPE_BYTES
                if how == "flip_helper2":  # corrupt the envelope for helper 2 (the last one), keep its MAC
                    msg[end - part + 40] ^= 1
                elif how == "swap":  # MAC'd envelopes for helpers 1 and 2 exchanged: each is misaddressed
                    e1, e2 = msg[end - 2 * part : end - part], msg[end - part :]
                    msg[end - 2 * part :] = e2 + e1
            return bytes(msg)

    return Tampering


@pytest.mark.parametrize("how", ["flip_helper2", "swap"])
def test_bad_envelope_excludes_client_at_every_aggregator(updates, how):
    res = with_parties(client=_tampering_client(2, how))(num_aggregators=3, seed=4).aggregate(updates, WEIGHTS)
    # helper 1 opened client 2's seed in the "flip_helper2" case: a sum over different sets would be garbage
    assert_close(res, updates, WEIGHTS, [0, 1, 3, 4, 5], clip=8.0)
    reason = res.report.params["rejected"][2]
    assert "client 2" in reason and ("helper/2" if how == "flip_helper2" else "helper/1") in reason
    assert list(res.report.params["rejected"]) == [2]


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
    assert len(seeds) >= 12 and len(to_leader) == 6 + 4 * 2  # uploads; keys, verdicts, endorsements, partials
    assert not any(seed in p for seed in seeds for p in to_leader)


# --- party state ---------------------------------------------------------------------------------


def _restarted(dep: Deployment, party: PartyId) -> None:
    """Replace a party by a fresh object restored from its saved state (what a process restart does)."""
    dep.parties[party] = AdditiveSharing.party(dep.config, dep.ids[party], dep.parties[party].state_dict())


@pytest.mark.parametrize("stage", ["upload", "forward", "accept", "sum"])
def test_helper_restored_mid_round_finishes_the_round(stage):
    dep = Deployment(n=4, k=3)
    rnd = dep.begin().until(stage)
    saved = json.loads(dep.parties[H1].state_dict())["round"]
    assert saved["round"] == rnd.round and (saved["x25519"] is not None) == (stage in ("upload", "forward"))
    assert len(saved["keys"]) == (4 if stage in ("accept", "sum") else 0)
    _restarted(dep, H1)
    _restarted(dep, H2)
    totals = rnd.finish()
    assert totals.included == [0, 1, 2, 3]
    assert np.abs(totals.floats - sum(u.double().numpy() for u in dep.ups)).max() <= 4 * 2.0**-16
    assert json.loads(dep.parties[H1].state_dict())["round"] is None  # the round's secrets are gone once it is done


def test_restored_parties_keep_refusing_old_rounds():
    dep = Deployment()
    rnd = dep.begin()
    rnd.finish()
    for p in (H1, client(0)):
        _restarted(dep, p)
    with pytest.raises(ProtocolError, match="helper/1: round 1 of this session is not after round 1"):
        dep.parties[H1].handle(rnd.sent["setup"][H1])
    with pytest.raises(ProtocolError, match="client/0: round 1 of this session is not after round 1"):
        dep.parties[client(0)].handle(rnd.sent["upload"][client(0)], lambda: (dep.ups[0], 1.0))
    assert dep.begin().finish().included == [0, 1, 2]  # and take part in the next one


def test_saved_state_is_checked():
    dep = Deployment()
    dep.begin().until("forward")
    good = json.loads(dep.parties[H1].state_dict())
    other = Deployment()
    with pytest.raises(ProtocolError, match="saved under another round configuration"):
        AdditiveSharing.party(other.config, other.ids[H1], dep.parties[H1].state_dict())
    with pytest.raises(ProtocolError, match="saved by 'helper/1', not by helper/2"):
        AdditiveSharing.party(dep.config, dep.ids[H2], dep.parties[H1].state_dict())
    bad_rounds = [{"stage": "done"}, {"round": -1}, {"round": True}, {"x25519": "AAAA"}, {"keys": {"7": "AA=="}},
                  {"keys": {"9": good["round"]["x25519"]}}, {"accepted": [0, 0]}, {"session": "zz"}, {"keys": []},
                  {"stage": "opened"}, {"x25519": None}, {"round": 2}, {"accepted": [2**70]}, {"stage": "endorsed"}]
    for change in [{"format": "x"}, {"guard": {"00": -1}}, {"guard": []}, {"round": 5}]:
        with pytest.raises(ProtocolError, match="helper/1: saved state"):
            AdditiveSharing.party(dep.config, dep.ids[H1], json.dumps({**good, **change}).encode())
    for change in bad_rounds:
        with pytest.raises(ProtocolError, match="helper/1: saved state: malformed round state"):
            AdditiveSharing.party(dep.config, dep.ids[H1], json.dumps({**good, "round": {**good["round"], **change}})
                                  .encode())
    for junk in [b" ", b"\xff", b"[]", b"null"]:
        with pytest.raises(ProtocolError, match="client/0: saved state"):
            AdditiveSharing.party(dep.config, dep.ids[client(0)], junk)


# --- malformed messages ----------------------------------------------------------------------------


def _corruptions(msg: bytes, to: PartyId, round_bound: bool = True) -> list[bytes]:
    """Truncations, trailing bytes, and a wrong magic, version, kind, sender and receiver (and session and round,
    when the reader is bound to them)."""
    out = [msg[:-1], msg + b"\0", msg[:PARTY_HEADER_SIZE - 1], b"", b"XX" + msg[2:], msg[:2] + b"\x07" + msg[3:],
           msg[:3] + bytes([(msg[3] + 1) % 256]) + msg[4:],
           with_header(msg, receiver=PartyId.client(9) if to.role != wire.Role.CLIENT else H1),
           with_header(msg, sender=PartyId.helper(3) if to == LEADER else PartyId.client(0))]
    if round_bound:
        out += [with_header(msg, session=bytes(16)), with_header(msg, round_=int.from_bytes(msg[20:24], "little") + 1)]
    return out


def test_client_request_decoder():
    dep = Deployment()
    rnd = dep.begin()
    rnd.step()
    request = rnd.outbox[client(0)]
    ch = rnd.channel()
    body = request[PARTY_HEADER_SIZE:]
    bads = [*_corruptions(request, client(0)),
            ch.write(Kind.ADD_REQUEST, client(0)).raw(bytes(32)).raw(body[32:]).finish(),  # another configuration
            ch.write(Kind.ADD_REQUEST, client(0)).raw(body[:-96]).finish()]  # one helper key missing
    for bad in bads:
        with pytest.raises(ProtocolError, match="client/0"):
            dep.parties[client(0)].handle(bad, lambda: (dep.ups[0], 1.0))
    with pytest.raises(ProtocolError, match="client/0: asked for its input, but no update was supplied"):
        dep.parties[client(0)].handle(request)
    with pytest.raises(ProtocolError, match="client/1: round 1 of this session is not after round 1"):
        for _ in range(2):  # a client uploads once per round
            dep.parties[client(1)].handle(rnd.outbox[client(1)], lambda: (dep.ups[1], 1.0))


def test_helper_decoders_and_stage_order():
    dep = Deployment()
    rnd = dep.begin()
    h1 = dep.parties[H1]
    setup = rnd.outbox[H1]
    with pytest.raises(ProtocolError, match="helper/1: message kind ADD_FORWARD at stage 'idle', expected ADD_SETUP"):
        h1.handle(rnd.forward(H1, {}))
    other = dataclasses.replace(dep.config, clip=4.0)
    other_setup = rnd.channel().write(Kind.ADD_SETUP, H1).raw(other.fingerprint).finish()
    for bad in [*_corruptions(setup, H1, round_bound=False), other_setup]:
        with pytest.raises(ProtocolError, match="helper/1"):
            h1.handle(bad)
    rnd.step()
    rnd.step()  # the uploads are in: the forwards are out
    fwd = rnd.outbox[H1]
    envelope = fwd[-MACED_ENVELOPE_BYTES:]
    for bad in [*_corruptions(fwd, H1), rnd.accept([0, 1, 2]), rnd.forward(H1, {3: envelope}),
                rnd.forward(H1, {0: envelope[:-1]}), rnd.channel().write(Kind.ADD_FORWARD, H1)
                .array(np.array([1, 1], np.uint32)).raw(envelope * 2).finish(),
                rnd.channel().write(Kind.ADD_FORWARD, H1).array(np.array([2, 1], np.uint32)).raw(envelope * 2)
                .finish(), rnd.channel().write(Kind.ADD_FORWARD, H1).array(np.zeros(1, np.uint64)).raw(envelope)
                .finish()]:
        with pytest.raises(ProtocolError, match="helper/1"):
            h1.handle(bad)
    rnd.step()
    for bad in [*_corruptions(rnd.outbox[H1], H1), rnd.forward(H1, {0: envelope})]:
        with pytest.raises(ProtocolError, match="helper/1"):
            h1.handle(bad)
    rnd.step()
    bundle = rnd.outbox[H1]
    for bad in [*_corruptions(bundle, H1), rnd.channel().write(Kind.ADD_ENDORSEMENTS, H1).raw(bytes(64)).finish()]:
        with pytest.raises(ProtocolError, match="helper/1"):
            h1.handle(bad)
    # helper/1 does not read its own slot; helper/2's must verify
    h1.handle(rnd.channel().write(Kind.ADD_ENDORSEMENTS, H1).raw(bytes(64) + bundle[-64:]).finish())
    with pytest.raises(ProtocolError, match="helper/1: message kind ADD_ENDORSEMENTS at stage 'done'"):
        h1.handle(bundle)
    with pytest.raises(ProtocolError, match="helper/2: message kind 200"):
        dep.parties[H2].handle(bundle[:3] + bytes([200]) + bundle[4:])


def test_leader_refuses_malformed_helper_replies():
    dep = Deployment()
    for stage, kind in [("setup", Kind.ADD_KEY), ("forward", Kind.ADD_VERDICTS), ("accept", Kind.ADD_ENDORSE),
                        ("sum", Kind.ADD_PARTIAL)]:
        rnd = dep.begin().until(stage)
        good = rnd.deliver()
        reply = good[H1]
        ch = rnd.channel(H1)
        bads = _corruptions(reply, LEADER)
        if stage in ("setup", "accept"):  # a signature that does not verify; helper/2's signed reply as helper/1's
            bads += [reply[:-1] + bytes([reply[-1] ^ 1]), with_header(good[H2], sender=H1)]
        if stage == "forward":
            bads += [ch.write(kind, LEADER).array(np.array([0, 0, 2], np.uint8)).finish(),  # unknown status
                     ch.write(kind, LEADER).array(np.array([0, 1, 0], np.uint8)).finish(),  # rejected: no reason
                     ch.write(kind, LEADER).array(np.array([0, 1, 0], np.uint8)).blob(b"").finish(),
                     ch.write(kind, LEADER).array(np.array([0, 1, 0], np.uint8)).blob(b"x" * 513).finish(),
                     ch.write(kind, LEADER).array(np.zeros(2, np.uint8)).finish()]  # one verdict missing
        for bad in bads:
            with pytest.raises(ProtocolError, match="leader"):
                _leader_at(dep, rnd, stage).step({**good, H1: bad})
        with pytest.raises(ProtocolError, match="from client/0, which was not asked"):
            _leader_at(dep, rnd, stage).step({**good, client(0): reply})
        _leader_at(dep, rnd, stage).step(good)  # the valid replies pass


def _leader_at(dep: Deployment, rnd, stage: str) -> Leader:
    """A new leader of rnd's round brought to `stage` by replaying the replies rnd's leader took."""
    fresh = Leader(dep.config, rnd.session, rnd.round)
    fresh.start()
    while fresh.stage != stage:
        fresh.step(rnd.got[fresh.stage])
    return fresh


def test_leader_excludes_and_names_malformed_uploads():
    dep = Deployment(n=5, min_clients=2)
    rnd = dep.begin()
    rnd.step()
    good = rnd.deliver()
    vec, envs = upload_parts(good[client(0)], rnd.leader.policy.length)
    ch = rnd.channel(client(3))
    bad = {client(0): good[client(0)][:-1],
           client(1): with_header(good[client(1)], sender=client(2)),  # client/1 claims client/2's place
           client(3): ch.write(Kind.ADD_UPLOAD, LEADER).array(vec.astype(np.uint64)).raw(b"".join(envs)).finish()}
    forwards = rnd.step({**good, **bad})
    assert rnd.leader.rejected[0].startswith("leader: add upload: truncated")
    assert "sent by client/2, expected client/1" in rnd.leader.rejected[1]
    assert "dtype" in rnd.leader.rejected[3] and sorted(rnd.leader.rejected) == [0, 1, 3]
    assert wire.Reader(forwards[H1], Kind.ADD_FORWARD, rnd.session, rnd.round).array(np.uint32).tolist() == [2, 4]
    assert rnd.finish().included == [2, 4]
    rnd = dep.begin()
    rnd.step()
    with pytest.raises(DropoutError, match="1 clients' inputs arrived, below the minimum batch of 2"):
        rnd.step({client(4): rnd.deliver()[client(4)], client(0): b"junk"})


def test_verdicts_exclude_a_client_every_helper_must_open():
    dep = Deployment(n=4, min_clients=2)
    rnd = dep.begin().until("forward")
    replies = rnd.deliver()
    ch = rnd.channel(H2)
    replies[H2] = (ch.write(Kind.ADD_VERDICTS, LEADER).array(np.array([0, 1, 0, 1], np.uint8))
                   .blob(b"helper/2: client 1: bad").blob(b"helper/2: client 3: worse").finish())
    rnd.step(replies)
    assert rnd.leader.included == [0, 2] and rnd.leader.rejected == {1: "helper/2: client 1: bad",
                                                                       3: "helper/2: client 3: worse"}
    totals = rnd.finish()
    assert np.abs(totals.floats - (dep.ups[0] + dep.ups[2]).double().numpy()).max() <= 2 * 2.0**-16


@functools.cache
def _decoders() -> list[tuple[object, bytes, bool]]:
    """(decode, valid message, whether its header's session and round are checked) for every message a party
    reads; decode raises ProtocolError or returns. Helpers read from a state restored before the message; a
    setup may start any (session, round) the helper is not past, so its session and round are not checked."""
    dep = Deployment(n=2, k=3, m=3, min_clients=2)
    rnd = dep.begin()
    out = []
    for stage in ("setup", "upload", "forward", "accept", "sum"):
        saved = {p: dep.parties[p].state_dict() for p in dep.helpers}
        if stage == "upload":
            out.append((lambda m: AdditiveSharing.party(dep.config, dep.ids[client(0)]).handle(
                m, lambda: (dep.ups[0], 1.0)), rnd.outbox[client(0)], True))
        else:
            for p in dep.helpers:
                out.append((lambda m, p=p, s=saved[p]: AdditiveSharing.party(dep.config, dep.ids[p], s).handle(m),
                            rnd.outbox[p], stage != "setup"))
        replies = rnd.deliver()
        if stage == "upload":  # the leader reads each client's upload: a malformed one only excludes that client
            out.append((lambda m, r=replies: _upload_decoder(_leader_at(dep, rnd, "upload"), r, m),
                        replies[client(0)], True))
        else:  # and each helper's reply
            out.append((lambda m, s=stage, r=replies: _leader_at(dep, rnd, s).step({**r, H1: m}), replies[H1], True))
        rnd.step(replies)
    return out


def _upload_decoder(leader: Leader, replies: dict, upload: bytes) -> None:
    """The leader's reading of client/0's upload: ProtocolError (its reason) when it excludes client/0."""
    try:
        leader.step({**replies, client(0): upload})
    except DropoutError:  # client/0 excluded: one upload left, below the minimum batch of 2
        pass
    if 0 in leader.rejected:
        raise ProtocolError(leader.rejected[0])


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 10**6), st.integers(0, 255), st.integers(0, 10**6))
def test_decoders_raise_only_protocol_error(junk, pos, byte, cut):
    """Random bytes, a corrupted byte or a truncation of a valid message: ProtocolError, or a valid parse."""
    for decode, msg, bound in _decoders():
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
        at = pos % len(msg)
        if at < PARTY_HEADER_SIZE and corrupted != bytearray(msg) and (bound or not 4 <= at < 24):
            with pytest.raises(ProtocolError):  # magic, version, kind, session, round, sender, receiver: all checked
                decode(bytes(corrupted))


def test_every_decoder_accepts_its_valid_message():
    assert len(_decoders()) == 2 * 4 + 1 + 5  # both helpers at 4 stages, a client, the leader at its 5 stages
    for decode, msg, _ in _decoders():
        decode(msg)


# --- privacy: what any K-1 aggregators see does not depend on the inputs ---------------------------


def _views(inputs, weights, k: int, runs: int, monkeypatch, rng) -> tuple[list[dict[str, np.ndarray]], list[int]]:
    """Per round and client, the ring words each aggregator can decode from what it received (the masked
    vector for the leader, the expansion of its opened seed for a helper); and all message sizes."""
    monkeypatch.setattr(os, "urandom", lambda n: rng.bytes(n))  # deterministic seeds: a deterministic test
    send = Simulation.send
    sent: list[tuple[str, str, bytes]] = []
    helpers: dict[str, Helper] = {}

    class Recording(Helper):
        def handle(self, message, update=None):
            helpers[str(self.id)] = self
            out = super().handle(message, update)
            if wire.peek(message).kind == Kind.ADD_SETUP:
                self.round_sk, self.round_id = self._sk, self._round.id
            return out

    def record(sim, src, dst, payload):
        sent.append((src, dst, payload))
        return send(sim, src, dst, payload)

    monkeypatch.setattr(Simulation, "send", record)
    views, sizes = [], []
    for _ in range(runs):
        sent.clear()
        with_parties(helper=Recording)(num_aggregators=k, seed=0).aggregate(inputs, weights=weights)
        length = inputs[0].numel() + 1
        expander = Expander(length, np.uint32)
        per_client: dict[int, dict[str, np.ndarray]] = {}
        for src, dst, p in sent:
            sizes.append(len(p))
            if dst == "leader" and src.startswith("client/"):
                per_client.setdefault(int(src[7:]), {})["leader"] = upload_parts(p, length)[0]
            elif dst.startswith("helper/") and p[3] == Kind.ADD_FORWARD:
                h = helpers[dst]
                rd = wire.Reader(p, Kind.ADD_FORWARD, p[4:20], 1)
                ids = rd.array(np.uint32).tolist()
                for c in ids:
                    env = rd.raw(MACED_ENVELOPE_BYTES)[:ENVELOPE_BYTES]
                    seed = crypto.open_from(h.round_sk, env, LABEL_SEAL, h.round_id, c, h.id.index, who="test")
                    share = expander.expand(stream_key(seed, LABEL_SHARE, h.round_id, c, h.id.index)).copy()
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
        assert _chi2_uniform(a) > P_MIN and _chi2_uniform(b) > P_MIN, coalition
        assert stats.ks_2samp(a, b).pvalue > P_MIN, coalition
    # the test has power: all K together recover the encoded inputs, which are far from uniform
    everyone_a, everyone_b = _combined(view_a, parties), _combined(view_b, parties)
    assert _chi2_uniform(everyone_a) < 1e-12 and stats.ks_2samp(everyone_a, everyone_b).pvalue < 1e-12
