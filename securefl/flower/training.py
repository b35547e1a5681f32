"""`securefl run --engine flower`: the federated training of securefl.fedavg, run by Flower's simulation engine.

The same data split, model, initial weights, local training (securefl.fedavg.local_update), weights
(sample counts; 1 each under DP) and dropout schedule (the same draws, so the same clients drop at
the same stage in the same rounds) as the in-process loop; only the transport differs: each client
is a Flower SuperNode (a Ray actor) whose unchanged train function sits behind `secure_mod`, the
server a FedAvg strategy wrapped in `SecureStrategy`, and every party's key comes from a federation
written into a temporary folder. Local training draws its batches from a generator per client and
round (the in-process loop shares one generator across clients in order, which parallel nodes
cannot), so the two runs agree in accuracy, not bit for bit.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from torch import nn

from securefl.aggregator import Aggregator
from securefl.datasets import Federated
from securefl.deploy import write_federation
from securefl.errors import DropoutError, InputError
from securefl.fedavg import RoundMetrics, check_noise, evaluate, local_update, make_model
from securefl.flower.federation import simulation_parties
from securefl.flower.hello import HELLO_STAGE
from securefl.flower.node import secure_mod, simulation_resolver
from securefl.flower.records import meta_of, payload_bytes
from securefl.flower.strategy import SecureStrategy
from securefl.wire import peek

log = logging.getLogger(__name__)

TIMEOUTS = {"default": 300.0, "securefl.hello": 600.0}  # generous: Ray starts its actors during the first stages


def _dropout_mod(schedule: dict[int, dict[int, str]]) -> Callable:
    """A mod (outside securefl's) that makes client j vanish at stage s of round r when schedule[r][j] == s."""

    def dropout_mod(msg: Message, context: Context, call_next: Callable) -> Message:
        meta = meta_of(msg.content)
        if meta is not None and str(meta["stage"]) != HELLO_STAGE:
            me, stage = int(context.node_config["partition-id"]), str(meta["stage"])
            if schedule.get(peek(payload_bytes(msg.content, f"client {me}")).round, {}).get(me) == stage:
                raise DropoutError(f"client {me} drops at {stage} (simulated dropout)")
        return call_next(msg, context)

    return dropout_mod


def _client_app(folder: str, data: Federated, weights: list[float], model: str, local_epochs: int, lr: float,
                batch_size: int, seed: int, schedule: dict[int, dict[int, str]]) -> ClientApp:
    app = ClientApp(mods=[_dropout_mod(schedule), secure_mod(simulation_resolver(folder))])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)
        i = int(context.node_config["partition-id"])
        rnd = int(msg.content["config"]["server-round"])
        start = {k: v.clone() for k, v in msg.content["arrays"].to_torch_state_dict().items()}
        net = make_model(model, data.num_features, data.num_classes)
        start = {k: start[k].to(v.dtype) for k, v in net.state_dict().items()}  # FedAvg hands back ints as floats
        gen = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, rnd, i]).generate_state(1)[0]))
        update = local_update(net, start, *data.clients[i], epochs=local_epochs, lr=lr, batch_size=batch_size,
                              generator=gen)
        trained = ArrayRecord({k: start[k] + update[k] for k in start})
        return Message(RecordDict({"arrays": trained, "metrics": MetricRecord({"num-examples": weights[i]})}),
                       reply_to=msg)

    return app


