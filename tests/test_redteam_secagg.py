"""Red team: SecAgg / SecAgg+ against a malicious server, lying clients and malformed messages.

Every test asserts the SAFE outcome (refused with a securefl error, or nothing learnt), so a
successful attack is a failing test. Attacks go through the party classes (SecAgg.party /
SecAgg.coordinator) and the bytes they exchange; the malicious server is the honest Server object
driven out of order, with its messages rewritten, withheld or replayed.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from securefl.crypto import shamir
from securefl.errors import ConfigError, DropoutError, ProtocolError, SecureFLError
from securefl.mpc.secagg import SecAgg, Stage
from securefl.mpc.secagg import messages as msg
from securefl.mpc.secagg.params import SETUP, Policy
from securefl.wire import SERVER, Channel, Kind, PartyId, peek

from .redteam_harness import Fed, clone, escapes, json_variants, mutations, non_bytes_escapes, only_securefl_errors

cid = PartyId.client


def _mask(n, members):
    m = np.zeros(n, bool)
    m[list(members)] = True
    return m


def _rehead(data: bytes, kind: Kind, to: PartyId, session: bytes, round_: int) -> bytes:
    """A server message's body under a new header (the server writes headers; nothing authenticates them)."""
    body = data[peek(data).size :]
    return Channel(SERVER, session, round_).write(kind, to).raw(body).finish()


def _run_to(fed, coord, stage: Stage, skip=()):
    """Drive an honest round until the server is about to send `stage`'s requests; return that outbox."""
    outbox = coord.start()
    while coord.stage != stage.label:
        outbox = coord.step(fed.deliver(outbox, skip))
    return outbox


# ------------------------------------------------------------------------------ SecAgg+: the minimum batch


def _clique_and_far(policy: Policy, size: int, far: int):
    """A clique of `size` clients of the graph, and `far` clients adjacent to none of them."""
    g = policy.graph
    for u in range(policy.n):
        for v in g.neighbors(u):
            for w in g.neighbors(u):
                if v < w and v > u and w in g.neighbors(v):
                    clique = [u, int(v), int(w)][:size]
                    touched = set(clique) | {int(x) for c in clique for x in g.neighbors(c)}
                    outside = [x for x in range(policy.n) if x not in touched]
                    if len(outside) >= far:
                        return clique, outside[:far]
    raise AssertionError("no clique with enough far clients in this graph")


def _secagg_plus(min_clients=3, **changes):
    return Fed(SecAgg(threshold=3, neighbors=4), n=12, m=5, min_clients=min_clients, **changes)


def test_secagg_plus_refuses_a_minimum_batch_it_cannot_enforce():
    """A SecAgg+ client checks only its own neighbourhood, so a server can always release the sum of a t-clique
    (below): a configuration asking for a larger minimum batch is refused instead of promised."""
    with pytest.raises(ConfigError, match="cannot be enforced"):
        _secagg_plus(min_clients=6)


