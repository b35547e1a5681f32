"""Attacks on SecAgg / SecAgg+ (issue 10: attacks 1, 2, 8, 9), each run as an adversarial party.

The server is played by hand-built messages (tests.secagg_parties.Forge, through a Channel) routed to
real Client objects built from their own configuration; corrupt clients are real Client objects whose
storage (state_dict: masking key, received shares) and identity key the adversary holds. Each test
asserts the safe outcome.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import struct

import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from securefl import wire
from securefl.crypto import primitives as crypto_primitives
from securefl.crypto import shamir
from securefl.errors import ConfigError, DropoutError, ProtocolError
from securefl.keys import Identity
from securefl.mpc.secagg import SecAgg, ShareKind, Stage, params, resolve_parameters
from securefl.mpc.secagg import messages as msg
from securefl.mpc.secagg.graph import Graph
from securefl.mpc.secagg.params import SETUP, SETUP_FIELDS, Policy
from securefl.wire import Kind, peek
from tests.secagg_parties import Deployment, Forge, Round, body, cid, held_share, masking_public, secret, unmask


def fed(n=8, t=5, m=6, **kw):
    """An honest deployment (complete graph, threshold t) and the forge of its round 1 of a fresh session."""
    dep = Deployment(n=n, m=m, threshold=t, **kw)
    return dep, Forge(dep, os.urandom(16), 1)


def pair_with(f: Forge, records, u, v, sk) -> bytes:
    """The pairwise key of u and v from one side's masking private key and the other's public key."""
    return msg.pair_key(sk, masking_public(records[u]), f.session, u, v, "atk")


# ------------------------------------------------------------------------------------------------
# Attack 1: a malicious server equivocates (n, k, t, graph seed, neighbour sets); zero colluders


def _grind(dep, k, u, want: set, avoid: set = frozenset(), exact=False, tries=20000):
    """A graph seed under which client u's neighbours contain `want` (exactly, if `exact`) and avoid `avoid`."""
    for _ in range(tries):
        seed = os.urandom(32)
        nb = set(Graph(dep.n, k, seed, dep.config.directory.fingerprint).neighbors(u).tolist())
        if want <= nb and not nb & avoid and (not exact or nb == want):
            return seed
    raise AssertionError("no seed found")


def view(dep, k, t, seed) -> Policy:
    """The policy of the deployment's configuration with the server's choice of k, t and graph seed."""
    return Policy.from_config(dataclasses.replace(dep.config, options={"neighbors": k, "threshold": t},
                                                  setup_seed=seed))


def equivocation_attack(dep: Deployment, f: Forge, u=0):
    """Complete-graph deployment n=8, t=5. The server gives the target u a view (k=2, t=2) with
    neighbours {v, a}, and v, a, b, c views (k=4, t=3); u is routed only v's shares. u and v sign
    one survivor list (a dropped), a, b, c another (v dropped). The server then gets u's self-mask
    seed from u and a (t=2), v's masking key from a, b, c (t=3), and unmasks x_u. No client colludes."""
    seed_u = os.urandom(32)
    v, a = Graph(dep.n, 2, seed_u, dep.config.directory.fingerprint).neighbors(u).tolist()
    seed_v = _grind(dep, 4, v, {u, a})
    b, c = sorted(set(Graph(dep.n, 4, seed_v, dep.config.directory.fingerprint).neighbors(v).tolist()) - {u, a})
    views = {u: view(dep, 2, 2, seed_u), v: view(dep, 4, 3, seed_v),
             a: view(dep, 4, 3, _grind(dep, 4, a, {u, v, b, c}, exact=True)),
             b: view(dep, 4, 3, _grind(dep, 4, b, {v, a, c}, {u})),
             c: view(dep, 4, 3, _grind(dep, 4, c, {v, a, b}, {u}))}
    records = {x: body(dep.answer(x, f.setup(x, views[x]))) for x in views}
    peers = {u: [v, a], v: [u, a, b, c], a: [u, v, b, c], b: [v, a, c], c: [v, a, b]}
    cts = {}
    for x in views:
        cts.update(f.share_cts(x, dep.answer(x, f.key_list(x, peers[x], records))))
    senders = {u: [v], v: [u, a, b, c], a: [u, v, b, c], b: [v, a, c], c: [v, a, b]}
    y = {x: f.masked(dep.answer(x, f.bundle(x, senders[x], cts)), x) for x in views}
    list_u, list_o = {u, v, b}, {u, a, b, c}  # u and v see a dropped; a, b, c see v dropped
    sigs = {x: body(dep.answer(x, f.survivors(x, list_u))) for x in (u, v)}
    sigs |= {x: body(dep.answer(x, f.survivors(x, list_o))) for x in (a, b, c)}
    rev = {u: f.revealed(u, dep.answer(u, f.request(u, list_u, [u, v], sigs)))}
    for x in (a, b, c):
        rev[x] = f.revealed(x, dep.answer(x, f.request(x, list_o, [a, b, c], sigs, dropped=[v])))
    b_u = secret({u: rev[u][0][u], a: rev[a][0][u]})
    s_v = X25519PrivateKey.from_private_bytes(secret({x: rev[x][1][v] for x in (a, b, c)}))
    return unmask(dep, f.session, u, y[u], b_u, {v: pair_with(f, records, u, v, s_v)})


