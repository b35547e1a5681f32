"""Red team: the DP layer and every guarantee's randomness.

Issue 10.5: nothing a privacy or security guarantee rests on may be predictable from `seed` or from the
numpy / torch / random generators. Issue 10.6: every party's epsilon is the one the noise it actually
sees gives. Each test asserts the SAFE outcome.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

import securefl
from securefl import dp
from securefl.audit.recording import RecordingSimulation
from securefl.audit.report import privacy_report
from securefl.datasets import Federated

from .redteam_harness import grid_updates


def _reseed_everything(seed: int = 0) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _off_grid(n: int, m: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.rand(m, generator=g) * 0.2 - 0.1 for _ in range(n)]


@pytest.mark.parametrize("make", [
    lambda: securefl.Plaintext(seed=0, dp=dp.GaussianMechanism(1.0, clip=1.0)),
    lambda: securefl.SecAgg(threshold=0.6, seed=0, dp=dp.DistributedGaussian(1.0, clip=1.0)),
    lambda: securefl.AdditiveSharing(num_aggregators=2, seed=0, dp=dp.GaussianMechanism(1.0, clip=1.0)),
    lambda: securefl.CKKS(seed=0, dp=dp.GaussianMechanism(1.0, clip=1.0)),
], ids=["plaintext-central", "secagg-distributed", "additive-central", "ckks-central"])
def test_noise_is_not_a_function_of_seed_or_global_generators(make):
    """Two deployments with the same seed, the same inputs and every global generator reseeded: releasing both
    must not hand an observer two identical noise draws (whose difference would cancel the noise)."""
    ups = grid_updates(4, 64)
    out = []
    for _ in range(2):
        _reseed_everything()
        out.append(make().aggregate(ups).sum.numpy())
    assert not np.array_equal(out[0], out[1]), "DP noise is reproducible from seed / the global generators"


def test_stochastic_rounding_is_not_a_function_of_seed():
    ups = _off_grid(3, 256)
    out = []
    for _ in range(2):
        _reseed_everything()
        out.append(securefl.Plaintext(seed=0, frac_bits=8).aggregate(ups).sum.numpy())
    assert not np.array_equal(out[0], out[1]), "rounding draws are reproducible from seed"


@pytest.mark.parametrize("make", [
    lambda: securefl.SecAgg(threshold=0.6, seed=0),
    lambda: securefl.AdditiveSharing(num_aggregators=2, seed=0),
    lambda: securefl.Paillier(seed=0),
], ids=["secagg", "additive", "paillier"])
def test_key_material_is_not_a_function_of_seed(make):
    """The bytes every client sends in two same-seed runs: keys, masked vectors, sealed seeds, ciphertexts must
    all differ (none is derived from seed, numpy, torch or random)."""
    ups = grid_updates(4, 16)
    sent = []
    for _ in range(2):
        _reseed_everything()
        agg = make()
        transcripts = []

        class Recording(RecordingSimulation):
            def __init__(self, *a, _out=transcripts, **k):
                super().__init__(*a, **k)
                _out.append(self.transcript)

        agg.simulation_class = Recording
        agg.aggregate(ups)
        sent.append([m.body for m in transcripts[0] if m.src.startswith("client") and m.body])  # READY is empty
    assert sent[0] and len(sent[0]) == len(sent[1])
    same = [i for i, (a, b) in enumerate(zip(*sent, strict=True)) if a == b]
    assert not same, f"{len(same)} client messages identical across two same-seed runs"


def test_client_sampling_is_not_predictable_from_the_public_seed(monkeypatch):
    """`securefl run --sample-rate q --dp ...` reports an epsilon amplified by Poisson sampling at q, which holds
    only against an observer who does not know who took part. fedavg draws the sample from
    np.random.default_rng([seed, 1]) with the public --seed (default 0): an observer replays those draws and
    knows every round's participants, so the amplified epsilon is not what it gets."""
    from securefl import fedavg

    n, q, rounds = 8, 0.5, 6
    g = torch.Generator().manual_seed(0)
    clients = [(torch.rand(6, 4, generator=g), torch.randint(0, 2, (6,), generator=g)) for _ in range(n)]
    data = Federated(clients, (clients[0][0], clients[0][1]), num_features=4, num_classes=2)
    owner = {id(x): i for i, (x, _) in enumerate(clients)}
    current: list[int] = []
    members: list[list[int]] = []
    real = fedavg.local_update

    def spy(model, start, x, y, **kw):
        current.append(owner[id(x)])
        return real(model, start, x, y, **kw)

    def on_round(_metrics):
        members.append(sorted(current))
        current.clear()

    monkeypatch.setattr(fedavg, "local_update", spy)
    agg = securefl.Plaintext(dp=dp.GaussianMechanism(0.5, clip=1.0, sampling_rate=q))
    fedavg.train(agg, data, rounds=rounds, local_epochs=1, sample_rate=q, seed=0, on_round=on_round)
    observer = np.random.default_rng([0, 1])  # what anyone who knows the public seed computes
    predicted = [np.flatnonzero(observer.random(n) < q).tolist() for _ in range(rounds)]
    assert predicted != members, (f"the observer predicted every round's participants from seed=0: {members}; "
                                  f"report.epsilon (amplified at q={q}) overstates its privacy")


def test_audit_gives_a_plaintext_server_the_epsilon_of_one_noise_share():
    """Issue 10.6: with DistributedGaussian, a Plaintext server sees each update with only its own client's
    share of the noise (variance (z clip)^2 / n). Its row must carry that epsilon, about what a central Gaussian
    of multiplier z / sqrt(n) gives, not the epsilon of the sum."""
    n, z = 6, 1.0
    rep = privacy_report(securefl.Plaintext(dp=dp.DistributedGaussian(z, clip=1.0)), clients=n, dim=32, rounds=2)
    server = next(p for p in rep.parties if p.kind == "server")
    one_share = dp.epsilon(noise_multiplier=z / np.sqrt(n), sampling_rate=1.0, rounds=1, delta=rep.delta)
    assert server.epsilon == pytest.approx(one_share, rel=0.1), (server.epsilon, one_share, rep.epsilon)
    assert server.epsilon > 2 * rep.epsilon


def test_paillier_with_distributed_noise_finishes_its_rounds():
    """Issue 10.7: the packing must leave room for the clients' ring noise (clip 1), so honest rounds finish."""
    ups = [u / 4 for u in grid_updates(4, 32)]
    for _ in range(3):
        out = securefl.Paillier(dp=dp.DistributedGaussian(1.0, clip=1.0)).aggregate(ups)
        assert out.report.survivors == [0, 1, 2, 3]