def test_secagg_plus_server_cannot_release_a_sum_below_the_minimum_batch():
    """RoundConfig.min_clients is 'the fewest clients whose inputs any party lets into a released sum' (for
    SecAgg+ at most t). A SecAgg+ server routes a t-clique C of the graph only each other's keys (each has
    t-1 = 2 peers: accepted), then names far-away clients as survivors too (never contacted). The members of C
    check only their own neighbourhood, sign, and reveal their b-shares: the server unmasks the exact sum of
    t = 3 clients, which must not be below the configured minimum batch."""
    fed = _secagg_plus()
    policy = Policy.from_config(fed.config)
    assert (policy.t, policy.min_batch) == (3, 3)
    clique, far = _clique_and_far(policy, policy.t, 3)
    coord = fed.coordinator(clients=clique)

    def attack():
        outbox = coord.start()
        for _ in range(3):  # advertise_keys, share_keys, masked_input: the honest server's own routing for C
            outbox = coord.step(fed.deliver(outbox))
            if coord.stage == Stage.MASKED_INPUT.label:
                break
        inputs = fed.deliver(outbox)  # the masked inputs of C: an honest server stops here (3 < min_batch)
        s = coord.state
        s.total = np.zeros(coord.codec.length, coord.codec.fixed.dtype)
        for _, r in coord._readers(inputs, Stage.MASKED_INPUT):
            s.total += r.array(coord.codec.fixed.dtype, coord.codec.length)
        s.survivors, s.gone = _mask(fed.n, clique), _mask(fed.n, [])
        s.bitmap = msg.bitmap(_mask(fed.n, clique + far))  # far clients "survived": nobody in C can tell
        signed = fed.deliver(coord._send(Stage.CONSISTENCY_CHECK, s.survivors, lambda w, u: w.raw(s.bitmap)))
        sigs = np.zeros((fed.n, msg.SIG), np.uint8)
        for u, r in coord._readers(signed, Stage.CONSISTENCY_CHECK):
            sigs[u] = np.frombuffer(r.raw(msg.SIG), np.uint8)
        requests = coord._requests(s.survivors, sigs)
        coord._stage = Stage.UNMASKING
        coord.step(fed.deliver(requests))
        return coord.result()

    outcome = only_securefl_errors(attack)
    if isinstance(outcome, SecureFLError):
        return
    assert len(clique) >= policy.min_batch or not np.allclose(outcome.floats, fed.ring(clique)), (
        f"SecAgg+ server unmasked the exact sum of clients {clique} alone ({len(clique)} inputs), below the "
        f"configured minimum batch of {policy.min_batch}: RoundConfig.min_clients is not enforced")


def test_secagg_plus_distributed_noise_covers_the_smallest_sum_a_server_can_release():
    """Distributed DP noise is sized for the minimum batch (RoundCodec.of(config, policy.min_batch)); the
    attack above releases a sum of only t clients, so each released update carries less noise than the
    mechanism and report promise (z clip per released sum)."""
    from securefl import dp

    mech = dp.DistributedGaussian(noise_multiplier=1.0, clip=1.0)
    fed = _secagg_plus(dp=mech.to_dict())
    policy = Policy.from_config(fed.config)
    codec = fed.client(0).codec
    promised = (mech.noise_multiplier * mech.clip * 2.0**codec.fixed.frac_bits) ** 2
    smallest = policy.t  # a clique of t clients: test_secagg_plus_server_cannot_release_a_sum_below_the_minimum_batch
    assert smallest * codec.client_variance >= promised * (1 - 1e-9), (
        f"a sum of {smallest} clients carries noise variance {smallest * codec.client_variance:.4g}, "
        f"{smallest * codec.client_variance / promised:.2f} of the promised (z clip 2^f)^2 = {promised:.4g}")


# ------------------------------------------------------------------------------ setup equivocation


def test_client_refuses_parameters_that_are_not_its_own():
    fed = Fed(SecAgg(threshold=0.6), n=6)
    coord = fed.coordinator()
    setup = coord.start()[cid(0)]
    header = peek(setup).size
    fields = list(SETUP.unpack_from(setup, header))
    for i in range(len(fields)):  # every field, one at a time: n, k, t, min batch, ring, length, flags
        forged = fields.copy()
        forged[i] = (forged[i] + 1) % (2 if i >= 6 else 2**31)
        data = setup[:header] + SETUP.pack(*forged) + setup[header + SETUP.size :]
        with pytest.raises(ProtocolError):
            fed.client(0).handle(data)
    # the right fields with a digest made for a different graph seed (a server grinding its own graph)
    other = dataclasses.replace(fed.config, setup_seed=bytes(32))
    theirs = SecAgg.coordinator(other, fed.session, coord.round).start()[cid(0)]
    with pytest.raises(ProtocolError):
        fed.client(0).handle(theirs)
    # and a setup of a configuration with a smaller minimum batch
    smaller = dataclasses.replace(fed.config, min_clients=0, options={**fed.config.options, "threshold": 4})
    with pytest.raises(ProtocolError):
        fed.client(0).handle(SecAgg.coordinator(smaller, fed.session, coord.round).start()[cid(0)])