def test_attack1_equivocated_parameters_are_refused():
    dep, f = fed(n=8)
    with pytest.raises(ProtocolError, match=r"client/0: the server's setup differs .* in neighbors k \(server 2"):
        x = equivocation_attack(dep, f)
        pytest.fail(f"the attack ran to the end; recovered client 0's update exactly: "
                    f"{np.array_equal(x, dep.encoded(0))}")


# ------------------------------------------------------------------------------------------------
# Attack 2: who must collude. Complete graph, n=8, t=5, honest parameters.


def _honest_start(dep, f, group, keys_for):
    """Honest setup to `group` only; key lists and share bundles as `keys_for` routes them. Returns the key
    records, the masked inputs, and each client's storage after share_keys (a corrupt one's masking key)."""
    records = {i: body(dep.answer(i, f.setup(i))) for i in group}
    cts = {}
    for i in group:
        cts.update(f.share_cts(i, dep.answer(i, f.key_list(i, keys_for[i], records))))
    stored = {i: dep.secrets(i) for i in group}
    y = {}
    for i in group:
        senders = [v for v in keys_for[i] if (v, i) in cts]
        y[i] = f.masked(dep.answer(i, f.bundle(i, senders, cts)), i)
    return records, y, stored


def routing_attack(dep, f, colluders, u=0, t=5):
    """The server routes the target only the colluders' keys; its own share of b_u completes t."""
    group = [u, *colluders]
    keys_for = {i: [v for v in group if v != i] for i in group}
    records, y, stored = _honest_start(dep, f, group, keys_for)
    sigs = {i: body(dep.answer(i, f.survivors(i, group))) for i in group}
    rev = f.revealed(u, dep.answer(u, f.request(u, group, group[:t], sigs)))
    b_u = secret({u: rev[0][u]} | {c: held_share(dep.secrets(c), u, ShareKind.SELF_MASK) for c in colluders})
    keys = {c: pair_with(f, records, u, c, X25519PrivateKey.from_private_bytes(stored[c].s_sk)) for c in colluders}
    return unmask(dep, f.session, u, y[u], b_u, keys)


def split_attack(dep, f, colluders, x_group, y_group, u=0, t=5):
    """Honest routing; the server shows x_group (u among them) a list where u survived and y_group one
    where u dropped. Corrupt clients sign both. It gets b_u from x_group + colluders and u's masking
    key from y_group + colluders, and removes every mask of x_u."""
    everyone = list(range(dep.n))
    records, y, _ = _honest_start(dep, f, everyone, {i: [v for v in everyone if v != i] for i in everyone})
    list_x, list_y = sorted({*x_group, *colluders}), sorted({*y_group, *colluders})
    sigs_x = {i: body(dep.answer(i, f.survivors(i, list_x))) for i in x_group}
    sigs_y = {i: body(dep.answer(i, f.survivors(i, list_y))) for i in y_group}
    sigs_x |= {c: f.survivor_signature(c, list_x, records) for c in colluders}
    sigs_y |= {c: f.survivor_signature(c, list_y, records) for c in colluders}
    b_shares = {c: held_share(dep.secrets(c), u, ShareKind.SELF_MASK) for c in colluders}
    k_shares = {c: held_share(dep.secrets(c), u, ShareKind.MASKING_KEY) for c in colluders}
    for i in x_group:
        b_shares[i] = f.revealed(i, dep.answer(i, f.request(i, list_x, list_x[:t], sigs_x)))[0][u]
    for i in y_group:
        k_shares[i] = f.revealed(i, dep.answer(i, f.request(i, list_y, list_y[:t], sigs_y, dropped=[u])))[1][u]
    b_u = secret(dict(sorted(b_shares.items())[:t]))
    s_u = X25519PrivateKey.from_private_bytes(secret(dict(sorted(k_shares.items())[:t])))
    keys = {v: msg.pair_key(s_u, masking_public(records[v]), f.session, u, v, "atk") for v in everyone if v != u}
    return unmask(dep, f.session, u, y[u], b_u, keys)


def test_attack2_threat_model_states_who_must_collude_exactly():
    """The statement: a malicious server needs min(t-1, 2t-h) colluding holders of the target."""
    agg = SecAgg(threshold=5)
    assert "t-1" in agg.threat_model and "2t-h" in agg.threat_model
    assert agg.colluders_needed(8) == 2  # n=8, t=5: 2t-h = 2 < t-1 = 4
    assert SecAgg(threshold=8).colluders_needed(8) == 7  # t = h: t-1


def test_attack2_t_minus_1_colluders_recover_the_target():
    dep, f = fed(n=8)
    assert np.array_equal(routing_attack(dep, f, colluders=[1, 2, 3, 4]), dep.encoded(0))


def test_attack2_routing_with_t_minus_2_colluders_is_refused():
    dep, f = fed(n=8)
    with pytest.raises(ProtocolError, match="client/0: key list has 4 holders, fewer than t=5"):
        routing_attack(dep, f, colluders=[1, 2, 3])


def test_attack2_split_survivor_lists_need_only_2t_minus_h_colluders():
    """Bonawitz et al.'s active bound: with t < h the split needs only 2t-h colluders (here 2 of 8)."""
    dep, f = fed(n=8)
    x = split_attack(dep, f, colluders=[1, 2], x_group=[0, 3, 4], y_group=[5, 6, 7])
    assert np.array_equal(x, dep.encoded(0))


