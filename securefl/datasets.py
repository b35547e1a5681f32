"""Datasets that ship offline, and non-IID client splits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from securefl.errors import InputError


@dataclass
class Federated:
    """Client training shards and a held-out test set (tensors on the CPU)."""

    clients: list[tuple[torch.Tensor, torch.Tensor]]
    test: tuple[torch.Tensor, torch.Tensor]
    num_features: int
    num_classes: int


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits (1,797 images, shipped with the package), scaled to [0, 1], split train/test."""
    from sklearn.datasets import load_digits as _load

    x, y = _load(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(test_fraction * len(y)))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def dirichlet_split(labels: np.ndarray, num_clients: int, alpha: float, seed: int = 0) -> list[np.ndarray]:
    """Indices per client, label proportions drawn from Dirichlet(alpha): small alpha = more skew.

    Every client receives at least one example.
    """
    if num_clients < 1:
        raise InputError(f"num_clients must be >= 1, got {num_clients}")
    if not alpha > 0:
        raise InputError(f"alpha must be > 0, got {alpha}")
    if num_clients > len(labels):
        raise InputError(f"{num_clients} clients for {len(labels)} examples")
    rng = np.random.default_rng(seed)
    shards: list[list[int]] = [[] for _ in range(num_clients)]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        cuts = (np.cumsum(rng.dirichlet(np.full(num_clients, alpha))) * len(idx)).astype(int)[:-1]
        for shard, part in zip(shards, np.split(idx, cuts), strict=True):
            shard.extend(part.tolist())
    for i, shard in enumerate(shards):  # an empty client borrows one example from the largest
        if not shard:
            donor = max(range(num_clients), key=lambda j: len(shards[j]))
            shard.append(shards[donor].pop())
        shards[i] = shard
    return [np.sort(np.asarray(s, dtype=np.int64)) for s in shards]


def federated_digits(num_clients: int, alpha: float, seed: int = 0) -> Federated:
    """The digits dataset split non-IID across clients, with a held-out test set."""
    xtr, ytr, xte, yte = load_digits(seed=seed)
    parts = dirichlet_split(ytr, num_clients, alpha, seed)
    clients = [(torch.from_numpy(xtr[p]), torch.from_numpy(ytr[p])) for p in parts]
    return Federated(clients, (torch.from_numpy(xte), torch.from_numpy(yte)), xtr.shape[1], 10)
