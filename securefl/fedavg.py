"""Federated averaging with a pluggable (secure) aggregator: the loop behind `securefl run`.

Each round every selected client trains the global model on its own shard, its update (local
minus global state, integer buffers included) goes through the aggregator, and the global model
moves by the aggregated mean. With `sample_rate` q < 1 each client is selected for a round
independently with probability q (Poisson sampling, the sampling that DP accounting amplifies),
drawn from the OS CSPRNG: amplification holds only against an observer who cannot predict who took
part, so the sample never comes from `seed`; sampled-out clients are simply absent. Each selected
client drops with probability `dropout` at
`dropout_stage` (default: the scheme's input stage): it takes part in the protocol up to that
stage and then vanishes, so the scheme's recovery runs (SecAgg's server reconstructs the masks
of clients that shared their keys but sent no input). The mean is weighted by sample counts;
with DP every client weighs the same (DP-FedAvg's choice: the noise, z * clip on the sum, is then
1 / (clients) of the mean, where sample-count weights would let a few large clients set the scale).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from securefl.aggregator import Aggregator
from securefl.crypto.prg import SecureUniform
from securefl.datasets import Federated
from securefl.errors import DropoutError, InputError

log = logging.getLogger(__name__)


class MLP(nn.Module):
    """Two-layer perceptron for flat inputs."""

    def __init__(self, num_features: int, num_classes: int, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(num_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TinyCNN(nn.Module):
    """A small CNN with BatchNorm (its integer buffer num_batches_tracked is aggregated exactly)."""

    def __init__(self, side: int, num_classes: int):
        super().__init__()
        self.side = side
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        )
        self.head = nn.Linear(32 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.view(-1, 1, self.side, self.side)).flatten(1))


def make_model(kind: str, num_features: int, num_classes: int) -> nn.Module:
    """'mlp' or 'cnn' (the CNN expects square images flattened row by row)."""
    if kind == "mlp":
        return MLP(num_features, num_classes)
    if kind == "cnn":
        side = int(round(num_features**0.5))
        return TinyCNN(side, num_classes)
    raise InputError(f"unknown model {kind!r}; choose 'mlp' or 'cnn'")


@dataclass
class RoundMetrics:
    """What one round did and cost."""

    round: int
    accuracy: float
    loss: float
    train_seconds: float
    aggregate_seconds: float
    client_bytes: float  # mean bytes sent per client that sent anything
    participants: int  # clients selected for the round, the dropped ones included
    survivors: int  # clients whose input is in the aggregate
    dropped: dict[int, str]  # client id -> the stage at which it vanished
    epsilon: float | None = None
    error: str | None = None
    params: dict = field(default_factory=dict)  # the round's scheme parameters (report.params)

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) on a data set."""
    model.eval()
    with torch.no_grad():
        logits = model(x)
        return float((logits.argmax(1) == y).float().mean()), float(nn.functional.cross_entropy(logits, y))


def local_update(
    model: nn.Module,
    start: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """Train from `start` on one client's data; return the update (trained minus start state)."""
    model.load_state_dict(start)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    for _ in range(epochs):
        for batch in torch.randperm(len(y), generator=generator).split(batch_size):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            opt.step()
    return {k: v.detach() - start[k] for k, v in model.state_dict().items()}


def check_noise(aggregator: Aggregator, num_params: int, clients_per_round: float) -> float | None:
    """Log a warning when the DP noise per coordinate of the mean exceeds the clipped signal; return that ratio.

    A mean of clients_per_round updates clipped to L2 <= clip carries at most clip / sqrt(d) per
    coordinate (all updates aligned, spread evenly); the noise adds z * clip / clients_per_round to
    every coordinate. Their ratio, z * sqrt(d) / clients, above 1 means the noise drowns even the best
    case signal and training will not improve the model.
    """
    mech = aggregator.dp
    if mech is None:
        return None
    ratio = mech.noise_multiplier * math.sqrt(num_params) / max(clients_per_round, 1e-9)
    if ratio > 1:
        log.warning(
            "DP noise exceeds the signal: noise std per coordinate of the mean, z*clip/clients = %.3g, is %.1fx "
            "the most a clipped mean carries per coordinate, clip/sqrt(d) = %.3g (z=%.3g, d=%d parameters, "
            "%.0f clients per round); the model will barely learn. Use at least z*sqrt(d) = %.0f clients per "
            "round, a smaller model, or a larger privacy budget.",
            mech.noise_multiplier * mech.clip / max(clients_per_round, 1e-9), ratio, mech.clip / math.sqrt(num_params),
            mech.noise_multiplier, num_params, clients_per_round, mech.noise_multiplier * math.sqrt(num_params))
    return ratio


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
    """Run federated averaging through `aggregator`; return the final model and per-round metrics.

    A round whose aggregation fails with DropoutError, or in which no client was sampled, leaves
    the global model unchanged. dropout_stage: one of aggregator.stages (None: its input_stage).
    """
    stage = aggregator.input_stage if dropout_stage is None else dropout_stage
    if stage not in aggregator.stages:
        raise InputError(f"dropout stage {stage!r} is not a stage of {aggregator.scheme}; "
                         f"its stages: {', '.join(aggregator.stages)}")
    sends_input = aggregator.stages.index(stage) > aggregator.stages.index(aggregator.input_stage)
    torch.manual_seed(seed)
    net = make_model(model, data.num_features, data.num_classes)
    local = make_model(model, data.num_features, data.num_classes)
    gen = torch.Generator().manual_seed(seed)
    drop_rng = np.random.default_rng(seed)
    sample_rng = SecureUniform()  # the DP amplification by sampling holds only if nobody can predict the sample
    n = len(data.clients)
    weights = [1 if aggregator.dp is not None else len(y) for _, y in data.clients]
    num_params = sum(v.numel() for v in net.state_dict().values() if v.is_floating_point())
    check_noise(aggregator, num_params, n * sample_rate * (1.0 if sends_input else 1.0 - dropout))
    history = []
    for r in range(1, rounds + 1):
        start = {k: v.clone() for k, v in net.state_dict().items()}
        members = range(n) if sample_rate >= 1.0 else np.flatnonzero(sample_rng.random(n) < sample_rate).tolist()
        dropped = {j: stage for j in range(len(members)) if drop_rng.random() < dropout}
        t0 = time.perf_counter()
        updates = [  # a client that vanishes before sending its input never trains; a placeholder stands in
            {k: torch.zeros_like(v) for k, v in start.items()}
            if j in dropped and not sends_input
            else local_update(local, start, *data.clients[i], epochs=local_epochs, lr=lr, batch_size=batch_size,
                              generator=gen)
            for j, i in enumerate(members)
        ]
        t1 = time.perf_counter()
        error, survivors, client_bytes, eps, params = None, 0, 0.0, None, {}
        try:
            if not updates:
                raise DropoutError("no client was sampled this round")
            result = aggregator.aggregate(updates, weights=[weights[i] for i in members], dropped=dropped)
        except DropoutError as e:
            error = str(e)
        else:
            net.load_state_dict({k: start[k] + result.mean[k] for k in start})
            rep = result.report
            survivors, client_bytes, eps, params = len(rep.survivors), rep.mean_bytes_sent("client"), rep.epsilon, \
                rep.params
        t2 = time.perf_counter()
        acc, loss = evaluate(net, *data.test)
        m = RoundMetrics(r, acc, loss, t1 - t0, t2 - t1, client_bytes, len(members), survivors,
                         {members[j]: s for j, s in dropped.items()}, eps, error, params)
        history.append(m)
        if on_round:
            on_round(m)
    return net, history
