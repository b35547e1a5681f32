"""Federated averaging with a pluggable (secure) aggregator: the loop behind `securefl run`.

Each round every client trains the global model on its own shard, its update (local minus
global state, integer buffers included) goes through the aggregator, and the global model
moves by the aggregated weighted mean. Clients may vanish each round (`dropout`). With
`sample_rate` q < 1 each client takes part in a round independently with probability q (Poisson
sampling, the sampling that DP accounting amplifies); sampled-out clients are simply absent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from securefl.aggregator import Aggregator
from securefl.datasets import Federated
from securefl.errors import DropoutError


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
    raise ValueError(f"unknown model {kind!r}; choose 'mlp' or 'cnn'")


@dataclass
class RoundMetrics:
    """What one round did and cost."""

    round: int
    accuracy: float
    loss: float
    train_seconds: float
    aggregate_seconds: float
    client_bytes: float  # mean bytes sent per participating client
    participants: int
    survivors: int
    epsilon: float | None = None
    error: str | None = None

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
    sample_rate: float = 1.0,
    seed: int = 0,
    on_round: Callable[[RoundMetrics], None] | None = None,
) -> tuple[nn.Module, list[RoundMetrics]]:
    """Run federated averaging through `aggregator`; return the final model and per-round metrics.

    A round whose aggregation fails with DropoutError, or in which no client was sampled, leaves
    the global model unchanged.
    """
    torch.manual_seed(seed)
    net = make_model(model, data.num_features, data.num_classes)
    local = make_model(model, data.num_features, data.num_classes)
    gen = torch.Generator().manual_seed(seed)
    drop_rng = np.random.default_rng(seed)
    sample_rng = np.random.default_rng([seed, 1])
    n = len(data.clients)
    weights = [len(y) for _, y in data.clients]
    history = []
    for r in range(1, rounds + 1):
        start = {k: v.clone() for k, v in net.state_dict().items()}
        members = range(n) if sample_rate >= 1.0 else np.flatnonzero(sample_rng.random(n) < sample_rate).tolist()
        dropped = [j for j in range(len(members)) if drop_rng.random() < dropout]
        t0 = time.perf_counter()
        updates = [
            {k: torch.zeros_like(v) for k, v in start.items()}
            if j in dropped
            else local_update(local, start, *data.clients[i], epochs=local_epochs, lr=lr, batch_size=batch_size,
                              generator=gen)
            for j, i in enumerate(members)
        ]
        t1 = time.perf_counter()
        error, survivors, client_bytes, eps = None, 0, 0.0, None
        try:
            if not updates:
                raise DropoutError("no client was sampled this round")
            result = aggregator.aggregate(updates, weights=[weights[i] for i in members], dropped=dropped)
        except DropoutError as e:
            error = str(e)
        else:
            net.load_state_dict({k: start[k] + result.mean[k] for k in start})
            rep = result.report
            survivors, client_bytes, eps = len(rep.survivors), rep.mean_bytes_sent("client"), rep.epsilon
        t2 = time.perf_counter()
        acc, loss = evaluate(net, *data.test)
        m = RoundMetrics(r, acc, loss, t1 - t0, t2 - t1, client_bytes, len(members) - len(dropped), survivors, eps,
                         error)
        history.append(m)
        if on_round:
            on_round(m)
    return net, history
