"""securefl over Flower's Grid and ClientApp mods, without Ray: a Grid that runs the ClientApps in this process
(tests/flower_local.py, every message and Context through Flower's serde). Each round is checked against the
in-process aggregate of the same scheme and inputs, and against the exact float64 mean."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytest.importorskip("flwr", reason="the flower extra (pip install -e '.[flower]')")
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.serverapp.strategy import (
    DifferentialPrivacyServerSideFixedClipping,
    FedAdam,
    FedAvg,
    FedMedian,
    Krum,
)

import securefl
from securefl import dp
from securefl.errors import ConfigError, ProtocolError
from securefl.flower import (
    SecureGrid,
    SecureStrategy,
    hello,
    secure_mod,
    simulation_parties,
    simulation_resolver,
    spec_of_arrays,
    write_federation,
)
from securefl.flower.node import load_config
from securefl.flower.records import STATE, stage_content
from securefl.keys import Identity
from securefl.schemes import scheme_class
from securefl.session import new_session
from securefl.wire import PartyId
from tests import flower_apps as fa
from tests.flower_local import LocalGrid, enter_run

N = 6
CLIP, WEIGHT_BOUND = fa.CLIP, fa.WEIGHT_BOUND
DEADLINE = 0.5  # the local grid answers at once: a deadline only runs out for a node that never answers
TIMEOUTS = {"default": DEADLINE, "securefl.hello": DEADLINE}
SCHEMES = list(fa.AGGREGATORS)


@pytest.fixture(autouse=True)
def _run_identity():
    enter_run()


@pytest.fixture(scope="module")
def feds(tmp_path_factory):
    """scheme -> (folder, config) of a federation of N clients (and the scheme's helpers or key holder)."""
    made = {}

    def get(name):
        if name not in made:
            folder = tmp_path_factory.mktemp(name)
            made[name] = folder, write_federation(folder, fa.AGGREGATORS[name](), spec_of_arrays(fa.initial_arrays()),
                                                  N, weight_bound=WEIGHT_BOUND, timeouts=TIMEOUTS)
        return made[name]

    return get


@pytest.fixture(scope="module")
def fed(feds):
    return feds("plaintext")


def local_grid(folder, n=None, **kw) -> LocalGrid:
    """The test app on one node per party of the federation in `folder` (clients first)."""
    n = len(simulation_parties(load_config(folder / "config.json"))) if n is None else n
    return LocalGrid(fa.make_app(str(folder)), n, **kw)


def fedavg(n=N) -> FedAvg:
    return FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n, min_available_nodes=n)


def start(strategy, grid, rounds=2):
    # timeout: the strategy's deadline, which securefl gives the input stage (training) when the configuration
    # names no deadline for it
    return strategy.start(grid=grid, initial_arrays=fa.initial_arrays(), num_rounds=rounds, timeout=DEADLINE,
                          train_config=ConfigRecord({"lr": 0.1}))


# ---------------------------------------------------------------- a whole run

@pytest.mark.parametrize("scheme", SCHEMES)
def test_fedavg_over_flower_equals_in_process_round_by_round(feds, scheme):
    folder, config = feds(scheme)
    grid = local_grid(folder)
    strategy = SecureStrategy(fedavg(), config)
    result = start(strategy, grid, rounds=2)
    agg = fa.AGGREGATORS[scheme](weight_bound=WEIGHT_BOUND)
    start_model = fa.flat(fa.initial_arrays())
    expected, in_process = start_model.copy(), start_model.copy()
    for rec in strategy.rounds:
        assert rec.error is None and rec.report.survivors == list(range(N)) and rec.report.dropped == {}
        ref = fa.in_process(agg, rec.round, range(N))
        # the same parties send the same number of securefl bytes as in the in-process round
        assert rec.report.bytes_sent.keys() == ref.report.bytes_sent.keys()
        assert rec.report.bytes_sent["client/0"] == pytest.approx(ref.report.bytes_sent["client/0"], rel=0.01)
        expected = expected + fa.exact_mean(rec.round, range(N))
        in_process = in_process + np.concatenate([ref.mean[k].double().numpy().ravel() for k in fa.SHAPES])
    got = fa.flat(result.arrays)
    tol = 2 * fa.tolerance(range(N))  # two rounds, each within the codec's resolution
    assert np.abs(got - expected).max() <= tol and np.abs(got - in_process).max() <= 2 * tol
    assert np.abs(got - start_model).max() > 0.1  # the model moved
    # the user's train function ran exactly once per round on every client, its own Context.state kept
    for i in range(N):
        assert grid.context(grid.node(i)).state.metric_records["user"]["train-calls"] == 2
    # the strategy's metric aggregation ran on the clients' clear metrics
    assert result.train_metrics_clientapp[2]["loss"] == pytest.approx(
        sum(fa.weight(i) * i for i in range(N)) / sum(fa.weight(i) for i in range(N)))


