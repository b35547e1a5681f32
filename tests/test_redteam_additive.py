"""Red team: AdditiveSharing against a malicious leader (alone or with K-2 helpers), lying clients, replays,
restarts and malformed messages.

The promise (AdditiveSharing.threat_model and docstring): a malicious leader alone, or any K-1
aggregators actively colluding, learns only sums of >= min_clients authenticated clients that every
honest helper endorsed, one set per round. Each test asserts the SAFE outcome.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from securefl.errors import ProtocolError
from securefl.mpc.additive import AdditiveSharing
from securefl.mpc.additive.policy import MACED_ENVELOPE_BYTES, SIGNED_KEY_BYTES
from securefl.wire import LEADER, Channel, Kind, PartyId, peek

from .redteam_harness import (
    Fed,
    answers_once,
    escapes,
    json_variants,
    mutations,
    non_bytes_escapes,
    only_securefl_errors,
)

cid, hid = PartyId.client, PartyId.helper


def _fed(k: int = 3, n: int = 6, **changes) -> Fed:
    return Fed(AdditiveSharing(num_aggregators=k), n=n, m=6, **changes)


def _to(fed: Fed, coord, stage: str, skip=()):
    """Drive an honest round until the leader is about to send `stage`'s messages; return that outbox."""
    outbox = coord.start()
    while coord.stage != stage:
        outbox = coord.step(fed.deliver(outbox, skip))
    return outbox


def _leader_msg(fed: Fed, round_: int, kind: Kind, to: PartyId, *parts, session: bytes | None = None) -> bytes:
    w = Channel(LEADER, session or fed.session, round_).write(kind, to)
    for p in parts:
        w = w.array(p) if isinstance(p, np.ndarray) else w.raw(p)
    return w.finish()


def _ids(*c) -> np.ndarray:
    return np.array(c, np.uint32)


# ------------------------------------------------------------------------------ the accepted set


def test_helpers_refuse_an_accepted_set_below_the_minimum_batch():
    fed = _fed()
    coord = fed.coordinator()
    _to(fed, coord, "accept")
    b = coord.policy.min_batch
    for size in (1, b - 1):
        for j in (1, 2):
            with pytest.raises(ProtocolError):
                fed.parties[hid(j)].handle(_leader_msg(fed, coord._ch.round, Kind.ADD_ACCEPT, hid(j),
                                                       _ids(*range(size))))


def test_equivocated_accepted_sets_get_no_partial_sum():
    """The leader shows helper 1 the set {0,1,2} and helper 2 the set {0,1,3} (both >= min_batch): each signs
    its own, and neither releases a partial sum against the other's signature."""
    fed = _fed()
    coord = fed.coordinator()
    _to(fed, coord, "accept")
    r = coord._ch.round
    s1, s2 = _ids(0, 1, 2), _ids(0, 1, 3)
    e1 = fed.parties[hid(1)].handle(_leader_msg(fed, r, Kind.ADD_ACCEPT, hid(1), s1))
    e2 = fed.parties[hid(2)].handle(_leader_msg(fed, r, Kind.ADD_ACCEPT, hid(2), s2))
    sig1, sig2 = e1[peek(e1).size :], e2[peek(e2).size :]
    for j in (1, 2):
        with pytest.raises(ProtocolError):
            fed.parties[hid(j)].handle(_leader_msg(fed, r, Kind.ADD_ENDORSEMENTS, hid(j), sig1 + sig2))


def test_leader_with_k_minus_2_helpers_cannot_shrink_the_honest_helpers_set():
    """K = 3: the leader and helper 2 collude (K-1 aggregators). Helper 2 signs anything; helper 1 still
    refuses a set below the minimum, and one naming a client whose envelope it never opened."""
    fed = _fed()
    coord = fed.coordinator()
    _to(fed, coord, "accept", skip={cid(5)})  # client 5 never uploads: helper 1 opened nothing of it
    r = coord._ch.round
    with pytest.raises(ProtocolError):
        fed.parties[hid(1)].handle(_leader_msg(fed, r, Kind.ADD_ACCEPT, hid(1), _ids(0, 5)))
    with pytest.raises(ProtocolError):
        fed.parties[hid(1)].handle(_leader_msg(fed, r, Kind.ADD_ACCEPT, hid(1), _ids(0, 1, 5)))