def test_server_cannot_show_one_client_another_neighbourhood():
    """SecAgg+: a key list naming a non-neighbour, or fewer than t-1 peers, is refused."""
    fed = _secagg_plus(min_clients=0)
    policy = Policy.from_config(fed.config)
    coord = fed.coordinator()
    outbox = _run_to(fed, coord, Stage.SHARE_KEYS)
    body = outbox[cid(0)]
    r = Channel(cid(0), fed.session, coord.round).read(body, Kind.SECAGG_PEER_KEYS, SERVER)
    peers = msg.read_ids(r, fed.n)
    records = r.raw(peers.size * policy.record_bytes)
    stranger = next(v for v in range(1, fed.n) if v not in policy.graph.neighbors(0))
    all_records = {int(v): records[j * policy.record_bytes : (j + 1) * policy.record_bytes]
                   for j, v in enumerate(peers.tolist())}
    ch = Channel(SERVER, fed.session, coord.round)
    swapped = sorted(set(all_records) - {int(peers[0])} | {stranger})
    forged = ch.write(Kind.SECAGG_PEER_KEYS, cid(0)).array(msg.ids(np.array(swapped))).raw(
        b"".join(all_records.get(v, all_records[int(peers[0])]) for v in swapped)).finish()
    with pytest.raises(ProtocolError):
        fed.client(0).handle(forged)
    few = [int(peers[0])]  # one peer: 2 holders < t = 3
    with pytest.raises(ProtocolError):
        fed.client(0).handle(ch.write(Kind.SECAGG_PEER_KEYS, cid(0)).array(msg.ids(np.array(few)))
                             .raw(all_records[few[0]]).finish())


# ------------------------------------------------------------------------------ replays and freshness


def test_peer_key_records_of_an_earlier_round_are_refused():
    fed = Fed(SecAgg(threshold=0.6), n=5)
    first = fed.coordinator()
    old = _run_to(fed, first, Stage.SHARE_KEYS)[cid(0)]  # round 1's signed records of 0's peers
    second = fed.coordinator()
    _run_to(fed, second, Stage.SHARE_KEYS)
    with pytest.raises(ProtocolError):
        fed.client(0).handle(_rehead(old, Kind.SECAGG_PEER_KEYS, cid(0), fed.session, second.round))
    # the same records in a fresh session (the server picks session ids)
    other = bytes(16)
    third = fed.coordinator(session=other, round_=1)
    _run_to(fed, third, Stage.SHARE_KEYS)
    with pytest.raises(ProtocolError):
        fed.client(0).handle(_rehead(old, Kind.SECAGG_PEER_KEYS, cid(0), other, 1))


def test_old_rounds_and_replayed_setups_are_refused_even_after_a_restart():
    fed = Fed(SecAgg(threshold=0.6), n=5)
    first, seen = fed.coordinator(), {}
    fed.run(first, tamper=lambda stage, out: seen.setdefault(stage, out))
    setup1 = seen[Stage.ADVERTISE_KEYS.label]
    second = fed.coordinator()
    fed.run(second)
    for i in range(fed.n):  # every client restarts from its saved state
        fed.restore(cid(i), fed.client(i).state_dict())
    with pytest.raises(ProtocolError):
        fed.client(0).handle(setup1[cid(0)])  # round 1's setup, byte for byte
    again = fed.agg.coordinator(fed.config, fed.session, second.round)
    with pytest.raises(ProtocolError):
        fed.client(0).handle(again.start()[cid(0)])  # round 2 once more (a fresh setup of a spent round)


def test_survivor_signatures_of_an_earlier_round_do_not_verify():
    """Round 1's survivor-list signatures of 1..4, offered in round 2 where only client 0 signed."""
    fed = Fed(SecAgg(threshold=0.6), n=5)
    first = fed.coordinator()
    old = _run_to(fed, first, Stage.UNMASKING)[cid(0)]
    second = fed.coordinator()
    outbox = _run_to(fed, second, Stage.CONSISTENCY_CHECK)
    fed.client(0).handle(outbox[cid(0)])  # only 0 signs round 2's list (the same bitmap as round 1's)
    with pytest.raises(ProtocolError):
        fed.client(0).handle(_rehead(old, Kind.SECAGG_UNMASK_REQUEST, cid(0), fed.session, second.round))