def test_mean_matches_the_in_process_mean_within_the_codec_resolution(fed):
    folder, config = fed
    grid = local_grid(folder)
    strategy = SecureStrategy(fedavg(), config)
    result = start(strategy, grid, rounds=1)
    ref = fa.in_process(securefl.Plaintext(clip=CLIP, weight_bound=WEIGHT_BOUND), 1, range(N))
    ref_new = fa.flat(fa.initial_arrays()) + np.concatenate([ref.mean[k].double().numpy().ravel() for k in fa.SHAPES])
    tol = fa.tolerance(range(N))
    assert np.abs(fa.flat(result.arrays) - ref_new).max() <= 2 * tol
    assert np.abs(ref_new - fa.flat(fa.initial_arrays()) - fa.exact_mean(1, range(N))).max() <= tol


def test_messages_through_securefl_only(fed):
    """The global model reaches each client at the input stage only, and no reply holds the trained model."""
    folder, config = fed
    grid = local_grid(folder)
    start(SecureStrategy(fedavg(), config), grid, rounds=1)
    stages = {}
    for _, m in grid.delivered:
        meta = m.content.config_records["securefl.meta"]
        stages.setdefault(str(meta["stage"]), []).append(sorted(m.content.array_records))
    assert set(stages) == {"securefl.hello", "upload"}
    assert all(recs == ["securefl.payload"] for recs in stages["securefl.hello"])
    assert all(recs == ["arrays", "securefl.payload"] for recs in stages["upload"])


# ---------------------------------------------------------------- dropouts

def _stages():
    return [(name, stage) for name in SCHEMES for stage in fa.AGGREGATORS[name]().stages]


@pytest.mark.parametrize("scheme,stage", _stages())
def test_dropout_at_each_stage_matches_in_process(feds, scheme, stage):
    _check_dropout(feds, scheme, stage, silent=False)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_node_missing_the_input_deadline_drops(feds, scheme):
    _check_dropout(feds, scheme, fa.AGGREGATORS[scheme]().input_stage, silent=True)


def _check_dropout(feds, scheme, stage, silent):
    """Client 2 crashes (error reply) or goes silent (deadline) at `stage`: the round ends as the in-process round
    with client 2 dropped at that stage (recovered, or its input kept when it had sent it)."""
    folder, config = feds(scheme)
    grid = local_grid(folder)
    grid.hooks.append(_fail_at(grid.node(2), stage, silence=grid if silent else None))
    strategy = SecureStrategy(fedavg(), config)
    result = start(strategy, grid, rounds=1)
    rec = strategy.rounds[0]
    ref = fa.in_process(fa.AGGREGATORS[scheme](weight_bound=WEIGHT_BOUND), 1, range(N), {2: stage})
    assert rec.error is None and rec.report.survivors == ref.report.survivors
    # dropped: the clients that missed a stage they were sent (the in-process report lists the schedule, which
    # names a stage even where the scheme sends a client nothing, e.g. HE's decrypt)
    addressed = any(dst == grid.node(2) and m.content["securefl.meta"]["stage"] == stage for dst, m in grid.delivered)
    assert rec.report.dropped == (ref.report.dropped if addressed else {})
    got = fa.flat(result.arrays) - fa.flat(fa.initial_arrays())
    assert np.abs(got - fa.exact_mean(1, ref.report.survivors)).max() <= fa.tolerance(ref.report.survivors)


def _fail_at(node, stage, silence=None):
    def hook(dst, msg):
        meta = msg.content.config_records.get("securefl.meta")
        if dst == node and meta is not None and str(meta["stage"]) == stage:
            if silence is not None:
                silence.silent.add(node)  # this message and every later one go unanswered
                return
            raise RuntimeError("node crashed")
    return hook