def train(
    aggregator: Aggregator,
    data: Federated,
    *,
    model: str = "mlp",
    rounds: int = 20,
    local_epochs: int = 2,
    lr: float = 0.05,
    batch_size: int = 16,
    dropout: float = 0.0,
    dropout_stage: str | None = None,
    sample_rate: float = 1.0,
    seed: int = 0,
    on_round: Callable[[RoundMetrics], None] | None = None,
) -> tuple[nn.Module, list[RoundMetrics]]:
    """securefl.fedavg.train's federated averaging through Flower's simulation engine (same arguments, same result
    types). Every client takes part in every round (Flower samples a fixed number of nodes, not the Poisson sampling
    that DP accounting amplifies): sample_rate must be 1."""
    from flwr.simulation import run_simulation

    stage = aggregator.input_stage if dropout_stage is None else dropout_stage
    if stage not in aggregator.stages:
        raise InputError(f"dropout stage {stage!r} is not a stage of {aggregator.scheme}; "
                         f"its stages: {', '.join(aggregator.stages)}")
    if sample_rate != 1.0:
        raise InputError("--engine flower runs every client every round: Flower samples a fixed number of nodes, "
                         "not the Poisson sampling DP accounting assumes; use sample_rate 1")
    torch.manual_seed(seed)
    net = make_model(model, data.num_features, data.num_classes)
    n = len(data.clients)
    weights = [1 if aggregator.dp is not None else len(y) for _, y in data.clients]
    num_params = sum(v.numel() for v in net.state_dict().values() if v.is_floating_point())
    sends_input = aggregator.stages.index(stage) > aggregator.stages.index(aggregator.input_stage)
    check_noise(aggregator, num_params, n * (1.0 if sends_input else 1.0 - dropout))
    drop_rng = np.random.default_rng(seed)  # the in-process loop's draws, round by round
    schedule = {r: {j: stage for j in range(n) if drop_rng.random() < dropout} for r in range(1, rounds + 1)}
    history: list[RoundMetrics] = []
    flwr_log = logging.getLogger("flwr")
    level = flwr_log.level
    flwr_log.setLevel(logging.CRITICAL)  # each simulated dropout is an exception Flower logs with its traceback
    try:
        with tempfile.TemporaryDirectory(prefix="securefl-flower-") as folder:
            config = write_federation(folder, aggregator, net.state_dict(), n, weight_bound=float(max(weights)),
                                      timeouts=TIMEOUTS)
            strategy = SecureStrategy(FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n,
                                             min_available_nodes=n), config, aggregator=aggregator)

            def evaluate_fn(rnd: int, arrays: ArrayRecord) -> MetricRecord | None:
                if rnd == 0:
                    return None
                state = arrays.to_torch_state_dict()
                net.load_state_dict({k: state[k].to(v.dtype) for k, v in net.state_dict().items()})
                acc, loss = evaluate(net, *data.test)
                record = strategy.rounds[-1]
                for party, why in record.failures.items():  # Flower's own log of them is silenced (the planned ones)
                    if not party.startswith("client/") or int(party.split("/")[1]) not in schedule[rnd]:
                        log.warning("round %d: %s failed: %s", rnd, party, why)
                m = _metrics(rnd, acc, loss, record, schedule[rnd])
                history.append(m)
                if on_round:
                    on_round(m)
                return MetricRecord({"accuracy": acc, "loss": loss})

            server = ServerApp()

            @server.main()
            def main(grid: Grid, context: Context) -> None:
                strategy.start(grid=grid, initial_arrays=ArrayRecord(net.state_dict()), num_rounds=rounds,
                               timeout=TIMEOUTS["default"], evaluate_fn=evaluate_fn)

            run_simulation(server_app=server, client_app=_client_app(folder, data, weights, model, local_epochs, lr,
                                                                     batch_size, seed, schedule),
                           num_supernodes=len(simulation_parties(config)),
                           backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                           "init_args": {"num_cpus": os.cpu_count() or 1, "include_dashboard": False}})
    finally:
        flwr_log.setLevel(level)
    if len(history) != rounds:
        raise InputError(f"the Flower simulation ended after {len(history)} of {rounds} rounds")
    return net, history


def _metrics(rnd: int, acc: float, loss: float, record, planned: dict[int, str]) -> RoundMetrics:  # noqa: ANN001
    """One round's RoundMetrics from its securefl record (train seconds: the slowest client's, as nodes train in
    parallel; aggregation: the rest of the round's wall time)."""
    rep = record.report
    train_s = max(record.train_seconds.values(), default=0.0)
    total = sum(record.stage_seconds.values())
    return RoundMetrics(
        rnd, acc, loss, train_s, max(total - train_s, 0.0),
        rep.mean_bytes_sent("client") if rep else 0.0, len(record.clients), len(rep.survivors) if rep else 0,
        dict(rep.dropped) if rep else dict(planned), rep.epsilon if rep else None, record.error,
        rep.params if rep else {})
