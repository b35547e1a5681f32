"""SecAgg / SecAgg+: graphs and thresholds, dropouts on a sparse graph, the party protocol and saved state, malicious
servers, malformed messages, the server's view. (The generic contract: tests/test_conformance.py.)"""

from __future__ import annotations

import base64
import copy
import json
import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

import securefl
from securefl import keys, wire
from securefl.errors import ConfigError, DropoutError, ProtocolError
from securefl.keys import Directory, Identity
from securefl.mpc.secagg import STAGES, Policy, SecAgg, Stage, resolve_parameters
from securefl.mpc.secagg import messages as msg
from securefl.session import ModelSpec, RoundConfig
from securefl.wire import Kind
from tests.conftest import P_MIN, state_updates
from tests.reference import assert_close
from tests.secagg_parties import Deployment, Forge, Round, body, cid
from tests.test_attacks_secagg import reported

WEIGHTS = [3, 1, 4, 1, 5, 9, 2, 6]


def included(n: int, dropped: dict[int, str]) -> list[int]:
    """Clients whose input is in the sum: all but those silent before masked_input returned."""
    early = {"advertise_keys", "share_keys", "masked_input"}
    return [i for i in range(n) if dropped.get(i) not in early]


def exact_sum(r: Round, totals, inc) -> None:
    """The round's float and weight sums equal the inputs' (grid-valued updates, weight 1: no rounding)."""
    assert totals.included == list(inc)
    assert np.array_equal(totals.floats, sum(r.dep.ups[i].double() for i in inc).numpy())
    assert totals.weight == len(inc)


# ---------------------------------------------------------------- end to end through aggregate()


def test_public_names():
    assert securefl.SecAgg is SecAgg
    assert SecAgg.stages == STAGES == tuple(s.label for s in Stage) and SecAgg.input_stage == "masked_input"


@pytest.mark.parametrize("neighbors,threshold", [(None, None), (None, 0.6), (4, 3), (6, None)])
def test_graphs_and_thresholds_match_reference(neighbors, threshold):
    ups, weights = state_updates(8, seed=1), WEIGHTS
    res = SecAgg(threshold=threshold, neighbors=neighbors, seed=0).aggregate(ups, weights=weights)
    assert_close(res, ups, weights, range(8), clip=8.0)
    p = res.report.params
    assert p["graph"] == ("complete" if neighbors is None else "harary")
    assert p["neighbors"] == (7 if neighbors is None else neighbors) and p["share_holders"] == p["neighbors"] + 1


@pytest.mark.parametrize("stage", STAGES)
def test_dropouts_at_each_stage_of_a_sparse_graph(stage):
    """SecAgg+ with k = 4 of 10 (the complete graph: tests/test_conformance.py)."""
    ups = state_updates(10, seed=2)
    dropped = {2: stage, 7: stage}
    res = SecAgg(neighbors=4, threshold=3, seed=3).aggregate(
        ups, weights=WEIGHTS + [2, 2], dropped=dropped
    )
    assert_close(res, ups, WEIGHTS + [2, 2], included(10, dropped), clip=8.0)
    assert res.report.dropped == dropped
    assert ("client/2" in res.report.bytes_sent) == (stage != "advertise_keys")


@pytest.mark.parametrize("neighbors,threshold", [(None, 0.6), (10, 6)])
def test_dropouts_combined_across_stages(neighbors, threshold):
    ups = state_updates(20, seed=4)
    dropped = {0: "advertise_keys", 3: "share_keys", 5: "masked_input", 8: "consistency_check", 13: "unmasking"}
    res = SecAgg(neighbors=neighbors, threshold=threshold, seed=5).aggregate(ups, dropped=dropped)
    assert_close(res, ups, None, included(20, dropped), clip=8.0)
    assert res.report.survivors == included(20, dropped)


@pytest.mark.parametrize("stage", STAGES)
def test_too_many_dropouts_raise(stage):
    ups = state_updates(6, seed=6)
    with pytest.raises(DropoutError):
        SecAgg(threshold=4, seed=0).aggregate(ups, dropped={0: stage, 1: stage, 2: stage})


def test_a_failed_round_leaves_the_clients_ready_for_the_next():
    """Long-lived clients stopped mid-round by a DropoutError accept the next round's setup."""
    agg, ups = SecAgg(threshold=4, seed=0), state_updates(6, seed=6)
    with pytest.raises(DropoutError):
        agg.aggregate(ups, dropped={0: "share_keys", 1: "share_keys", 2: "share_keys"})
    res = agg.aggregate(ups, dropped={5: "unmasking"})
    assert_close(res, ups, None, range(6), clip=8.0)
    assert res.report.params["round"] == 2


