"""Shared fixtures: small models and updates."""

from __future__ import annotations

import pytest
import torch
from torch import nn


class SmallNet(nn.Module):
    """A conv net with BatchNorm, so its state_dict holds an integer buffer (num_batches_tracked)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)


# Statistical checks of values drawn from the OS CSPRNG (masks from X25519 keys, Shamir shares, DP noise) cannot be
# seeded: each that accepts at p > P_MIN fails on correct code with probability P_MIN, so the suite's 11 such checks
# fail spuriously about once in 90,000 runs. Controls show the power left: all K aggregators together
# (test_additive, seeded) and a sampler of variance 11 tested against 10 (test_dp_sampler) give p < 1e-12.
P_MIN = 1e-6

# update structures other than a state_dict: (generator) -> one client's update
STRUCTURES = [
    lambda g: torch.randn(3, 4, generator=g),
    lambda g: [torch.randn(2, generator=g), torch.randn(3, 1, generator=g)],
    lambda g: (torch.randn(2, generator=g).half(), torch.randn(5, generator=g).to(torch.bfloat16)),
    lambda g: [torch.randn(4, generator=g).double(), torch.randint(0, 9, (3,), generator=g)],
]


def state_updates(n: int, seed: int = 0, scale: float = 0.5) -> list[dict[str, torch.Tensor]]:
    """n random state_dict-shaped updates of SmallNet (floats in about [-2*scale, 2*scale], ints small)."""
    g = torch.Generator().manual_seed(seed)
    ref = SmallNet().state_dict()
    out = []
    for _ in range(n):
        u = {}
        for k, v in ref.items():
            if v.dtype.is_floating_point:
                u[k] = (torch.rand(v.shape, generator=g) * 2 - 1) * 2 * scale
            else:
                u[k] = torch.randint(0, 1000, v.shape, generator=g, dtype=v.dtype)
        out.append(u)
    return out


@pytest.fixture
def updates() -> list[dict[str, torch.Tensor]]:
    return state_updates(6)