def test_restarted_client_does_not_sign_a_second_survivor_list():
    """A client that signed a list, then restarted from its saved state, refuses to sign another one."""
    fed = Fed(SecAgg(threshold=0.6), n=5)
    coord = fed.coordinator()
    outbox = _run_to(fed, coord, Stage.CONSISTENCY_CHECK)
    fed.client(0).handle(outbox[cid(0)])
    fed.restore(cid(0), fed.client(0).state_dict())
    other = msg.bitmap(_mask(fed.n, [0, 1, 2, 3]))
    forged = Channel(SERVER, fed.session, coord.round).write(Kind.SECAGG_SURVIVORS, cid(0)).raw(other).finish()
    with pytest.raises(ProtocolError):
        fed.client(0).handle(forged)


# ------------------------------------------------------------------------------ both shares of one client


def _unmask_request(fed, round_, to, bitmap_members, signers, sigs, dropped):
    w = Channel(SERVER, fed.session, round_).write(Kind.SECAGG_UNMASK_REQUEST, cid(to))
    return (w.raw(msg.bitmap(_mask(fed.n, bitmap_members))).array(msg.ids(np.array(signers, np.int64)))
            .raw(b"".join(sigs)).array(msg.ids(np.array(dropped, np.int64))).finish())


def test_two_survivor_lists_without_colluders_yield_no_key_shares_of_a_survivor():
    """Complete graph, n=5, t=3 (min(t-1, 2t-h) = 1 colluder needed): with none, the server shows {0,1,2}
    the list "all survived" and {3,4} the list "0 dropped". 3 and 4 must refuse to reveal 0's key share:
    only two holders signed their list."""
    fed = Fed(SecAgg(threshold=3), n=5)
    coord = fed.coordinator()
    _run_to(fed, coord, Stage.CONSISTENCY_CHECK)
    ch = Channel(SERVER, fed.session, coord.round)
    everyone, without0 = msg.bitmap(_mask(5, range(5))), msg.bitmap(_mask(5, [1, 2, 3, 4]))
    sig = {}
    for i in range(5):
        bm = everyone if i < 3 else without0
        reply = fed.client(i).handle(ch.write(Kind.SECAGG_SURVIVORS, cid(i)).raw(bm).finish())
        sig[i] = reply[peek(reply).size :]
    for i in (3, 4):
        # the list it signed, with every signature the server holds on it, and 0's key share asked
        with pytest.raises(ProtocolError):
            fed.client(i).handle(_unmask_request(fed, coord.round, i, [1, 2, 3, 4], [3, 4], [sig[3], sig[4]], [0]))
        # or the other list's three signatures
        with pytest.raises(ProtocolError):
            fed.client(i).handle(_unmask_request(fed, coord.round, i, [1, 2, 3, 4], [0, 1, 2],
                                                 [sig[0], sig[1], sig[2]], [0]))


def test_client_never_reveals_both_shares_of_one_peer():
    fed = Fed(SecAgg(threshold=0.6, consistency_check=False), n=5)
    coord = fed.coordinator()
    _run_to(fed, coord, Stage.UNMASKING)
    with pytest.raises(ProtocolError):
        fed.client(1).handle(_unmask_request(fed, coord.round, 1, range(5), [], [], [0]))


# ------------------------------------------------------------------------------ lying clients


def test_a_dealer_of_inconsistent_shares_is_named(monkeypatch):
    fed = Fed(SecAgg(threshold=3), n=5)
    fed._dealing = None
    real = shamir.split_secrets

    def bent(secrets, threshold, holders):
        out = real(secrets, threshold, holders)
        if len(holders) and fed._dealing == 2:
            out = out.copy()
            out[:, 0] = (out[:, 0] + np.arange(1, len(holders) + 1, dtype=np.uint64) ** 3) % np.uint64(shamir.P)
        return out

    monkeypatch.setattr("securefl.mpc.secagg.client.shamir.split_secrets", bent)
    coord = fed.coordinator()
    outbox = _run_to(fed, coord, Stage.SHARE_KEYS)
    replies = {}
    for pid, m in outbox.items():
        fed._dealing = pid.index
        replies[pid] = fed.parties[pid].handle(m)
    outbox = coord.step(replies)
    with pytest.raises(ProtocolError, match="client/2"):
        while outbox:
            outbox = coord.step(fed.deliver(outbox))


