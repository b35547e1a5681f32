"""The inputs every scheme (and peer) is measured on at a point: the same updates and the same dropped clients."""

from __future__ import annotations

import numpy as np
import torch


def make_updates(n: int, m: int, seed: int) -> list[torch.Tensor]:
    """n float32 updates of m values, the same for every scheme at a point."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(m, generator=g) * 0.05 for _ in range(n)]


def dropped_clients(n: int, rate: float, seed: int) -> list[int]:
    """round(rate x n) clients that vanish before uploading (simulation randomness), the same for every scheme."""
    k = min(n - 1, round(rate * n))
    return sorted(int(i) for i in np.random.default_rng(seed).choice(n, k, replace=False)) if k > 0 else []