@pytest.mark.parametrize("scheme", SCHEMES)
def test_the_dropout_threshold_is_the_in_process_one(feds, scheme):
    """k clients dropping at the input stage: the fewest k that makes the in-process round fail with DropoutError
    fails the Flower round (the strategy keeps its model), and k - 1 does not."""
    from securefl.errors import DropoutError

    folder, config = feds(scheme)
    stage = scheme_class(config.scheme).input_stage
    ref = fa.AGGREGATORS[scheme](weight_bound=WEIGHT_BOUND)

    def in_process_fails(k):
        try:
            fa.in_process(ref, 1, range(N), {i: stage for i in range(k)})
        except DropoutError:
            return True
        return False

    k = next(k for k in range(1, N + 1) if in_process_fails(k))
    for drop, fails in ((k, True), (k - 1, False)):
        grid = local_grid(folder)
        for p in range(drop):
            grid.hooks.append(_fail_at(grid.node(p), stage))
        strategy = SecureStrategy(fedavg(), config)
        result = start(strategy, grid, rounds=1)
        rec = strategy.rounds[0]
        if fails:
            assert "DropoutError" in rec.error and rec.report is None
            assert len(result.arrays) == 0  # the strategy never got an aggregate: its model is the initial one
        else:
            assert rec.error is None and rec.report.survivors == list(range(drop, N))


@pytest.mark.parametrize("scheme", [s for s in SCHEMES if sum(fa.AGGREGATORS[s]().roles())])
def test_a_helper_or_key_holder_that_dies_fails_the_round(feds, scheme):
    folder, config = feds(scheme)
    grid = local_grid(folder)
    other = grid.node(N)  # the first party after the clients: helper/1 or the key holder
    first = next(s for s in scheme_class(config.scheme).stages)
    grid.hooks.append(lambda dst, msg: grid.silent.add(other) if dst == other and "securefl.meta" in msg.content
                      and str(msg.content["securefl.meta"]["stage"]) != "securefl.hello" else None)
    strategy = SecureStrategy(fedavg(), config)
    result = start(strategy, grid, rounds=1)
    assert strategy.rounds[0].error is not None and strategy.rounds[0].report is None, first
    assert len(result.arrays) == 0


# ---------------------------------------------------------------- strategies

def test_fedadam_through_securefl_matches_plain_flower_fedadam(tmp_path):
    # clip 8: no value is clipped, so plain Flower's mean is the same mean
    config = write_federation(tmp_path, securefl.Plaintext(clip=8.0), spec_of_arrays(fa.initial_arrays()), N,
                              weight_bound=WEIGHT_BOUND, timeouts=TIMEOUTS)
    kw = dict(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=N, min_available_nodes=N, eta=0.1, tau=0.1)
    secure = start(SecureStrategy(FedAdam(**kw), config), local_grid(tmp_path), rounds=2)
    plain = start(FedAdam(**kw), LocalGrid(fa.make_app(None, secure=False), N), rounds=2)
    moved = np.abs(fa.flat(plain.arrays) - fa.flat(fa.initial_arrays())).max()
    assert moved > 0.1
    # FedAdam divides by sqrt(v) + tau >= 0.1: a mean off by the codec's resolution moves the model by 10x that
    assert np.abs(fa.flat(secure.arrays) - fa.flat(plain.arrays)).max() <= 10 * 2 * fa.tolerance(range(N), clip=8.0)
    assert dict(secure.train_metrics_clientapp[2]) == pytest.approx(dict(plain.train_metrics_clientapp[2]))


def test_flower_client_side_dp_clipping_works_inside_securefl(fed):
    """DifferentialPrivacyClientSideFixedClipping with Flower's fixedclipping_mod after securefl's mod: the same
    model as the same strategy in plain Flower (noise made negligible so that the two can be compared)."""
    from flwr.clientapp import ClientApp
    from flwr.clientapp.mod import fixedclipping_mod
    from flwr.serverapp.strategy import DifferentialPrivacyClientSideFixedClipping

    folder, config = fed
    results = []
    for mods in ([secure_mod(simulation_resolver(str(folder))), fixedclipping_mod], [fixedclipping_mod]):
        app = ClientApp(mods=mods)
        app.train()(fa.train)
        strategy = DifferentialPrivacyClientSideFixedClipping(fedavg(), noise_multiplier=1e-9, clipping_norm=0.5,
                                                              num_sampled_clients=N)
        results.append(start(SecureStrategy(strategy, config) if len(mods) == 2 else strategy, LocalGrid(app, N),
                             rounds=1))
    secure, plain = (fa.flat(r.arrays)[:-1] for r in results)  # floats (the int counter is Flower's business)
    start_model = fa.flat(fa.initial_arrays())[:-1]
    assert np.abs(plain - start_model).max() > 0.05
    assert np.abs(secure - plain).max() <= fa.tolerance(range(N))