@pytest.mark.parametrize("neighbors", [None, 4])
@pytest.mark.parametrize("stage", STAGES)
def test_semi_honest_mode_is_exact_with_dropouts_at_each_stage(stage, neighbors):
    """signed_keys=False (honest-but-curious server): no signatures, no consistency check, the same sum."""
    ups = state_updates(10, seed=12)
    dropped = {2: stage, 7: stage}
    agg = SecAgg(neighbors=neighbors, threshold=3 if neighbors else 6, signed_keys=False, seed=4)
    res = agg.aggregate(ups, weights=WEIGHTS + [2, 2], dropped=dropped)
    assert_close(res, ups, WEIGHTS + [2, 2], included(10, dropped), clip=8.0)
    assert res.report.survivors == included(10, dropped)
    assert res.report.params["signed_keys"] is False and res.report.params["consistency_check"] is False
    assert "consistency_check" not in res.report.seconds and "honest-but-curious" in agg.threat_model


def test_semi_honest_clients_neither_sign_nor_verify(monkeypatch):
    signed = Round(Deployment(n=6, threshold=4))
    signed.step()
    monkeypatch.setattr(Identity, "sign", lambda *a: pytest.fail("a semi-honest client signed"))
    monkeypatch.setattr(Directory, "verify", lambda *a: pytest.fail("a semi-honest client verified a signature"))
    r = Round(Deployment(n=6, threshold=4, signed_keys=False))
    assert r.stages == [s for s in Stage if s != Stage.CONSISTENCY_CHECK]
    r.run_to(Stage.MASKED_INPUT)
    r.step(drop=(5,))
    exact_sum(r, r.finish(), range(5))
    assert len(signed.replies[Stage.ADVERTISE_KEYS][0]) == len(r.replies[Stage.ADVERTISE_KEYS][0]) + 64


def test_without_consistency_check():
    ups = state_updates(7, seed=7)
    dropped = {1: "masked_input", 4: "unmasking"}
    res = SecAgg(threshold=5, consistency_check=False, seed=0).aggregate(ups, dropped=dropped)
    assert_close(res, ups, None, included(7, dropped), clip=8.0)
    assert "consistency_check" not in res.report.seconds


@pytest.mark.parametrize("seed", range(3))
def test_sparse_graph_prunes_clients_whose_holders_vanished(seed):
    """SecAgg+: clients left with fewer than t live holders before their input are excluded, never a wrong sum."""
    r = Round(Deployment(n=12, m=3, seed=seed, neighbors=4, threshold=3))
    nbrs = r.dep.policy.graph.nbrs
    gone = nbrs[0][:3].tolist()  # client 0 keeps 2 of its 5 holders, fewer than t
    alive = np.ones(12, bool)
    alive[gone] = False
    while (weak := alive & (alive[nbrs].sum(1) + alive < 3)).any():  # reference: prune until stable
        alive &= ~weak
    if not alive.any():
        with pytest.raises(DropoutError):
            r.step(drop=gone)
        return
    r.step(drop=gone)
    totals = r.finish()
    assert 0 not in totals.included
    exact_sum(r, totals, np.flatnonzero(alive).tolist())


def test_report_params():
    ups = state_updates(6, seed=9)
    rep = SecAgg(threshold=4, seed=0).aggregate(ups, dropped={5: "masked_input"}).report
    assert rep.params["threshold"] == 4 and rep.params["ring_bits"] == 32 and rep.params["consistency_check"]
    assert rep.params["colluders_needed"] == 2 and rep.params["min_batch"] == 4


@pytest.mark.parametrize(
    "kwargs", [{"threshold": 0}, {"threshold": 1.5}, {"threshold": "x"}, {"neighbors": 1},
               {"neighbors": "many"}, {"neighbors": "auto", "dropout_rate": 0.7, "corrupt_fraction": 0.5},
               {"dropout_rate": "0.1"}, {"signed_keys": False, "consistency_check": True}, {"signed_keys": 0},
               {"consistency_check": "yes"}]
)
def test_bad_options_are_refused(kwargs):
    with pytest.raises(ConfigError):
        SecAgg(**kwargs)