def test_attack2_split_with_fewer_than_2t_minus_h_colluders_is_refused():
    dep, f = fed(n=8)
    with pytest.raises(ProtocolError, match="fewer than t"):
        split_attack(dep, f, colluders=[1], x_group=[0, 2, 3, 4], y_group=[5, 6, 7])


# ------------------------------------------------------------------------------------------------
# Attack 8: a malicious client sends a bad Shamir share


def _round_to_unmasking(dep, drop=()) -> tuple[Round, dict[int, bytes]]:
    """An honest round in which `drop` vanish at masked_input; the clients' unmasking replies."""
    r = Round(dep)
    r.run_to(Stage.MASKED_INPUT)
    r.step(drop)
    r.run_to(Stage.UNMASKING)
    return r, r.answer()


def _tamper_revealed(message, kind: ShareKind, owner, delta=1):
    """An unmasking reply with its revealed share of `owner`'s secret of `kind` changed (its first element)."""
    pos = wire.PARTY_HEADER_SIZE
    for k in ShareKind:
        _, count = struct.unpack_from("<BQ", message, pos)
        ids = np.frombuffer(message, np.uint32, count, pos + 9)
        pos += 9 + 4 * count
        if k == kind:
            at = pos + int(np.flatnonzero(ids == owner)[0]) * msg.REVEAL_ROW
            word = int.from_bytes(message[at:at + 8], "little")
            return message[:at] + ((word + delta) % shamir.P).to_bytes(8, "little") + message[at + 8:]
        pos += count * msg.REVEAL_ROW
    raise AssertionError("no such share")


def test_attack8_a_holder_revealing_a_bad_share_is_named():
    """client/3 reveals a wrong share of client 0's self-mask seed: the error names client/3, not client 0."""
    r, replies = _round_to_unmasking(Deployment(n=8, m=6, threshold=5))
    replies[3] = _tamper_revealed(replies[3], ShareKind.SELF_MASK, owner=0)
    with pytest.raises(ProtocolError, match=r"client/3 revealed a share that fails its commitment"):
        r.deliver(replies)


def test_attack8_a_holder_revealing_a_bad_key_share_is_named():
    r, replies = _round_to_unmasking(Deployment(n=8, m=6, threshold=5), drop=(7,))
    replies[2] = _tamper_revealed(replies[2], ShareKind.MASKING_KEY, owner=7)
    with pytest.raises(ProtocolError, match=r"client/2 revealed a share that fails its commitment"):
        r.deliver(replies)


def _only_while(monkeypatch, client, kind: Kind, target, name, replacement):
    """Make `client` alone use `replacement` for target.name while it answers a message of `kind`."""
    honest, handle = getattr(target, name), client.handle

    def patched(message, update=None):
        if peek(message).kind != kind:
            return handle(message, update)
        monkeypatch.setattr(target, name, replacement(honest))
        try:
            return handle(message, update)
        finally:
            monkeypatch.setattr(target, name, honest)

    client.handle = patched


def test_attack8_a_dealer_of_inconsistent_shares_is_named(monkeypatch):
    """client/0 deals shares off its polynomial to holder 1: every revealed share is genuine, so the
    dealer is named."""
    dep = Deployment(n=8, m=6, threshold=5)

    def bad_split(honest):
        def split(secrets, threshold, holders):
            out = honest(secrets, threshold, holders)
            out[1, 0] = (out[1, 0] + np.uint64(1)) % np.uint64(shamir.P)
            return out
        return split

    _only_while(monkeypatch, dep.clients[0], Kind.SECAGG_PEER_KEYS, shamir, "split_secrets", bad_split)
    r, replies = _round_to_unmasking(dep)
    with pytest.raises(ProtocolError, match=r"client/0 dealt"):
        r.deliver(replies)


# ------------------------------------------------------------------------------------------------
# Attack 9: replay of old signatures under a reused session id and round


def test_attack9_a_reused_session_and_round_is_refused():
    """Round A ran under session S, round r. The server starts round B under the same S and r (or an
    earlier round): every client, which keeps its replay guard across rounds, refuses the setup."""
    dep = Deployment(n=6, m=6, threshold=4)
    r = Round(dep, round_=2)
    r.finish()
    with pytest.raises(ProtocolError, match="client/0: SECAGG_SETUP out of order .its round is finished"):
        dep.answer(0, Round(dep, r.session, 2).inbox[0])
    for earlier in (1, 0):
        with pytest.raises(ProtocolError, match=f"client/0: round {earlier} of this session is not after round 2"):
            dep.answer(0, Round(dep, r.session, earlier).inbox[0])
    assert dep.answer(0, Round(dep, r.session, 3).inbox[0])  # the next round is accepted


def test_attack9_old_survivor_signatures_are_refused():
    """Round B reuses round A's session id and round number under the same deployment; its clients never
    saw round A (fresh guards). The server presents round A's signatures of the same survivor list."""
    session = os.urandom(16)
    dep_a = Deployment(n=6, m=6, threshold=4)
    a = Round(dep_a, session)
    a.run_to(Stage.UNMASKING)
    dep_b = Deployment(n=6, m=6, threshold=4, ids=dep_a.ids, setup_seed=dep_a.config.setup_seed)
    assert dep_b.config == dep_a.config
    Round(dep_b, session).run_to(Stage.UNMASKING)
    # round A's unmasking request to client 0 carries round A's signatures of the same bitmap
    with pytest.raises(ProtocolError, match=r"survivor list signature of client \d: invalid signature"):
        dep_b.answer(0, a.inbox[0])