@pytest.mark.parametrize("make", [lambda: Krum(), lambda: FedMedian(),
                                  lambda: DifferentialPrivacyServerSideFixedClipping(FedAvg(), 1.0, 1.0, 2)])
def test_strategies_that_read_individual_updates_are_refused(fed, make):
    with pytest.raises(ConfigError, match="individual updates"):
        SecureStrategy(make(), fed[1])


def test_legacy_default_workflow(fed):
    from flwr.client import NumPyClient
    from flwr.clientapp import ClientApp
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.strategy import FedAvg as LegacyFedAvg
    from flwr.server.workflow.constant import MAIN_PARAMS_RECORD

    from securefl.flower import secure_default_workflow

    folder, config = fed

    class Client(NumPyClient):
        def __init__(self, i):
            self.i = i

        def fit(self, parameters, cfg):
            d = fa.delta(self.i, int(cfg["round"]))
            new = [np.asarray(p + d[k], p.dtype) for p, k in zip(parameters, fa.SHAPES, strict=True)]
            return new, fa.weight(self.i), {}

    app = ClientApp(client_fn=lambda ctx: Client(int(ctx.node_config["partition-id"])).to_client(),
                    mods=[secure_mod(simulation_resolver(str(folder)))])
    grid = LocalGrid(app, N)
    init = [np.array(a.numpy()) for a in fa.initial_arrays().values()]
    strategy = LegacyFedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=N, min_available_clients=N,
                            initial_parameters=ndarrays_to_parameters(init), on_fit_config_fn=lambda r: {"round": r})
    ctx = LegacyContext(context=Context(run_id=7, node_id=1, node_config={}, state=RecordDict(), run_config={}),
                        config=ServerConfig(num_rounds=2), strategy=strategy)
    sg = secure_default_workflow(config)(grid, ctx)
    from flwr.compat.common import recorddict_compat as compat

    final = parameters_to_ndarrays(compat.arrayrecord_to_parameters(ctx.state.array_records[MAIN_PARAMS_RECORD], True))
    got = np.concatenate([np.asarray(a, np.float64).ravel() for a in final])
    assert [r.error for r in sg.rounds] == [None, None]
    expected = fa.flat(fa.initial_arrays()) + fa.exact_mean(1, range(N)) + fa.exact_mean(2, range(N))
    # floats only: legacy FedAvg's in-place average multiplies an integer array by its weight cast to that
    # integer dtype (0), with or without securefl
    assert np.abs(got[:-1] - expected[:-1]).max() <= 2 * fa.tolerance(range(N))


def test_evaluate_passes_through_to_clients_only(feds):
    folder, config = feds("additive")  # two helpers besides the clients: never sampled, never evaluated
    strategy = SecureStrategy(FedAvg(fraction_train=1.0, fraction_evaluate=1.0, min_train_nodes=N,
                                     min_evaluate_nodes=N, min_available_nodes=N), config)
    grid = local_grid(folder)
    result = start(strategy, grid, rounds=1)
    assert result.evaluate_metrics_clientapp[1]["w-sum"] == pytest.approx(fa.flat(result.arrays)[:15].sum(), abs=1e-3)
    evaluated = sorted(dst for dst, m in grid.delivered if m.metadata.message_type == "evaluate")
    assert evaluated == [grid.node(i) for i in range(N)]


# ---------------------------------------------------------------- differential privacy

@pytest.mark.parametrize("scheme,mechanism", [("plaintext", dp.GaussianMechanism), ("secagg", dp.DistributedGaussian),
                                              ("ckks", dp.GaussianMechanism)])