def test_one_partial_sum_per_round_even_after_a_restart():
    fed = _fed()
    coord = fed.coordinator()
    outbox = _to(fed, coord, "sum")
    partials = fed.deliver(outbox)
    assert partials
    for j in (1, 2):
        h = fed.restore(hid(j), fed.parties[hid(j)].state_dict())
        for kind, body in ((Kind.ADD_ENDORSEMENTS, outbox[hid(j)][peek(outbox[hid(j)]).size :]),
                           (Kind.ADD_ACCEPT, _ids(0, 1, 2).tobytes()),
                           (Kind.ADD_FORWARD, b"")):
            with pytest.raises(ProtocolError):
                h.handle(_leader_msg(fed, coord._ch.round, kind, hid(j), body))


def test_restarted_helper_does_not_endorse_a_second_set():
    fed = _fed()
    coord = fed.coordinator()
    accept = _to(fed, coord, "accept")
    fed.parties[hid(1)].handle(accept[hid(1)])  # endorses the honest set
    h = fed.restore(hid(1), fed.parties[hid(1)].state_dict())
    with pytest.raises(ProtocolError):
        h.handle(_leader_msg(fed, coord._ch.round, Kind.ADD_ACCEPT, hid(1), _ids(0, 1, 2)))


# ------------------------------------------------------------------------------ keys, envelopes, replays


def test_clients_refuse_substituted_replayed_or_swapped_helper_keys():
    fed = _fed()
    first = fed.coordinator()
    old = _to(fed, first, "upload")[cid(0)]
    second = fed.coordinator()
    new = _to(fed, second, "upload")[cid(0)]
    head = peek(new).size
    fp = new[head : head + 32]
    keys_new, keys_old = new[head + 32 :], old[peek(old).size + 32 :]
    r = second._ch.round
    cases = {
        "round 1's signed keys in round 2": keys_old,
        "helper keys swapped": keys_new[SIGNED_KEY_BYTES:] + keys_new[:SIGNED_KEY_BYTES],
        "a key of the leader's own": bytes(32) + keys_new[32:],
    }
    for what, body in cases.items():
        with pytest.raises(ProtocolError):
            fed.client(0).handle(_leader_msg(fed, r, Kind.ADD_REQUEST, cid(0), fp, body), fed.source(cid(0)))
        assert what
    fed.client(0).handle(new, fed.source(cid(0)))
    with pytest.raises(ProtocolError):  # round 1's request itself, after round 2 began for this client
        fed.client(0).handle(old, fed.source(cid(0)))


def test_client_answers_one_request_per_round_even_after_a_restart():
    fed = _fed()
    coord = fed.coordinator()
    answers_once(fed, 0, _to(fed, coord, "upload")[cid(0)])


def test_envelopes_cannot_be_moved_between_clients_or_rounds():
    """The leader forwards client 1's envelope as client 0's, or round 1's envelopes in round 2: no seed is opened
    (the helper rejects them), so no such client can enter the accepted set."""
    fed = _fed()
    first = fed.coordinator()
    fwd1 = _to(fed, first, "forward")[hid(1)]
    second = fed.coordinator()
    fwd2 = _to(fed, second, "forward")[hid(1)]
    r = second._ch.round
    ch = Channel(LEADER, fed.session, r)

    def body(msg_, rnd):
        rd = Channel(hid(1), fed.session, rnd).read(msg_, Kind.ADD_FORWARD, LEADER)
        ids = rd.array(np.uint32)
        return ids, rd.raw(ids.size * MACED_ENVELOPE_BYTES)

    ids2, env2 = body(fwd2, r)
    ids1, env1 = body(fwd1, first._ch.round)
    e = MACED_ENVELOPE_BYTES
    swapped = env2[e : 2 * e] + env2[:e] + env2[2 * e :]
    for envelopes in (swapped, env1):
        h = fed.agg.party(fed.config, fed.ids[hid(1)], fed.parties[hid(1)].state_dict())
        verdicts = h.handle(ch.write(Kind.ADD_FORWARD, hid(1)).array(ids2).raw(envelopes).finish())
        rv = Channel(LEADER, fed.session, r).read(verdicts, Kind.ADD_VERDICTS, hid(1))
        status = rv.array(np.uint8, ids2.size)
        moved = [0, 1] if envelopes is swapped else list(range(ids2.size))
        assert status[moved].all(), "a moved envelope was opened"
        with pytest.raises(ProtocolError):
            h.handle(_leader_msg(fed, r, Kind.ADD_ACCEPT, hid(1), _ids(*moved)))
    assert ids1.size