@pytest.mark.parametrize("other", ["round", "session"])
def test_attack9_signatures_of_another_round_or_session_do_not_verify(other):
    """A peer's key record from the previous round (or from another session the server runs in parallel,
    equivocating the session id) is refused."""
    dep_a, f_a = fed(n=6, t=4)
    records = {i: body(dep_a.answer(i, f_a.setup(i))) for i in range(6)}
    session, round_ = (f_a.session, f_a.round + 1) if other == "round" else (os.urandom(16), f_a.round)
    dep_b = Deployment(n=6, m=6, threshold=4, ids=dep_a.ids, setup_seed=dep_a.config.setup_seed)
    f_b = Forge(dep_b, session, round_)
    fresh = {i: body(dep_b.answer(i, f_b.setup(i))) for i in range(6)}
    with pytest.raises(ProtocolError, match="key record of client 3 as relayed by the server: invalid signature"):
        dep_b.answer(0, f_b.key_list(0, range(1, 6), fresh | {3: records[3]}))


def test_attack9_the_aggregator_runs_increasing_rounds_with_long_lived_clients():
    agg = SecAgg(threshold=4, seed=0)
    ups = [torch.rand(5) for _ in range(6)]
    rounds = [agg.aggregate(ups).report.params["round"] for _ in range(3)]
    assert rounds == [1, 2, 3]
    deployment = agg._fed  # the simulation's deployment: configuration, session, long-lived parties
    client = deployment.parties[cid(0)]
    with pytest.raises(ProtocolError, match="client/0: round 2 of this session is not after round 3"):
        client.handle(SecAgg.coordinator(deployment.config, deployment.session, 2).start()[cid(0)])


# ------------------------------------------------------------------------------------------------
# Every role played maliciously: each refusal is a ProtocolError naming the party


@settings(max_examples=60, deadline=None)
@given(st.integers(0, len(SETUP_FIELDS) - 1), st.integers(1, 2**31))
def test_server_setup_differing_in_any_field_is_refused_naming_it(field, delta):
    dep, f = fed(n=6, t=4, m=3)
    values = list(dep.policy.setup_fields(f.ring_bits, f.length))
    top = 1 << (8 * struct.calcsize("<" + SETUP.format[1:][field]))
    values[field] = (values[field] + 1 + delta % (top - 1)) % top  # any other value of the field
    name = SETUP_FIELDS[field]
    with pytest.raises(ProtocolError, match=rf"client/2: the server's setup differs .* in {name} \(server"):
        dep.answer(2, f.setup(2, fields=values))


def test_server_one_client_batch_is_refused():
    r = Round(Deployment(n=6, m=6, threshold=4))
    r.run_to(Stage.CONSISTENCY_CHECK)
    with pytest.raises(ProtocolError, match="client/0: survivor list leaves 1 holders, fewer than t=4"):
        r.dep.answer(0, Forge(r.dep, r.session, r.round).survivors(0, [0]))


def test_minimum_batch_above_t_is_enforced_by_clients_and_server():
    dep = Deployment(n=6, m=6, threshold=4, min_clients=5)
    r = Round(dep)
    r.run_to(Stage.CONSISTENCY_CHECK)
    with pytest.raises(ProtocolError, match="client/0: survivor list names 4 survivors, fewer than the minimum batch"):
        dep.answer(0, Forge(dep, r.session, r.round).survivors(0, [0, 1, 2, 3]))
    r = Round(dep, round_=2)
    r.run_to(Stage.MASKED_INPUT)
    with pytest.raises(DropoutError, match="fewer than the minimum batch of 5"):
        r.step(drop=(4, 5))


def test_server_old_message_is_refused():
    """A message of round r (same session, same deployment) delivered in round r+1."""
    dep = Deployment(n=6, m=6, threshold=4)
    old = Round(dep)
    old.run_to(Stage.SHARE_KEYS)
    new = Round(dep, old.session, old.round + 1)
    dep.answer(0, new.inbox[0])
    with pytest.raises(ProtocolError, match="client/0: share_keys request: message from round 1, expected round 2"):
        dep.answer(0, old.inbox[0])


def _all_shares(dep, f):
    records = {i: body(dep.answer(i, f.setup(i))) for i in range(dep.n)}
    cts = {}
    for i in range(dep.n):
        cts.update(f.share_cts(i, dep.answer(i, f.key_list(i, [v for v in range(dep.n) if v != i], records))))
    return records, cts


def reported(f: Forge, message: bytes, sender: int) -> list[int]:
    """The dealers a masked_input reply reports (after the masked vector)."""
    r = f.read(message, Kind.SECAGG_MASKED_INPUT, sender)
    r.array(np.dtype(f"<u{f.ring_bits // 8}"))
    return r.array(np.uint32).tolist()


def test_server_forwarding_someone_elses_ciphertext_gets_it_reported():
    """A ciphertext that is not the one its dealer sent this holder does not open: the holder keeps neither a share
    of that dealer nor a mask with it, and reports it (nothing more: what a server gets by not forwarding it)."""
    dep, f = fed(n=6, t=4)
    _, cts = _all_shares(dep, f)
    cts[2, 1] = cts[2, 3]  # client 2's shares for client 3, handed to client 1 as its own
    assert reported(f, dep.answer(1, f.bundle(1, [0, 2, 3, 4, 5], cts)), 1) == [2]
    assert dep.secrets(1).senders.tolist() == [0, 3, 4, 5]