@pytest.mark.parametrize("threshold", [9, 0.5, 3])
def test_threshold_out_of_range_for_the_holders_is_refused_at_run(threshold):
    with pytest.raises(ConfigError):
        SecAgg(threshold=threshold, seed=0).aggregate(state_updates(6))


def test_resolve_parameters():
    assert resolve_parameters(10, None, None) == (9, 7)
    assert resolve_parameters(10, 0.6, None) == (9, 6)
    assert resolve_parameters(100, 0.6, 10) == (10, 7)
    assert resolve_parameters(100, None, "auto", 0.05, 0.05) == (48, 35)
    assert resolve_parameters(5, None, 8) == (4, 4)


def test_options_are_the_configuration_every_party_builds_from():
    agg = SecAgg(threshold=0.6, neighbors=np.int64(4))
    opts = agg.options()
    assert opts == {"threshold": 0.6, "neighbors": 4, "dropout_rate": 0.1, "corrupt_fraction": 0.1,
                    "signed_keys": True, "consistency_check": True}
    cfg = agg.config(torch.zeros(3), 12)
    assert json.loads(cfg.to_json())["options"] == opts
    p = Policy.from_config(RoundConfig.from_json(cfg.to_json()))
    assert (p.n, p.k, p.t, p.min_batch) == (12, 4, 3, 3) and agg.min_survivors(12) == 3


def test_policy_from_a_round_config_and_its_digest():
    """A deployment's RoundConfig gives every party the same policy; any change of it changes the setup digest."""
    ids = keys.create_identities(clients=12)
    cfg = RoundConfig("secagg+", Directory.of(ids.values()), ModelSpec.of(torch.zeros(3)),
                      options={"neighbors": 4, "threshold": 3}, min_clients=3)
    a, b = Policy.from_config(cfg), Policy.from_config(RoundConfig.from_json(cfg.to_json()))
    session = os.urandom(16)
    assert (a.n, a.k, a.t, a.min_batch) == (12, 4, 3, 3)
    assert np.array_equal(a.graph.nbrs, b.graph.nbrs)
    assert a.setup_digest(session, 1, 32, 4) == b.setup_digest(session, 1, 32, 4)
    assert len({a.setup_digest(session, 1, 32, 4), a.setup_digest(session, 2, 32, 4), a.setup_digest(session, 1, 64, 4),
                a.setup_digest(session, 1, 32, 5), a.setup_digest(os.urandom(16), 1, 32, 4)}) == 5
    d = cfg.to_dict()
    for change in ({"options": {"neighbors": 6, "threshold": 4}}, {"min_clients": 2},
                   {"setup_seed": base64.b64encode(os.urandom(32)).decode()}, {"clip": 4.0}):
        other = Policy.from_config(RoundConfig.from_dict({**d, **change}))
        assert other.setup_digest(session, 1, 32, 4) != a.setup_digest(session, 1, 32, 4)


@pytest.mark.parametrize("bad", [{"scheme": "additive"}, {"options": {"num_aggregators": 3}}, {"min_clients": 9},
                                 {"options": {"threshold": 2}}, {"options": {"neighbors": 3}},
                                 {"options": {"signed_keys": "yes"}}])
def test_bad_configurations_are_refused(bad):
    ids = keys.create_identities(clients=5)
    d = RoundConfig("secagg", Directory.of(ids.values()), ModelSpec.of(torch.zeros(3))).to_dict()
    with pytest.raises(ConfigError):
        Policy.from_config(RoundConfig.from_dict({**d, **bad}))
    with pytest.raises(ConfigError):
        SecAgg.party(RoundConfig.from_dict({**d, **bad}), ids[cid(0)])


# ---------------------------------------------------------------- the party protocol and saved state


def test_harness_round_is_exact():
    r = Round(Deployment(n=6, threshold=4))
    assert r.server.stage == "advertise_keys" and r.server.input_stage == "masked_input"
    seen = []
    while r.inbox:
        seen.append(r.server.stage)
        r.step()
    assert seen == list(STAGES)
    exact_sum(r, r.server.result(), range(6))