def test_old_round_setup_is_refused_after_a_restart():
    fed = _fed()
    first, seen = fed.coordinator(), {}
    fed.run(first, tamper=lambda stage, out: seen.setdefault(stage, out))
    fed.run(fed.coordinator())
    h = fed.restore(hid(1), fed.parties[hid(1)].state_dict())
    with pytest.raises(ProtocolError):
        h.handle(seen["setup"][hid(1)])


# ------------------------------------------------------------------------------ malformed messages


@pytest.mark.parametrize("stage", ["setup", "forward", "accept", "sum"])
def test_helper_decoders_raise_only_securefl_errors(stage):
    fed = _fed()
    coord = fed.coordinator()
    outbox = _to(fed, coord, stage)
    saved = fed.parties[hid(1)].state_dict()
    good = outbox[hid(1)]
    rng = np.random.default_rng(len(stage))
    for bad in mutations(good, rng, 40) + mutations(good, rng, 40, protect=peek(good).size):
        h = fed.agg.party(fed.config, fed.ids[hid(1)], saved)
        only_securefl_errors(lambda h=h, b=bad: h.handle(b))


def test_client_decoder_raises_only_securefl_errors():
    fed = _fed()
    coord = fed.coordinator()
    good = _to(fed, coord, "upload")[cid(0)]
    saved = fed.client(0).state_dict()
    rng = np.random.default_rng(9)
    for bad in mutations(good, rng, 40) + mutations(good, rng, 40, protect=peek(good).size):
        c = fed.agg.party(fed.config, fed.ids[cid(0)], saved)
        only_securefl_errors(lambda c=c, b=bad: c.handle(b, fed.source(cid(0))))


@pytest.mark.parametrize("stage", ["setup", "upload", "forward", "accept", "sum"])
def test_leader_decoders_raise_only_securefl_errors(stage):
    """Malformed replies of a client or helper: refused with a securefl error (a client is excluded), no crash."""
    fed = _fed()
    who = cid(1) if stage == "upload" else hid(1)
    rng = np.random.default_rng(20 + len(stage))
    for attempt in range(20):  # the leader holds views of its messages (no deep copy): a fresh round each time
        coord = fed.coordinator()
        replies = fed.deliver(_to(fed, coord, stage))
        bad = mutations(replies[who], rng, 1, protect=peek(replies[who]).size)[7 if attempt > 6 else attempt]
        only_securefl_errors(lambda c=coord, b=bad, r=replies: c.step({**r, who: b}))


@pytest.mark.parametrize("who", ["helper", "client"])
def test_saved_state_decoders_raise_only_securefl_errors(who):
    fed = _fed()
    coord = fed.coordinator()
    _to(fed, coord, "accept")
    pid = hid(1) if who == "helper" else cid(0)
    good = json.loads(fed.parties[pid].state_dict())
    found = escapes(lambda b: fed.agg.party(fed.config, fed.ids[pid], b), json_variants(good))
    assert not found, f"built-in exceptions escape the AdditiveSharing {who} state decoder: {found}"


def test_parties_refuse_a_message_that_is_not_bytes():
    fed = _fed()
    found = non_bytes_escapes(lambda j: fed.parties[hid(1)].handle(j))
    found |= {f"client {k}": v for k, v in non_bytes_escapes(lambda j: fed.client(0).handle(j)).items()}
    assert not found, f"AdditiveSharing parties: {found}"


def test_honest_round_still_exact():
    fed = _fed()
    totals = fed.run(fed.coordinator())
    assert np.allclose(totals.floats, fed.ring(totals.included))
