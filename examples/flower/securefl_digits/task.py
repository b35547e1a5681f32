"""The learning task, plain PyTorch: the digits data split, the model, local training and evaluation."""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord

from securefl.datasets import Federated, federated_digits
from securefl.fedavg import evaluate, local_update, make_model


def load_data(num_partitions: int, alpha: float, seed: int) -> Federated:
    """The same Dirichlet split of the digits set (shipped with scikit-learn) on every node; each uses its shard."""
    return federated_digits(num_partitions, alpha, seed)


def new_model(data: Federated) -> torch.nn.Module:
    return make_model("mlp", data.num_features, data.num_classes)


def train_shard(arrays: ArrayRecord, data: Federated, partition: int, *, epochs: int, lr: float, batch_size: int,
                seed: int) -> tuple[ArrayRecord, int]:
    """Train the global model on one shard; return the trained model and the shard's size."""
    torch.set_num_threads(1)
    net = new_model(data)
    start = {k: v.to(net.state_dict()[k].dtype) for k, v in arrays.to_torch_state_dict().items()}
    x, y = data.clients[partition]
    update = local_update(net, start, x, y, epochs=epochs, lr=lr, batch_size=batch_size,
                          generator=torch.Generator().manual_seed(seed))
    return ArrayRecord({k: start[k] + update[k] for k in start}), len(y)


def test_accuracy(arrays: ArrayRecord, data: Federated) -> tuple[float, float]:
    """(accuracy, loss) of a model on the held-out test set."""
    net = new_model(data)
    net.load_state_dict(arrays.to_torch_state_dict())
    return evaluate(net, *data.test)