def test_a_client_asks_for_its_update_once_at_masked_input():
    dep = Deployment(n=5, threshold=3)
    r = Round(dep)
    calls = []
    while r.inbox:
        stage = r.stage
        replies = {}
        for i, m in r.inbox.items():
            def update(i=i, stage=stage):
                calls.append((i, stage))
                return dep.ups[i], 1.0
            replies[i] = dep.clients[i].handle(m, update)
        r.replies[stage] = replies
        r.deliver(replies)
    assert calls == [(i, Stage.MASKED_INPUT) for i in range(5)]
    r2 = Round(Deployment(n=5, threshold=3))
    r2.run_to(Stage.MASKED_INPUT)
    with pytest.raises(ProtocolError, match="no update was supplied"):
        r2.dep.clients[0].handle(r2.inbox[0])


@pytest.mark.parametrize("options", [{"threshold": 9}, {"threshold": 9, "signed_keys": False},
                                     {"threshold": 9, "consistency_check": False}, {"neighbors": 10, "threshold": 6}])
def test_clients_restored_between_every_pair_of_stages_finish_exactly(options):
    """Every client is rebuilt from its saved bytes before each message (a process restart, Flower's
    Context.state), with one dropout at each stage: the round is exact. (n=16, k=10: every client keeps
    >= t=6 live holders.)"""
    dep = Deployment(n=16, m=7, **options)
    r = Round(dep)
    drop = {i: s for i, s in zip((1, 3, 5, 7, 9), dep.policy.stages, strict=False)}
    while r.inbox:
        for i in list(r.inbox):
            dep.clients[i] = dep.party(i, dep.clients[i].state_dict())
        r.step(drop=[i for i, s in drop.items() if s <= r.stage])
    exact_sum(r, r.server.result(), included(16, {i: s.label for i, s in drop.items()}))


def test_saved_state_holds_each_secret_only_while_needed():
    r = Round(Deployment(n=5, threshold=3))
    held = {}
    while r.inbox:
        stage = r.stage
        r.step()
        held[stage] = json.loads(r.dep.clients[0].state_dict())["round"]
    assert {"c_sk", "s_sk", "b"} <= set(held[Stage.ADVERTISE_KEYS])
    assert "c_sk" not in held[Stage.SHARE_KEYS] and {"s_sk", "b", "enc_keys"} <= set(held[Stage.SHARE_KEYS])
    assert not {"s_sk", "b", "enc_keys"} & set(held[Stage.MASKED_INPUT]) and "rows" in held[Stage.MASKED_INPUT]
    assert set(held[Stage.UNMASKING]) == {"session", "round", "stage", "record_hash"}


def test_saved_state_keeps_the_replay_guard_and_its_owner():
    dep = Deployment(n=5, threshold=3)
    r = Round(dep, round_=3)
    r.finish()
    saved = dep.clients[0].state_dict()
    with pytest.raises(ProtocolError, match="client/0: SECAGG_SETUP out of order .its round is finished"):
        dep.party(0, saved).handle(Round(dep, session=r.session, round_=3).inbox[0])
    with pytest.raises(ProtocolError, match="client/0: round 2 of this session is not after round 3"):
        dep.party(0, saved).handle(Round(dep, session=r.session, round_=2).inbox[0])
    assert dep.party(0, saved).handle(Round(dep, session=r.session, round_=4).inbox[0])
    with pytest.raises(ProtocolError, match="belongs to 'client/0'"):
        dep.party(1, saved)
    other = Deployment(n=5, ids=dep.ids, threshold=4)
    with pytest.raises(ProtocolError, match="another configuration"):
        other.party(0, saved)
    with pytest.raises(ConfigError, match="client/1: its identity key is not the one"):
        SecAgg.party(dep.config, Identity.from_private_bytes(cid(1), dep.ids[cid(2)].private_bytes()))


STATES: dict = {}


def _states():
    """Each stage's saved state of client 0, in both threat models."""
    if not STATES:
        for signed in (True, False):
            dep = Deployment(n=5, m=4, threshold=3, signed_keys=signed)
            r = Round(dep)
            while r.inbox:
                STATES[signed, r.stage] = (dep, dep.clients[0].state_dict())
                r.step()
    return STATES


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([(s, x) for s in (True, False) for x in Stage if s or x != Stage.CONSISTENCY_CHECK]),
       st.integers(0, 2), st.integers(0, 10**6), st.integers(0, 255))
def test_malformed_saved_state_raises_protocol_error(which, how, pos, byte):
    """A saved state cut, extended or with a byte changed is refused with ProtocolError or accepted as a
    (valid) state: never another exception."""
    dep, saved = _states()[which]
    try:
        dep.party(0, _mutate(saved, how, pos, byte, len(saved)))
    except ProtocolError:
        pass