def test_dp_noise_and_accounting_as_in_process(tmp_path, scheme, mechanism):
    agg = fa.AGGREGATORS[scheme](dp=mechanism(noise_multiplier=1.0, clip=1.0))
    config = write_federation(tmp_path, agg, spec_of_arrays(fa.initial_arrays()), N, weight_bound=WEIGHT_BOUND,
                              timeouts=TIMEOUTS)
    strategy = SecureStrategy(fedavg(), config)
    result = start(strategy, local_grid(tmp_path), rounds=2)
    eps = [r.report.epsilon for r in strategy.rounds]
    ref = fa.AGGREGATORS[scheme](weight_bound=WEIGHT_BOUND, dp=mechanism(noise_multiplier=1.0, clip=1.0))
    ref_eps = [fa.in_process(ref, r, range(N)).report.epsilon for r in (1, 2)]
    assert eps == pytest.approx(ref_eps) and 0 < eps[0] < eps[1]
    # noise of std about z * clip / (sum of normalised weights) per coordinate, far above the codec's resolution
    moved = fa.flat(result.arrays) - fa.flat(fa.initial_arrays())
    noisy = moved - fa.exact_mean(1, range(N)) - fa.exact_mean(2, range(N))
    assert np.abs(noisy).max() > 100 * fa.tolerance(range(N))


# ---------------------------------------------------------------- registration

def test_nodes_of_another_federation_are_not_registered(fed, tmp_path):
    folder, config = fed
    write_federation(tmp_path, securefl.Plaintext(clip=CLIP), spec_of_arrays(fa.initial_arrays()), N,
                     weight_bound=WEIGHT_BOUND, timeouts=TIMEOUTS)
    good, other = simulation_resolver(str(folder)), simulation_resolver(str(tmp_path))
    from flwr.clientapp import ClientApp

    app = ClientApp(mods=[secure_mod(lambda ctx: (other if ctx.node_config["partition-id"] >= 4 else good)(ctx))])
    app.train()(fa.train)
    grid = LocalGrid(app, N)
    sg = SecureGrid(grid, config)
    nodes = sg.register()
    assert sorted(str(p) for p in nodes) == [f"client/{i}" for i in range(4)]
    assert sorted(sg.get_node_ids()) == [grid.node(i) for i in range(4)]


def test_hello_answer_is_bound_to_session_node_and_directory(fed, tmp_path):
    folder, config = fed
    me = Identity.load(folder / "client-1.pem")
    session, nonce = new_session(), b"n" * 32
    req = hello.request(config, session, nonce, 7, 101)
    ans = hello.answer(req, config, me, 7, 101)
    assert hello.verify(ans, config, session, nonce, 7, 101) == PartyId.client(1)
    for args in [(new_session(), nonce, 7, 101), (session, b"m" * 32, 7, 101), (session, nonce, 8, 101),
                 (session, nonce, 7, 102)]:
        with pytest.raises(ProtocolError):
            hello.verify(ans, config, *args)
    with pytest.raises(ProtocolError, match="node"):  # a hello meant for another node
        hello.answer(req, config, me, 7, 102)
    imposter = Identity.generate("client/1")
    with pytest.raises(ProtocolError, match="invalid signature"):
        hello.verify(hello.answer(req, config, imposter, 7, 101), config, session, nonce, 7, 101)
    other = dataclasses.replace(config, clip=2.0)
    with pytest.raises(ProtocolError, match="another round configuration"):
        hello.answer(hello.request(other, session, nonce, 7, 101), config, me, 7, 101)


# ---------------------------------------------------------------- the node

def _node_call(folder, content, state=None, message_type="train", partition=0):
    app = fa.make_app(str(folder))
    ctx = Context(run_id=7, node_id=101, node_config={"partition-id": partition, "num-partitions": N},
                  state=state or RecordDict(), run_config={})
    msg = Message(content, dst_node_id=101, message_type=message_type)
    return app(msg, ctx), ctx


def test_by_default_a_node_takes_its_keys_from_its_own_node_config_only(fed):
    """secure_mod() never loads keys or a configuration from a path the server's run config names."""
    from flwr.clientapp import ClientApp

    folder, config = fed
    app = ClientApp(mods=[secure_mod()])
    app.train()(fa.train)
    ctx = Context(run_id=7, node_id=101, node_config={"partition-id": 0, "num-partitions": N}, state=RecordDict(),
                  run_config={"securefl-federation": str(folder)})
    req = hello.request(config, new_session(), b"n" * 32, 7, 101)
    msg = Message(stage_content(hello.HELLO_STAGE, req, {"config": config.fingerprint}), dst_node_id=101,
                  message_type="train")
    with pytest.raises(ConfigError, match="securefl-key"):
        app(msg, ctx)