def test_server_altering_a_share_commitment_gets_the_dealer_reported():
    r = Round(Deployment(n=6, m=6, threshold=4))
    r.run_to(Stage.MASKED_INPUT)
    bad = bytearray(r.inbox[1])
    bad[wire.PARTY_HEADER_SIZE + 9 + 4 * 5] ^= 1  # first byte of the first sender's self-mask share commitment
    assert reported(Forge(r.dep, r.session, r.round), r.dep.answer(1, bytes(bad)), 1) == [0]


def test_server_altering_every_share_to_a_holder_is_refused():
    """No holder masks with fewer than t-1 peers: a bundle whose entries all fail is refused, not answered."""
    r = Round(Deployment(n=6, m=6, threshold=4))
    r.run_to(Stage.MASKED_INPUT)
    bad = bytearray(r.inbox[1])
    for j in range(3):  # three of the five senders' entries: 1 + 2 sound holders < t = 4
        bad[wire.PARTY_HEADER_SIZE + 9 + 4 * 5 + j * msg.SHARE_ENTRY] ^= 1
    with pytest.raises(ProtocolError, match=r"client/1: only 3 share holders, fewer than t=4 \(5 senders, "
                                            r"client/0's failed its checks, client/2's"):
        r.dep.answer(1, bytes(bad))


def test_server_relaying_someone_elses_record_is_refused():
    dep, f = fed(n=6, t=4)
    records = {i: body(dep.answer(i, f.setup(i))) for i in range(6)}
    with pytest.raises(ProtocolError, match="client/0: key record of client 2 as relayed by the server"):
        dep.answer(0, f.key_list(0, range(1, 6), records | {2: records[3]}))


def test_sparse_graph_key_list_with_a_non_neighbour_is_refused():
    dep, f = fed(n=12, t=3, neighbors=4)
    records = {i: body(dep.answer(i, f.setup(i))) for i in range(12)}
    nbrs = dep.policy.graph.neighbors(0).tolist()
    outsider = next(v for v in range(1, 12) if v not in nbrs)
    with pytest.raises(ProtocolError, match="client/0: key list names clients that are not its neighbours"):
        dep.answer(0, f.key_list(0, [*nbrs[:3], outsider], records))


def test_client_with_a_bad_key_record_signature_is_named_by_its_peers():
    r = Round(Deployment(n=6, m=6, threshold=4))
    replies = r.answer()
    replies[2] = replies[2][:-1] + bytes([replies[2][-1] ^ 1])
    r.deliver(replies)  # relayed as received
    with pytest.raises(ProtocolError, match="client/0: key record of client 2 as relayed by the server: invalid"):
        r.dep.answer(0, r.inbox[0])


def test_client_with_a_bad_survivor_signature_is_named_by_its_peers():
    r = Round(Deployment(n=6, m=6, threshold=4))
    r.run_to(Stage.CONSISTENCY_CHECK)
    replies = r.answer()
    replies[1] = replies[1][:-1] + bytes([replies[1][-1] ^ 1])  # client 1 is among the t signers forwarded
    r.deliver(replies)
    with pytest.raises(ProtocolError, match="client/0: survivor list signature of client 1: invalid signature"):
        r.dep.answer(0, r.inbox[0])


def _false_commitments(monkeypatch, dep, dealer, holders):
    """`dealer` commits, for each of `holders`, to something other than the share it encrypts to it."""
    def false_commitment(honest):
        return lambda *a: honest(*a[:5], bytes(msg.NONCE) if a[2] in holders else a[5])

    _only_while(monkeypatch, dep.clients[dealer], Kind.SECAGG_PEER_KEYS, msg, "share_commitment", false_commitment)


def test_dealer_with_false_commitments_is_left_out_and_named(monkeypatch):
    """client/0 commits to something other than the shares it encrypts: every holder leaves it out of its masks and
    reports it; the round ends exactly without it, and names it (one cheater cannot sink the round)."""
    dep = Deployment(n=6, m=6, threshold=4)
    _false_commitments(monkeypatch, dep, 0, range(1, 6))
    r = Round(dep)
    r.run_to(Stage.MASKED_INPUT)
    replies = r.answer()
    assert all(reported(Forge(dep, r.session, r.round), replies[i], i) == [0] for i in range(1, 6))
    assert reported(Forge(dep, r.session, r.round), replies[0], 0) == []
    r.deliver(replies)
    totals = r.finish()
    assert totals.included == [1, 2, 3, 4, 5]
    assert np.array_equal(totals.floats, sum(dep.ups[i].double() for i in range(1, 6)).numpy())
    why = totals.params["rejected"][0]
    assert list(totals.params["rejected"]) == [0]
    assert "client/1, client/2, client/3, client/4, client/5 did not open or did not match" in why


@pytest.mark.parametrize("n,options", [(6, {"threshold": 4}), (6, {"threshold": 4, "signed_keys": False}),
                                       (12, {"threshold": 3, "neighbors": 4})])