BAD_FIELDS = {
    "rows": base64.b64encode(np.full(8 * 4 * 2 * 5, 0xFF, np.uint8).tobytes()).decode(),  # elements >= p
    "peers": base64.b64encode(np.array([3, 1, 2], "<u4").tobytes()).decode(),
    "own_share": "AAAA", "session": "!!", "round": -1, "senders": None,
}


@pytest.mark.parametrize("field,value", [*BAD_FIELDS.items(), ("stage", "masked"), ("stage", "advertise_keys"),
                                         ("stage", ["unmasking"]), ("stage", {"unmasking": 1}), ("stage", 4),
                                         ("extra", "AA==")])
def test_saved_state_with_a_wrong_field_is_refused(field, value):
    dep, saved = _states()[True, Stage.UNMASKING]
    d = json.loads(saved)
    d["round"][field] = value
    with pytest.raises(ProtocolError, match="saved state"):
        dep.party(0, json.dumps(d).encode())


# ---------------------------------------------------------------- malicious server


def _signatures(r: Round, signers) -> dict:
    return {v: body(r.replies[Stage.CONSISTENCY_CHECK][v]) for v in signers}


def _forge(r: Round) -> Forge:
    return Forge(r.dep, r.session, r.round)


def test_forged_survivor_list_is_refused():
    """The server collects signatures of one list, then shows a client a list where client 5 dropped."""
    r = Round(Deployment(n=6, threshold=4))
    r.run_to(Stage.UNMASKING)
    req = _forge(r).request(0, range(5), [0, 1, 2, 3], _signatures(r, [0, 1, 2, 3]), [5])
    with pytest.raises(ProtocolError, match="differs from the one it signed"):
        r.dep.answer(0, req)


def test_split_survivor_lists_are_caught_by_signatures():
    """The server tells clients 0-2 that client 5 survived and clients 3-4 that it dropped."""
    r = Round(Deployment(n=6, threshold=4))
    r.run_to(Stage.CONSISTENCY_CHECK)
    f = _forge(r)
    sigs = {i: body(r.dep.answer(i, f.survivors(i, range(6) if i < 3 else range(5)))) for i in range(5)}
    with pytest.raises(ProtocolError, match="signature"):
        r.dep.answer(3, f.request(3, range(5), [0, 1, 2, 3], sigs, [5]))


def test_server_asking_for_both_shares_is_refused():
    r = Round(Deployment(n=6, threshold=4))
    r.run_to(Stage.UNMASKING)
    honest = r.inbox[0]
    with pytest.raises(ProtocolError, match="both shares"):
        r.dep.answer(0, _forge(r).request(0, range(6), [0, 1, 2, 3], _signatures(r, [0, 1, 2, 3]), [4]))
    assert len(r.dep.answer(0, honest)) > 0  # the honest request is still answered, once
    with pytest.raises(ProtocolError, match="out of order"):
        r.dep.answer(0, honest)


def test_too_few_signatures_or_survivors_are_refused():
    r = Round(Deployment(n=6, threshold=4))
    r.run_to(Stage.UNMASKING)
    with pytest.raises(ProtocolError, match="fewer than t"):
        r.dep.answer(0, _forge(r).request(0, range(6), [0, 1, 2], _signatures(r, [0, 1, 2]), []))
    r2 = Round(Deployment(n=6, threshold=4))
    r2.run_to(Stage.CONSISTENCY_CHECK)
    with pytest.raises(ProtocolError, match="fewer than t"):
        r2.dep.answer(0, _forge(r2).survivors(0, [0, 1, 2]))


def test_survivor_list_omitting_the_client_is_refused():
    r = Round(Deployment(n=6, threshold=4))
    r.run_to(Stage.CONSISTENCY_CHECK)
    with pytest.raises(ProtocolError, match="omits this client"):
        r.dep.answer(0, _forge(r).survivors(0, range(1, 6)))


def test_key_list_with_a_forged_key_is_refused():
    r = Round(Deployment(n=5, threshold=3))
    r.run_to(Stage.SHARE_KEYS)
    bad = bytearray(r.inbox[0])
    bad[-100] ^= 1  # inside the last record's keys
    with pytest.raises(ProtocolError):
        r.dep.answer(0, bytes(bad))