def test_a_lying_share_holder_is_named():
    fed = Fed(SecAgg(threshold=3), n=5)
    coord = fed.coordinator()
    outbox = _run_to(fed, coord, Stage.UNMASKING)
    replies = fed.deliver(outbox)
    liar = min(replies)  # the lowest ids' shares are the ones the server interpolates first
    data = bytearray(replies[liar])
    r = Channel(SERVER, fed.session, coord.round).read(bytes(data), Kind.SECAGG_REVEAL, liar)
    ids = msg.read_ids(r, fed.n)
    start = r._pos  # first revealed b-share row
    data[start] ^= 1
    replies[liar] = bytes(data)
    assert ids.size
    with pytest.raises(ProtocolError, match=str(liar)):
        coord.step(replies)


# the point of order 8 on Curve25519 (RFC 7748 section 6.1 lists the small-order points to refuse)
LOW_ORDER = bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")


def _finish_tolerantly(fed, coord, outbox, replace=None):
    """Run the rest of a round as a real transport would: a client that refuses a message has dropped.
    `replace(stage, replies)` may rewrite a stage's replies (a malicious client's)."""
    refused = []
    while outbox:
        replies = {}
        for p, m in outbox.items():
            got = only_securefl_errors(lambda p=p, m=m: fed.parties[p].handle(m, fed.source(p)))
            if isinstance(got, SecureFLError):
                refused.append(str(got))
            else:
                replies[p] = got
        if replace is not None:
            replies = replace(coord.stage, replies)
        outbox = coord.step(replies)
    return coord.result(), refused


def _signed_record(fed, coord, i, record):
    sig = fed.ids[cid(i)].sign(msg.record_message(coord.digest, i, record))
    return Channel(cid(i), fed.session, coord.round).write(Kind.SECAGG_KEYS, SERVER).raw(record).raw(sig).finish()


@pytest.mark.parametrize("attack", ["small-order encryption key", "small-order masking key",
                                    "shares that fail their commitments"])
def test_one_malicious_client_cannot_sink_the_round(attack):
    """Client 4 is malicious and behaves so under its own identity: it advertises a small-order X25519 key in its
    own, correctly signed record, or deals shares whose commitments do not match. Every honest neighbour then
    fails (key agreement at share_keys or masked_input -- after its update was asked for --, or the share check)
    and drops: with the complete graph, one malicious client ends every round with a DropoutError that names
    nobody (issue 10.8 asks that a cheater be named). Safe: the round finishes without client 4, or its error
    names client 4."""
    fed = Fed(SecAgg(threshold=0.6), n=5)
    coord = fed.coordinator()

    def replace(stage, replies):
        if cid(4) not in replies:
            return replies
        if stage == Stage.ADVERTISE_KEYS.label and "small-order" in attack:
            r = Channel(SERVER, fed.session, coord.round).read(replies[cid(4)], Kind.SECAGG_KEYS, cid(4))
            record = bytearray(r.raw(msg.KEYS))
            which = 0 if "encryption" in attack else 1
            record[which * msg.KEY : (which + 1) * msg.KEY] = LOW_ORDER
            replies[cid(4)] = _signed_record(fed, coord, 4, bytes(record))
        if stage == Stage.SHARE_KEYS.label and "commitments" in attack:
            data = bytearray(replies[cid(4)])
            r = Channel(SERVER, fed.session, coord.round).read(bytes(data), Kind.SECAGG_SHARES, cid(4))
            to = msg.read_ids(r, fed.n)
            start = r._pos
            for j in range(to.size):  # one byte of each entry's first commitment
                data[start + j * msg.SHARE_ENTRY] ^= 1
            replies[cid(4)] = bytes(data)
        return replies

    outcome = only_securefl_errors(lambda: _finish_tolerantly(fed, coord, coord.start(), replace))
    if isinstance(outcome, SecureFLError):
        assert "client/4" in str(outcome) or "client 4" in str(outcome), (
            f"{attack}: one malicious client sank the round, and the error blames nobody: {outcome}")
        return
    totals, _ = outcome
    assert 4 not in totals.included and np.allclose(totals.floats, fed.ring(totals.included))