def test_dealer_cheating_one_holder_is_left_out_and_its_masks_removed(monkeypatch, n, options):
    """client/0 cheats one holder only: it reports 0 and leaves it out of its masks, 0's other holders mask with it.
    The server leaves 0's input out, recovers 0's masking key from those other holders and removes only their masks
    with it (complete graph, semi-honest mode, SecAgg+)."""
    dep = Deployment(n=n, m=6, **options)
    cheated = int(dep.policy.graph.neighbors(0)[0])
    _false_commitments(monkeypatch, dep, 0, {cheated})
    totals = Round(dep).finish()
    assert totals.included == list(range(1, n))
    assert np.array_equal(totals.floats, sum(dep.ups[i].double() for i in range(1, n)).numpy())
    assert list(totals.params["rejected"]) == [0]
    assert f"its shares to client/{cheated} did not open" in totals.params["rejected"][0]


def test_dealer_whose_masking_key_cannot_be_recovered_is_named(monkeypatch):
    """client/0 cheats holders 1-3: holders 4 and 5 masked with it, and two sound shares of its masking key are fewer
    than t = 4: the round cannot remove their masks, and the DropoutError names the cheater."""
    dep = Deployment(n=6, m=6, threshold=4)
    _false_commitments(monkeypatch, dep, 0, {1, 2, 3})
    with pytest.raises(DropoutError, match=r"client 0 has fewer than t=4 live share holders at masked_input; client/0 "
                                           r"was excluded: masked_input: its shares to client/1, client/2, client/3"):
        Round(dep).finish()


def test_a_holder_reporting_several_honest_dealers_is_left_out_alone(monkeypatch):
    """Client 1 lies: it reports honest dealers 0 and 2 (and leaves them out of its masks, as its report says). The
    server cannot tell a lying holder from cheating dealers, and leaves out one end of each report, the client in
    the most first: client 1 alone. A lying client cannot get its neighbours left out wholesale."""
    dep = Deployment(n=8, m=6, threshold=5)
    honest = dep.clients[1]._open_shares
    monkeypatch.setattr(dep.clients[1], "_open_shares", lambda key, digest, prefix, v, entry: None if v in (0, 2)
                        else honest(key, digest, prefix, v, entry))
    r = Round(dep)
    totals = r.finish()
    inc = [0, *range(2, 8)]
    assert totals.included == inc
    assert np.array_equal(totals.floats, sum(dep.ups[i].double() for i in inc).numpy())
    assert totals.params["rejected"] == {1: "masked_input: it reported client/0, client/2 for shares that did not "
                                            "open or match (one end of every report is left out, the client in the "
                                            "most reports first)"}


def test_reports_give_a_server_nothing_more():
    """The server alters client 0's entry to holder 1 (so 1 reports 0): holder 1 then refuses to sign a list that
    names 0 a survivor and to reveal a key share of 0, and in the honest rest of the round no holder reveals any
    share of 0's self-mask seed (0's input is left out): reports never make a client reveal more. A report naming a
    dealer whose shares the holder was never sent is refused."""
    r = Round(Deployment(n=6, m=6, threshold=4))
    f = Forge(r.dep, r.session, r.round)
    r.run_to(Stage.MASKED_INPUT)
    bad = bytearray(r.inbox[1])
    bad[wire.PARTY_HEADER_SIZE + 9 + 4 * 5 + 2 * msg.DIGEST + 20] ^= 1  # a ciphertext byte of 0's entry
    r.inbox[1] = bytes(bad)
    replies = r.answer()
    forged = wire.Channel(cid(2), r.session, r.round).write(Kind.SECAGG_MASKED_INPUT, wire.SERVER).array(
        f.masked(replies[2], 2)).array(np.array([2], np.uint32)).finish()
    with pytest.raises(ProtocolError, match="client/2 reports clients whose shares were never forwarded to it"):
        copy.deepcopy(r.server).step({cid(i): m for i, m in (replies | {2: forged}).items()})
    r.deliver(replies)
    assert list(r.server.state.rejected) == [0]
    with pytest.raises(ProtocolError, match="client/1: survivor list names a survivor that never sent it sound shares"):
        copy.deepcopy(r.dep.clients[1]).handle(f.survivors(1, range(6)), r.dep.update(1))
    sigs = {i: body(m) for i, m in r.answer().items()}  # the honest list: 0 left out
    with pytest.raises(ProtocolError, match="client/1: server asks for key shares this client does not hold"):
        copy.deepcopy(r.dep.clients[1]).handle(f.request(1, range(1, 6), [1, 2, 3, 4], sigs, dropped=[0]))
    r.deliver({i: r.replies[Stage.CONSISTENCY_CHECK][i] for i in range(1, 6)})
    reveals = {i: f.revealed(i, m) for i, m in r.answer().items()}
    assert not any(0 in b_shares for b_shares, _ in reveals.values())
    assert 0 not in reveals[1][1] and all(0 in reveals[i][1] for i in range(2, 6))
    r.deliver(r.replies[Stage.UNMASKING])
    assert np.array_equal(r.server.result().floats, sum(r.dep.ups[i].double() for i in range(1, 6)).numpy())


# ------------------------------------------------------------------------------------------------
# A malicious client advertises a small-order or repeated X25519 key (every peer's agreement would fail)


_P25519, _A25519 = 2**255 - 19, 486662


def _poly_mod(a: list[int], m: list[int]) -> list[int]:
    """a mod m over GF(p), coefficients lowest first, m monic."""
    a = [x % _P25519 for x in a]
    while len(a) >= len(m):
        c, shift = a[-1], len(a) - len(m)
        for i, x in enumerate(m):
            a[shift + i] = (a[shift + i] - c * x) % _P25519
        a.pop()
    while a and not a[-1]:
        a.pop()
    return a