def _substitute_key(r: Round, to: int, peer: int) -> bytes:
    """The key list for client `to` with the masking key of `peer` replaced by the server's own."""
    from securefl import crypto

    records = {v: body(m) for v, m in r.replies[Stage.ADVERTISE_KEYS].items()}
    rec = bytearray(records[peer])
    rec[msg.KEY:2 * msg.KEY] = crypto.x25519_keypair()[1]
    return _forge(r).key_list(to, [v for v in records if v != to], records | {peer: bytes(rec)})


def test_substituted_key_is_refused_with_signed_keys():
    """Default (active) mode: a server that swaps a peer's key for its own is caught by the key's signature."""
    r = Round(Deployment(n=5, threshold=3))
    r.run_to(Stage.SHARE_KEYS)
    with pytest.raises(ProtocolError, match="key record of client 2 as relayed by the server: invalid signature"):
        r.dep.answer(0, _substitute_key(r, 0, 2))
    assert len(r.dep.answer(0, r.inbox[0])) > 0  # the genuine list is still accepted


def test_semi_honest_mode_accepts_substituted_keys():
    """What signed_keys=False gives up: nothing stops a malicious server from substituting keys."""
    r = Round(Deployment(n=5, threshold=3, signed_keys=False))
    r.run_to(Stage.SHARE_KEYS)
    assert len(r.dep.answer(0, _substitute_key(r, 0, 2))) > 0


FLAGS = [(True, True), (True, False), (False, False)]


@pytest.mark.parametrize("server_flags", FLAGS)
@pytest.mark.parametrize("client_flags", FLAGS)
def test_client_refuses_a_setup_with_other_flags(server_flags, client_flags):
    """A setup whose signed_keys / consistency_check differ from the client's configuration is refused."""
    dep = Deployment(n=5, threshold=3, signed_keys=client_flags[0], consistency_check=client_flags[1])
    other = Deployment(n=5, ids=dep.ids, setup_seed=dep.config.setup_seed, threshold=3, signed_keys=server_flags[0],
                       consistency_check=server_flags[1])
    session = os.urandom(16)
    f = Forge(dep, session, 1)
    if server_flags == client_flags:
        assert len(dep.answer(0, f.setup(0, other.policy))) > 0
    else:
        with pytest.raises(ProtocolError, match="setup differs from this client's configuration in .*(signed_keys|"
                                                "consistency_check)"):
            dep.answer(0, f.setup(0, other.policy))
    fields = list(dep.policy.setup_fields(f.ring_bits, f.length))
    fields[-1] = 2  # an out-of-range flag
    with pytest.raises(ProtocolError, match=r"signed_keys \(server 2"):
        dep.answer(1, f.setup(1, fields=fields))


def test_key_list_too_small_is_refused():
    r = Round(Deployment(n=5, threshold=4))
    r.run_to(Stage.SHARE_KEYS)
    records = {v: body(m) for v, m in r.replies[Stage.ADVERTISE_KEYS].items()}
    with pytest.raises(ProtocolError, match="fewer than t"):
        r.dep.answer(0, _forge(r).key_list(0, [1, 2], records))


def test_tampered_share_ciphertext_is_reported_and_the_round_goes_on():
    """A share entry altered on the way does not open: the holder keeps no share of that dealer and no mask with it,
    reports it after its masked input, and the round ends exactly without the dealer (whose masks with the other
    survivors the server removes with its recovered key)."""
    r = Round(Deployment(n=5, threshold=3))
    r.run_to(Stage.MASKED_INPUT)
    bad = bytearray(r.inbox[1])
    bad[-5] ^= 0x40  # in the last sender's (client 4's) ciphertext
    r.inbox[1] = bytes(bad)
    replies = r.answer()
    assert reported(_forge(r), replies[1], 1) == [4] and reported(_forge(r), replies[2], 2) == []
    assert r.dep.secrets(1).senders.tolist() == [0, 2, 3]
    r.deliver(replies)
    totals = r.finish()
    exact_sum(r, totals, [0, 1, 2, 3])
    assert list(totals.params["rejected"]) == [4] and "its shares to client/1 did not open" in totals.params[
        "rejected"][4]


def test_setup_with_another_threshold_or_graph_is_refused():
    """Parameters come from each client's own configuration: another t, or the same t with another graph seed,
    is refused."""
    dep = Deployment(n=5, threshold=3)
    f = Forge(dep, os.urandom(16), 1)
    for other, match in [(Deployment(n=5, ids=dep.ids, setup_seed=dep.config.setup_seed, threshold=4),
                          r"threshold t \(server 4"),
                         (Deployment(n=5, ids=dep.ids, threshold=3), "setup digest differs")]:
        with pytest.raises(ProtocolError, match=match):
            dep.answer(0, f.setup(0, other.policy))