# ------------------------------------------------------------------------------ malformed messages


@pytest.mark.parametrize("stage", [Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT,
                                   Stage.CONSISTENCY_CHECK, Stage.UNMASKING])
def test_client_decoders_raise_only_securefl_errors(stage):
    fed = Fed(SecAgg(threshold=0.6), n=5)
    coord = fed.coordinator()
    outbox = _run_to(fed, coord, stage)
    saved = fed.client(0).state_dict()
    good = outbox[cid(0)]
    rng = np.random.default_rng(int(stage))
    for bad in mutations(good, rng, 60, protect=0) + mutations(good, rng, 60, protect=peek(good).size):
        party = fed.agg.party(fed.config, fed.ids[cid(0)], saved)
        only_securefl_errors(lambda p=party, b=bad: p.handle(b, fed.source(cid(0))))
    for same in (bytearray(good), memoryview(good)):  # bytes-like messages are messages too
        party = fed.agg.party(fed.config, fed.ids[cid(0)], saved)
        only_securefl_errors(lambda p=party, j=same: p.handle(j, fed.source(cid(0))))


def test_client_refuses_a_message_that_is_not_bytes():
    """The transport hands a party whatever arrived: a non-bytes message must be a ProtocolError (wire.Reader
    checks the type, but every party peeks at the header first)."""
    fed = Fed(SecAgg(threshold=0.6), n=5)
    found = non_bytes_escapes(lambda j: fed.client(0).handle(j, fed.source(cid(0))))
    assert not found, f"SecAgg client: {found}"


@pytest.mark.parametrize("stage", [Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT,
                                   Stage.CONSISTENCY_CHECK, Stage.UNMASKING])
def test_server_decoders_raise_only_securefl_errors(stage):
    """A malicious client's malformed reply: the server refuses it (a securefl error), never crashes."""
    fed = Fed(SecAgg(threshold=0.6), n=5)
    coord = fed.coordinator()
    outbox = _run_to(fed, coord, stage)
    replies = fed.deliver(outbox)
    rng = np.random.default_rng(10 + int(stage))
    for bad in mutations(replies[cid(1)], rng, 40, protect=peek(replies[cid(1)]).size):
        c = clone(coord)
        only_securefl_errors(lambda c=c, b=bad: c.step({**replies, cid(1): b}))


def test_client_state_decoder_raises_only_securefl_errors():
    """A saved state is the client's own storage, but it is still a decoder: every field of it replaced by a
    value of another type (or deleted) must give a ProtocolError, never a built-in exception."""
    fed = Fed(SecAgg(threshold=0.6), n=5)
    coord = fed.coordinator()
    _run_to(fed, coord, Stage.MASKED_INPUT)
    good = fed.client(0).state_dict()
    rng = np.random.default_rng(3)
    for bad in mutations(good, rng, 80):
        only_securefl_errors(lambda b=bad: fed.agg.party(fed.config, fed.ids[cid(0)], b))
    found = escapes(lambda b: fed.agg.party(fed.config, fed.ids[cid(0)], b), json_variants(json.loads(good)))
    assert not found, f"built-in exceptions escape SecAgg's state decoder: {found}"


# ------------------------------------------------------------------------------ the promise as written


def test_readme_states_the_collusion_bound_the_code_has():
    """Issue 10.2: the README's table must say what `SecAgg.threat_model` says (min(t-1, 2t-h) colluding
    holders), not '>= t colluding clients'."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `SecAgg`"))
    assert ">= t colluding" not in row, f"README overstates SecAgg's bound: {row}"


def test_honest_round_still_exact():
    """Control: the attacks above are refused, not the protocol itself."""
    fed = _secagg_plus(min_clients=0)
    totals = fed.run(fed.coordinator())
    assert np.allclose(totals.floats, fed.ring(totals.included))
    with pytest.raises(DropoutError):
        fed.run(fed.coordinator(clients=[0, 1]))
