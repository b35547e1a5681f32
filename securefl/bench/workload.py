"""The inputs every scheme (and peer) is measured on at a point: the same updates and the same dropped clients.

An update is a flat float32 vector of m values, or a state_dict shaped like a model (MODELS: names and shapes
of its float tensors, built by hand so no model library is needed), where the per-tensor codec path runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

Shapes = list[tuple[str, tuple[int, ...]]]


def resnet18_shapes(width: int = 64, classes: int = 1000) -> Shapes:
    """Names and shapes of the float tensors of torchvision's resnet18 state_dict at base width `width` (64: 102
    tensors, 11,699,112 values; the int64 num_batches_tracked counters are left out)."""
    shapes: Shapes = [("conv1.weight", (width, 3, 7, 7))]

    def bn(name: str, c: int) -> None:
        shapes.extend((f"{name}.{s}", (c,)) for s in ("weight", "bias", "running_mean", "running_var"))

    bn("bn1", width)
    cin = width
    for li, mult in enumerate((1, 2, 4, 8), start=1):
        c = width * mult
        for b in range(2):
            pre = f"layer{li}.{b}"
            shapes.append((f"{pre}.conv1.weight", (c, cin if b == 0 else c, 3, 3)))
            bn(f"{pre}.bn1", c)
            shapes.append((f"{pre}.conv2.weight", (c, c, 3, 3)))
            bn(f"{pre}.bn2", c)
            if b == 0 and li > 1:
                shapes.append((f"{pre}.downsample.0.weight", (c, cin, 1, 1)))
                bn(f"{pre}.downsample.1", c)
        cin = c
    return [*shapes, ("fc.weight", (classes, cin)), ("fc.bias", (classes,))]


MODELS: dict[str, Callable[[int], Shapes]] = {"resnet18": resnet18_shapes}  # name -> shapes at a base width


def model_shapes(model: str, width: int) -> Shapes:
    """The tensors of MODELS[model] at base width `width`."""
    return MODELS[model](width)


def size(shapes: Shapes) -> int:
    """Values in a state_dict of these shapes."""
    return sum(math.prod(s) for _, s in shapes)


def make_updates(n: int, m: int, seed: int) -> list[torch.Tensor]:
    """n float32 updates of m values, the same for every scheme at a point."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(m, generator=g) * 0.05 for _ in range(n)]


def make_state_dicts(n: int, shapes: Shapes, seed: int) -> list[dict[str, torch.Tensor]]:
    """n state_dicts of float32 tensors of these shapes, the same for every scheme at a point."""
    g = torch.Generator().manual_seed(seed)
    return [{name: torch.randn(shape, generator=g) * 0.05 for name, shape in shapes} for _ in range(n)]


def dropped_clients(n: int, rate: float, seed: int) -> list[int]:
    """round(rate x n) clients that vanish before uploading (simulation randomness), the same for every scheme."""
    k = min(n - 1, round(rate * n))
    return sorted(int(i) for i in np.random.default_rng(seed).choice(n, k, replace=False)) if k > 0 else []