def _reveals(r: Round, stage_drop=()):
    r.run_to(Stage.UNMASKING, drop=stage_drop)
    return r.answer()


def test_server_refuses_bad_reconstruction():
    """A client that reveals a wrong b-share makes the server raise, never return a wrong sum."""
    r = Round(Deployment(n=5, threshold=3))
    replies = _reveals(r)
    bad = bytearray(replies[0])
    bad[wire.PARTY_HEADER_SIZE + 9 + 4 * 5] ^= 1  # client 0's b-share of client 0: low byte of its first element
    with pytest.raises(ProtocolError, match="commitment|inconsistent"):
        r.deliver(replies | {0: bytes(bad)})


def test_server_refuses_a_key_share_of_a_survivor():
    """A (corrupt) client revealing a key share of a survivor is refused, so no pairwise mask is wrongly removed."""
    r = Round(Deployment(n=5, threshold=3))
    replies = _reveals(r)
    forged = (wire.Channel(cid(0), r.session, r.round).write(Kind.SECAGG_REVEAL, wire.SERVER)
              .array(np.zeros(0, np.uint32)).raw(b"").array(np.array([2], np.uint32)).raw(bytes(msg.REVEAL_ROW))
              .finish())
    with pytest.raises(ProtocolError, match="client/0 revealed a share it must not"):
        r.deliver(replies | {0: forged})


# ---------------------------------------------------------------- malformed, replayed, misrouted messages


def _captured(stage: Stage, signed: bool):
    """A round stopped at `stage`: (its deployment, the server, the clients' replies, the server's requests)."""
    r = Round(Deployment(n=5, m=4, threshold=3, signed_keys=signed))
    r.run_to(stage)
    requests = dict(r.inbox)
    saved = r.dep.clients[0].state_dict()
    server = copy.deepcopy(r.server)
    r.answer()
    return r, server, saved, requests


MODES = [(s, True) for s in Stage] + [(s, False) for s in Stage if s != Stage.CONSISTENCY_CHECK]  # (stage, signed)
CAPTURED = {m: _captured(*m) for m in MODES}


def _mutate(data: bytes, how: int, pos: int, byte: int, span: int = wire.PARTY_HEADER_SIZE) -> bytes:
    pos %= len(data)
    if how == 0:
        return data[:pos]
    if how == 1:
        return data + bytes([byte])
    b = bytearray(data)
    b[pos % span] ^= byte or 1  # default: the header (magic, version, kind, session, round, sender, receiver)
    return bytes(b)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(MODES), st.integers(0, 2), st.integers(0, 10**6), st.integers(0, 255))
def test_malformed_messages_to_the_server_raise_protocol_error(mode, how, pos, byte):
    r, server, _, _ = CAPTURED[mode]
    replies = dict(r.replies[mode[0]])
    replies[0] = _mutate(replies[0], how, pos, byte)
    with pytest.raises(ProtocolError):
        copy.deepcopy(server).step({cid(i): m for i, m in replies.items()})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(MODES), st.integers(0, 2), st.integers(0, 10**6), st.integers(0, 255))
def test_malformed_messages_to_a_client_raise_protocol_error(mode, how, pos, byte):
    r, _, saved, requests = CAPTURED[mode]
    with pytest.raises(ProtocolError):
        r.dep.party(0, saved).handle(_mutate(requests[0], how, pos, byte), r.dep.update(0))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(MODES), st.integers(0, 10**6), st.integers(1, 255))
def test_flipped_body_bytes_never_crash_a_client(mode, pos, byte):
    """Anywhere in the body, a flipped bit is refused with ProtocolError or (for unauthenticated fields) accepted."""
    r, _, saved, requests = CAPTURED[mode]
    b = bytearray(requests[0])
    b[wire.PARTY_HEADER_SIZE + pos % (len(b) - wire.PARTY_HEADER_SIZE)] ^= byte
    try:
        r.dep.party(0, saved).handle(bytes(b), r.dep.update(0))
    except ProtocolError:
        pass