def _poly_mul(a: list[int], b: list[int]) -> list[int]:
    out = [0] * (len(a) + len(b) - 1)
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            out[i + j] = (out[i + j] + x * y) % _P25519
    return out


def _monic(a: list[int]) -> list[int]:
    inv = pow(a[-1], -1, _P25519)
    return [x * inv % _P25519 for x in a]


def _roots_in_field(f: list[int]) -> int:
    """How many distinct roots the polynomial f has in GF(p): the degree of gcd(f, x^p - x)."""
    f = _monic(f)
    power, base, e = [1], [0, 1], _P25519  # x^p mod f by square and multiply
    while e:
        if e & 1:
            power = _poly_mod(_poly_mul(power, base), f)
        base, e = _poly_mod(_poly_mul(base, base), f), e >> 1
    diff = power + [0] * (2 - len(power))
    diff[1] -= 1  # x^p - x mod f
    a, b = f, _poly_mod(diff, f)
    while b:
        a, b = b, _poly_mod(a, _monic(b))
    return len(a) - 1


def test_small_order_list_is_every_x25519_point_of_order_dividing_8():
    """Independent of the list's source: the u with [8]P = O on Curve25519 or its twist are the roots of
    u (u^2 + A u + 1) (u^2 - 1) ((u^2 - 1)^2 - 4u(u^2 + A u + 1)) ((u^2 - 1)^2 + 4u(u^2 + A u + 1)) (x-only doubling:
    2P is O, of u 0, or of u +-1); it has exactly five in GF(p), the list's canonical values, and of the other
    encodings below 2^255 (p ... p + 18, i.e. 0 ... 18) only p and p + 1 are of small order."""
    q = [1, _A25519, 1]  # u^2 + A u + 1
    sq = _poly_mul([-1, 0, 1], [-1, 0, 1])  # (u^2 - 1)^2
    four_u_q = _poly_mul([0, 4], q)
    factors = [[0, 1], q, [-1, 0, 1], [a - b for a, b in zip(sq, [*four_u_q, 0], strict=True)],
               [a + b for a, b in zip(sq, [*four_u_q, 0], strict=True)]]
    f = [1]
    for g in factors:
        f = _poly_mul(f, g)

    def value(u: int) -> int:
        return sum(c * pow(u, i, _P25519) for i, c in enumerate(f)) % _P25519

    listed = {int.from_bytes(k, "little") for k in crypto_primitives.SMALL_ORDER_X25519}
    canonical = {u for u in listed if u < _P25519}
    assert len(listed) == 7 and len(canonical) == 5 and all(value(u) == 0 for u in canonical)
    assert _roots_in_field(f) == 5
    assert listed - canonical == {_P25519 + u for u in range(19) if value(u) == 0} == {_P25519, _P25519 + 1}


def test_small_order_keys_fail_key_agreement_and_are_refused_without_one():
    """Each listed key, with the top bit clear or set: `cryptography`'s exchange fails (the all-zero secret), and
    check_x25519_public refuses it by comparison; random keys, their top-bit twins and random keys that begin like a
    listed one pass both."""
    sk = X25519PrivateKey.generate()
    for key in crypto_primitives.SMALL_ORDER_X25519:
        for raw in (key, key[:31] + bytes([key[31] | 0x80])):
            with pytest.raises(ValueError):
                sk.exchange(X25519PublicKey.from_public_bytes(raw))
            with pytest.raises(ProtocolError, match="client/7's key: X25519 public key of small order"):
                crypto_primitives.check_x25519_public(raw, "client/7's key")
    for j in range(100):
        raw = X25519PrivateKey.generate().public_key().public_bytes_raw()
        near = LOW_ORDER[j % len(LOW_ORDER)][:1] + raw[1:]  # the first byte of a listed key: compared in full
        for key in (raw, raw[:31] + bytes([raw[31] | 0x80]), near):
            crypto_primitives.check_x25519_public(key, "random")
            assert len(sk.exchange(X25519PublicKey.from_public_bytes(key))) == 32
    for junk in (b"", bytes(31), bytes(33), "x" * 32):
        with pytest.raises(ProtocolError, match="is 32 bytes"):
            crypto_primitives.check_x25519_public(junk, "junk")


LOW_ORDER = sorted(crypto_primitives.SMALL_ORDER_X25519)


def _resigned(dep: Deployment, r: Round, i: int, record: bytes) -> bytes:
    """Client i's key reply with `record` (keys and commitment) in place of its own, signed with its identity key."""
    sig = dep.ids[cid(i)].sign(msg.record_message(r.server.digest, i, record))
    return wire.Channel(cid(i), r.session, r.round).write(Kind.SECAGG_KEYS, wire.SERVER).raw(record + sig).finish()


@pytest.mark.parametrize("attack", ["small-order encryption key", "small-order masking key",
                                    "top-bit small-order masking key", "one key twice", "another's masking key"])