def test_plain_train_is_refused_and_evaluate_passes(fed):
    folder, _ = fed
    content = RecordDict({"arrays": fa.initial_arrays(), "config": ConfigRecord({"server-round": 1})})
    with pytest.raises(ProtocolError, match="does not come through securefl"):
        _node_call(folder, content)
    reply, _ = _node_call(folder, content, message_type="evaluate")
    assert reply.content.metric_records["metrics"]["num-examples"] == fa.weight(0)


def test_stale_round_is_refused_and_state_of_another_configuration_dropped(fed):
    folder, config = fed
    coord = scheme_class(config.scheme).coordinator(config, session := new_session(), 3, [0])
    (data,) = coord.start().values()
    content = stage_content(coord.stage, data, {"weight-key": "num-examples", "config": config.fingerprint},
                            RecordDict({"arrays": fa.initial_arrays(), "config": ConfigRecord({"server-round": 1})}))
    reply, ctx = _node_call(folder, content)
    assert not reply.has_error() and "securefl.payload" in reply.content
    saved = ctx.state[STATE]
    assert bytes(saved["session"]) == session and int(saved["round"]) == 3
    old = scheme_class(config.scheme).coordinator(config, session, 2, [0])
    (data2,) = old.start().values()
    content2 = stage_content(old.stage, data2, {"weight-key": "num-examples", "config": config.fingerprint},
                             RecordDict({"arrays": fa.initial_arrays(), "config": ConfigRecord({"server-round": 1})}))
    with pytest.raises(ProtocolError, match="stale|not after"):
        _node_call(folder, content2, state=ctx.state)
    foreign = RecordDict({STATE: ConfigRecord({**dict(saved), "fingerprint": b"x" * 32})})
    reply3, _ = _node_call(folder, content2, state=foreign)  # another configuration's state: dropped, round 2 ok
    assert not reply3.has_error()


def test_a_node_in_two_federations_answers_each_under_its_own_configuration(fed, tmp_path):
    folder, config = fed
    other = write_federation(tmp_path, securefl.Plaintext(clip=CLIP), spec_of_arrays(fa.initial_arrays()), N,
                             weight_bound=WEIGHT_BOUND, timeouts=TIMEOUTS)
    from flwr.clientapp import ClientApp

    app = ClientApp(mods=[secure_mod(simulation_resolver(str(folder), str(tmp_path)))])
    app.train()(fa.train)
    for cfg in (config, other):
        strategy = SecureStrategy(fedavg(), cfg)
        start(strategy, LocalGrid(app, N), rounds=1)
        assert strategy.rounds[0].report.survivors == list(range(N))
    # a message under a configuration the node does not hold is refused, naming both
    coord = scheme_class(config.scheme).coordinator(config, new_session(), 1, [0])
    (data,) = coord.start().values()
    content = stage_content(coord.stage, data, {"config": b"\x01" * 32},
                            RecordDict({"arrays": fa.initial_arrays(), "config": ConfigRecord({"server-round": 1})}))
    with pytest.raises(ProtocolError, match="runs round configuration 0101"):
        _node_call(folder, content)


def test_weight_above_the_bound_drops_the_client_with_a_named_error(fed, tmp_path):
    config = write_federation(tmp_path, securefl.Plaintext(clip=CLIP), spec_of_arrays(fa.initial_arrays()), N,
                              weight_bound=12.0, timeouts=TIMEOUTS)
    strategy = SecureStrategy(fedavg(), config)
    start(strategy, local_grid(tmp_path), rounds=1)
    rec = strategy.rounds[0]
    assert rec.report.survivors == [0, 1, 2]  # weights 10, 11, 12
    assert "weight" in rec.failures["client/3"] and "client/3" in rec.failures


def test_model_that_does_not_match_the_configuration_fails_the_round(fed):
    folder, config = fed
    strategy = SecureStrategy(fedavg(), config)
    wrong = ArrayRecord({k: Array(np.zeros((2,), np.float32)) for k in fa.SHAPES})
    strategy.start(grid=local_grid(folder), initial_arrays=wrong, num_rounds=1)
    assert "does not match the round configuration" in strategy.rounds[0].error