@pytest.mark.parametrize("mode", MODES)
def test_replayed_messages_from_another_round_are_refused(mode):
    stage, signed = mode
    other = Round(Deployment(n=5, m=4, threshold=3, signed_keys=signed))
    other.run_to(stage)
    r, server, saved, _ = CAPTURED[mode]
    with pytest.raises(ProtocolError, match="another session|setup digest differs"):
        r.dep.party(0, saved).handle(other.inbox[0], r.dep.update(0))
    replayed = other.dep.answer(0, other.inbox[0])
    with pytest.raises(ProtocolError, match="another session"):
        copy.deepcopy(server).step({cid(i): m for i, m in (r.replies[stage] | {0: replayed}).items()})


def test_unexpected_or_misrouted_senders_are_refused():
    r = Round(Deployment(n=5, m=4, threshold=3))
    r.run_to(Stage.SHARE_KEYS)
    r.step(drop=(4,))  # client 4 never sends its shares
    ghost = wire.Channel(cid(4), r.session, r.round).write(Kind.SECAGG_MASKED_INPUT, wire.SERVER).array(
        np.zeros(5, np.uint32)).finish()
    honest = r.answer()
    with pytest.raises(ProtocolError, match="unexpected sender client/4"):
        copy.deepcopy(r.server).step({cid(i): m for i, m in (honest | {4: ghost}).items()})
    with pytest.raises(ProtocolError, match="sent by client/1, expected client/0"):
        copy.deepcopy(r.server).step({cid(i): m for i, m in (honest | {0: honest[1]}).items()})
    with pytest.raises(ProtocolError, match="addressed to client/1, not client/0"):
        r.dep.answer(0, Round(r.dep, r.session, r.round + 1).inbox[1])


def test_messages_out_of_order_are_refused():
    r = Round(Deployment(n=5, threshold=3))
    r.run_to(Stage.MASKED_INPUT)
    with pytest.raises(ProtocolError, match="SECAGG_SETUP out of order"):
        r.dep.answer(0, r.sent[Stage.ADVERTISE_KEYS][0])
    with pytest.raises(ProtocolError, match="SECAGG_PEER_KEYS out of order"):
        r.dep.answer(0, r.sent[Stage.SHARE_KEYS][0])
    with pytest.raises(ProtocolError, match="before any setup"):
        Deployment(n=5, threshold=3).answer(0, r.inbox[0])
    r.finish()
    with pytest.raises(ProtocolError, match="replies after the round finished"):
        r.server.step({})


# ---------------------------------------------------------------- the server's view


def _server_view(x0: float, x1: float, m: int, drop=()) -> np.ndarray:
    """The masked input of client 0 when client 0 holds x0 and client 1 holds x1 (others 0)."""
    dep = Deployment(n=5, m=m, threshold=3)
    dep.ups = [torch.full((m,), x0), torch.full((m,), x1)] + [torch.zeros(m)] * 3
    r = Round(dep)
    r.run_to(Stage.MASKED_INPUT)
    replies = r.answer(drop)
    return _forge(r).masked(replies[0], 0)


def test_server_view_is_independent_of_the_inputs():
    """Two input sets with the same sum: client 0's masked vector is uniform and identically distributed."""
    m = 4000
    a = _server_view(3.0, -3.0, m).astype(np.float64) / 2**32
    b = _server_view(-3.0, 3.0, m, drop=(4,)).astype(np.float64) / 2**32
    assert stats.kstest(a, "uniform").pvalue > P_MIN
    assert stats.kstest(b, "uniform").pvalue > P_MIN
    assert stats.ks_2samp(a, b).pvalue > P_MIN
    top = np.bincount((a * 16).astype(int), minlength=16)
    assert stats.chisquare(top).pvalue > P_MIN


@pytest.mark.slow
def test_many_clients_sparse_graph_with_dropouts():
    n = 300
    g = torch.Generator().manual_seed(0)
    ups = [torch.rand(200, generator=g) - 0.5 for _ in range(n)]
    rng = np.random.default_rng(0)
    dropped = {int(i): str(rng.choice(STAGES)) for i in rng.choice(n, 15, replace=False)}
    res = SecAgg(neighbors="auto", dropout_rate=0.05, corrupt_fraction=0.05, seed=0).aggregate(ups, dropped=dropped)
    inc = included(n, dropped)
    ref = sum(ups[i].double() for i in inc)
    assert res.report.survivors == inc
    assert (res.sum.double() - ref).abs().max() <= len(inc) * 2**-16