def test_a_client_advertising_a_bad_key_is_excluded_and_named(attack):
    """Client 3 signs a record its peers would all refuse: the server excludes it at advertise_keys (and, for a
    masking key it shares with client 2, both: it cannot tell which copied) and names it; the round is exact
    without it."""
    dep = Deployment(n=6, m=6, threshold=4)
    r = Round(dep)
    replies = r.answer()
    rec = bytearray(body(replies[3])[: msg.KEYS])
    if attack == "small-order encryption key":
        rec[: msg.KEY] = LOW_ORDER[3]
    elif attack == "small-order masking key":
        rec[msg.KEY : 2 * msg.KEY] = LOW_ORDER[4]
    elif attack == "top-bit small-order masking key":
        rec[msg.KEY : 2 * msg.KEY] = LOW_ORDER[0][:31] + b"\x80"
    elif attack == "one key twice":
        rec[msg.KEY : 2 * msg.KEY] = rec[: msg.KEY]
    else:
        rec[msg.KEY : 2 * msg.KEY] = body(replies[2])[msg.KEY : 2 * msg.KEY]
    replies[3] = _resigned(dep, r, 3, bytes(rec))
    r.deliver(replies)
    out = [2, 3] if attack == "another's masking key" else [3]
    assert sorted(r.inbox) == [i for i in range(6) if i not in out]
    totals = r.finish()
    inc = [i for i in range(6) if i not in out]
    assert totals.included == inc
    assert np.array_equal(totals.floats, sum(dep.ups[i].double() for i in inc).numpy())
    assert list(totals.params["rejected"]) == out
    assert all(why.startswith("advertise_keys: ") for why in totals.params["rejected"].values())


def test_a_bad_key_that_leaves_too_few_clients_is_named():
    dep = Deployment(n=4, m=6, threshold=4)
    r = Round(dep)
    replies = r.answer()
    replies[1] = _resigned(dep, r, 1, LOW_ORDER[2] + body(replies[1])[msg.KEY : msg.KEYS])
    with pytest.raises(DropoutError, match="fewer than t=4 clients left at advertise_keys; client/1 was excluded: "
                                           "advertise_keys: encryption key: X25519 public key of small order"):
        r.deliver(replies)


@pytest.mark.parametrize("which", [0, 1])
def test_client_refuses_a_small_order_key_a_server_relays(which):
    """A malicious server relays corrupt client 2's correctly signed record with a small-order key anyway: the
    client refuses it at share_keys (before any share or mask), naming client 2."""
    dep, f = fed(n=6, t=4)
    records = {i: body(dep.answer(i, f.setup(i))) for i in range(6)}
    rec = bytearray(records[2][: msg.KEYS])
    rec[which * msg.KEY : (which + 1) * msg.KEY] = LOW_ORDER[1]
    records[2] = bytes(rec) + dep.ids[cid(2)].sign(msg.record_message(f.digest(), 2, bytes(rec)))
    kind = ("encryption", "masking")[which]
    with pytest.raises(ProtocolError, match=f"client/0: {kind} key of client/2 as relayed by the server: X25519 "
                                            "public key of small order"):
        dep.answer(0, f.key_list(0, range(1, 6), records))


def test_a_client_must_hold_its_pinned_identity():
    dep = Deployment(n=4, m=6, threshold=3)
    with pytest.raises(ConfigError, match="client/1: its identity key is not the one"):
        SecAgg.party(dep.config, Identity.from_private_bytes(cid(1), dep.ids[cid(2)].private_bytes()))


REVEALS: dict = {}


def _reveals():
    if not REVEALS:
        r, replies = _round_to_unmasking(Deployment(n=5, m=4, threshold=3), drop=(4,))
        server = copy.deepcopy(r.server)
        r.deliver(replies)
        REVEALS.update(server=server, replies=replies, total=r.server.result().floats)
    return REVEALS


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 3), st.integers(0, 10**6), st.integers(1, 255))
def test_flipped_bytes_in_revealed_shares_never_give_a_wrong_sum(who, pos, byte):
    """Anywhere in a client's unmasking reply body, a flipped byte is refused (ProtocolError naming a client)
    or harmless (an unused share, or the nonce of a client's own share): the sum is never wrong."""
    rv = _reveals()
    replies = dict(rv["replies"])
    bad = bytearray(replies[who])
    bad[wire.PARTY_HEADER_SIZE + pos % (len(bad) - wire.PARTY_HEADER_SIZE)] ^= byte
    replies[who] = bytes(bad)
    server = copy.deepcopy(rv["server"])
    try:
        server.step({cid(i): m for i, m in replies.items()})
    except ProtocolError as e:
        assert "client/" in str(e)
        return
    assert np.array_equal(server.result().floats, rv["total"])


def test_fallback_to_the_complete_graph_is_said_once(caplog):
    """neighbors='auto' below the size where a sparse graph helps: the complete graph, logged once."""
    params._said.clear()
    with caplog.at_level("WARNING", logger="securefl"):
        k, t = resolve_parameters(10, None, "auto", 0.2, 0.05)
        assert (k, t) == (9, 7)
        agg = SecAgg(neighbors="auto", dropout_rate=0.2, corrupt_fraction=0.05, seed=0)
        res = agg.aggregate([torch.rand(3) for _ in range(10)])
        agg.aggregate([torch.rand(3) for _ in range(10)])
    notes = [r for r in caplog.records if "complete graph" in r.getMessage()]
    assert len(notes) == 1 and "dropout_rate=0.2" in notes[0].getMessage() and notes[0].name.startswith("securefl")
    assert res.report.params["graph"] == "complete" and res.report.params["threshold"] == 7
    assert resolve_parameters(1000, None, "auto", 0.2, 0.1) == (252, 162)  # large n: the finder's sparse graph
