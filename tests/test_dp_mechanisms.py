"""The mechanisms through the schemes: noise from the CSPRNG (attack 5), on the fixed-point grid, of the stated
scale; clipping; the stage protocol, configurations and the separate accountant."""

from __future__ import annotations

import json
import math

import dp_accounting
import numpy as np
import pytest
import torch

from securefl import dp
from securefl.codec import FixedPoint, Flat, Layout
from securefl.errors import ConfigError
from securefl.plaintext import Plaintext

D = 8000


def _schemes():
    out = [Plaintext]
    for mod, name in [("securefl.mpc.additive", "AdditiveSharing"), ("securefl.mpc.secagg", "SecAgg"),
                      ]:  # Paillier: same encode path, left out for time (about 15 s a case)
        try:
            out.append(getattr(__import__(mod, fromlist=[name]), name))
        except (ImportError, AttributeError):
            pass
    return out


@pytest.mark.parametrize("mech", [dp.GaussianMechanism, dp.DistributedGaussian])
def test_noise_does_not_come_from_the_seed(mech):
    """Attack 5: with the same seed, two rounds used to draw identical noise, so the difference of two
    released sums was exactly the change in one client's update."""
    z, clip, n = 1.0, 1.0, 4
    first = [torch.zeros(D) for _ in range(n)]
    second = [u.clone() for u in first]
    second[0][:10] = 0.1  # client 0 changes its update between the rounds
    r1 = Plaintext(seed=0, dp=mech(z, clip)).aggregate(first)
    r2 = Plaintext(seed=0, dp=mech(z, clip)).aggregate(second)
    leaked = (r2.sum - r1.sum).double() - (second[0] - first[0]).double()
    assert leaked.abs().max().item() > 0.5  # the change is buried in fresh noise
    assert leaked.std().item() == pytest.approx(math.sqrt(2) * z * clip, rel=0.05)
    again = Plaintext(seed=0, dp=mech(z, clip)).aggregate(first)
    assert not torch.equal(again.sum, r1.sum)


@pytest.mark.parametrize("mech", [dp.GaussianMechanism, dp.DistributedGaussian])
def test_released_sum_lies_on_the_fixed_point_grid(mech):
    """No floating-point noise (Mironov): the release is an integer number of 2^-frac_bits units."""
    res = Plaintext(seed=1, dp=mech(0.7, 2.0)).aggregate([torch.zeros(3000, dtype=torch.float64)] * 3)
    units = res.sum.numpy() * 2**16
    assert np.array_equal(units, np.round(units)) and np.abs(units).max() > 2**16


@pytest.mark.parametrize("scheme", _schemes())
@pytest.mark.parametrize("mech", [dp.GaussianMechanism, dp.DistributedGaussian])
def test_noise_on_the_sum_has_the_stated_scale(scheme, mech):
    z, clip, n = 0.8, 0.5, 5
    agg = scheme(seed=5, dp=mech(z, clip))
    res = agg.aggregate([torch.zeros(D) for _ in range(n)])
    # distributed noise is sized for the fewest survivors the scheme guarantees; all n survive here
    z_present = z * math.sqrt(n / agg.min_survivors(n)) if mech is dp.DistributedGaussian else z
    noise = res.sum.numpy().astype(np.float64)
    assert abs(noise.mean()) < 5 * z_present * clip / math.sqrt(D)
    assert noise.std() == pytest.approx(z_present * clip, rel=0.03)
    assert res.report.epsilon == pytest.approx(dp.epsilon(noise_multiplier=z_present, delta=1e-5), rel=0.01)
    assert res.report.delta == 1e-5


def test_dropouts_below_the_noise_target_are_reported():
    z, clip = 1.0, 1.0
    ups = [torch.zeros(D) for _ in range(8)]
    full = Plaintext(seed=2, dp=dp.DistributedGaussian(z, clip)).aggregate(ups)
    short = Plaintext(seed=2, dp=dp.DistributedGaussian(z, clip)).aggregate(ups, dropped=[0, 1])
    assert full.report.params["dp"]["effective_noise_multiplier"] == pytest.approx(z, rel=1e-6)
    assert short.report.params["dp"]["effective_noise_multiplier"] == pytest.approx(z * math.sqrt(6 / 8), rel=1e-6)
    assert short.sum.numpy().std() == pytest.approx(z * clip * math.sqrt(6 / 8), rel=0.03)
    assert short.report.epsilon > full.report.epsilon


def test_distributed_noise_survives_dropouts_up_to_the_threshold():
    secagg = pytest.importorskip("securefl.mpc.secagg")
    z, clip, n = 1.0, 1.0, 8
    agg = secagg.SecAgg(seed=2, dp=dp.DistributedGaussian(z, clip))
    spare = n - agg.min_survivors(n)
    assert spare >= 1
    ups = [torch.zeros(D) for _ in range(n)]
    ok = agg.aggregate(ups, dropped=list(range(spare)))
    assert ok.sum.numpy().std() >= z * clip * 0.97
    assert ok.report.params["dp"]["effective_noise_multiplier"] >= z * (1 - 1e-6)


def test_clipped_and_rounded_update_stays_within_the_l2_bound():
    mech, fixed = dp.GaussianMechanism(1.0, 2.0), FixedPoint.choose(1, clip=8.0, frac_bits=16, int_bound=2**16)
    layout = Layout.of(torch.zeros(1000))
    for value in (3.0, 0.05):
        flat = mech.prepare(Flat(np.full(1000, value, np.float32), np.zeros(0, np.int64)), fixed.frac_bits)
        ring, _ = fixed.encode(flat, 1.0, np.random.default_rng(0), layout, 0)
        norm = np.linalg.norm(ring[:1000].view(fixed.signed).astype(np.float64)) / fixed.scale
        assert norm <= 2.0
        assert norm == pytest.approx(min(2.0, value * math.sqrt(1000)), rel=1e-3)


def test_each_mechanism_uses_only_its_own_stages():
    f, m = 16, 4
    central, spread = dp.GaussianMechanism(1.5, 2.0), dp.DistributedGaussian(1.5, 2.0)
    assert central.client_variance(f, m) == 0 and spread.release_variance(f) == 0
    assert central.release_variance(f) == math.ceil((1.5 * 2.0 * 2**f) ** 2)
    assert spread.client_variance(f, m) == math.ceil((1.5 * 2.0 * 2**f) ** 2 / m)
    words = np.zeros(20000, np.int64)
    spread.release_noise(words, f)
    assert not words.any()  # the decoding party adds nothing when the clients carry the noise
    central.release_noise(words, f)
    assert words.std() == pytest.approx(1.5 * 2.0 * 2**f, rel=0.03)
    noise = spread.client_noise(20000, spread.client_variance(f, m))
    assert noise.dtype == np.int64 and noise.std() == pytest.approx(1.5 * 2.0 * 2**f / 2, rel=0.03)
    assert central.ring_headroom(f, 10, m) == pytest.approx(20 * 1.5 * 2.0 * 2**f, rel=1e-6)
    assert spread.ring_headroom(f, 10, m) == pytest.approx(20 * math.sqrt(10 / 4) * 1.5 * 2.0 * 2**f, rel=1e-6)


def test_round_events_are_zcdp_with_sampling():
    central = dp.GaussianMechanism(2.0, 1.0, sampling_rate=0.3)
    event = central.round_event(frac_bits=16, noisy_clients=5, min_survivors=5, dim=100)
    assert isinstance(event, dp_accounting.PoissonSampledDpEvent) and event.sampling_probability == 0.3
    assert event.event.rho == pytest.approx(1 / (2 * 2.0**2), rel=1e-9)
    spread = dp.DistributedGaussian(2.0, 1.0)
    full = spread.round_event(frac_bits=16, noisy_clients=5, min_survivors=5, dim=100)
    assert isinstance(full, dp_accounting.ZCDpEvent) and full.rho == pytest.approx(1 / 8, rel=1e-6)
    none = spread.round_event(frac_bits=16, noisy_clients=0, min_survivors=5, dim=100)
    assert isinstance(none, dp_accounting.NonPrivateDpEvent)


@pytest.mark.parametrize("mech", [dp.GaussianMechanism(1.2, 0.5, delta=1e-6, sampling_rate=0.5),
                                  dp.DistributedGaussian(0.9, 3.0)])
def test_configuration_round_trip(mech):
    data = json.loads(json.dumps(mech.to_dict()))
    back = dp.Mechanism.from_dict(data)
    assert type(back) is type(mech) and back.to_dict() == mech.to_dict()
    assert back.accountant is not mech.accountant and back.rounds == 0


@pytest.mark.parametrize("bad", [{}, {"version": 1, "mechanism": "laplace", "noise_multiplier": 1, "clip": 1,
                                      "delta": 1e-5, "sampling_rate": 1},
                                 {"version": 2, "mechanism": "gaussian"},
                                 {"version": 1, "mechanism": "gaussian", "noise_multiplier": "x", "clip": 1,
                                  "delta": 1e-5, "sampling_rate": 1},
                                 {"version": 1, "mechanism": "gaussian", "noise_multiplier": -1, "clip": 1,
                                  "delta": 1e-5, "sampling_rate": 1}])
def test_malformed_configurations_raise(bad):
    with pytest.raises(ConfigError):
        dp.Mechanism.from_dict(bad)
    with pytest.raises(ConfigError):
        dp.DistributedGaussian.from_dict(dp.GaussianMechanism(1, 1).to_dict())


def test_epsilon_accumulates_in_the_accountant_and_survives_a_restart():
    mech = dp.GaussianMechanism(1.5, 1.0)
    agg = Plaintext(seed=0, dp=mech)
    eps = [agg.aggregate([torch.zeros(10)] * 3).report.epsilon for _ in range(3)]
    assert eps[0] < eps[1] < eps[2] and mech.rounds == 3
    assert eps[2] == pytest.approx(dp.epsilon(noise_multiplier=1.5, rounds=3, delta=1e-5), rel=1e-6)
    saved = json.dumps(mech.accountant.state_dict())
    restored = dp.Accountant()
    restored.load_state_dict(json.loads(saved))
    resumed = Plaintext(seed=0, dp=dp.GaussianMechanism(1.5, 1.0, accountant=restored))
    eps4 = resumed.aggregate([torch.zeros(10)] * 3).report.epsilon
    assert eps4 == pytest.approx(dp.epsilon(noise_multiplier=1.5, rounds=4, delta=1e-5), rel=1e-6)


def test_distributed_noise_needs_a_fixed_point_scheme():
    ckks = pytest.importorskip("securefl.he.ckks")
    with pytest.raises(ConfigError, match="distributed noise"):
        ckks.CKKS(seed=0, dp=dp.DistributedGaussian(1.0, 1.0)).aggregate([torch.zeros(10)] * 2)


def test_bad_mechanism_parameters_raise():
    for args in [(0.0, 1.0), (1.0, -1.0), (float("nan"), 1.0)]:
        with pytest.raises(ConfigError):
            dp.GaussianMechanism(*args)
    with pytest.raises(ConfigError, match="room for the rounding"):
        Plaintext(frac_bits=4, dp=dp.GaussianMechanism(1.0, 0.1)).aggregate([torch.zeros(1000)])


def test_poisson_client_sampling_in_training():
    from securefl.datasets import federated_digits
    from securefl.fedavg import train

    data = federated_digits(10, 0.5, 0)
    _, hist = train(Plaintext(seed=0, dp=dp.GaussianMechanism(1.0, 1.0, sampling_rate=0.4)), data, rounds=4,
                    local_epochs=1, sample_rate=0.4)
    sizes = [m.participants for m in hist]
    assert all(s < 10 for s in sizes) and len(set(sizes)) > 1
    assert all(m.epsilon is not None for m in hist if m.error is None)


@pytest.mark.parametrize("scheme", ["ckks", "paillier"])
def test_he_key_holder_releases_only_the_noisy_sum(scheme):
    """Central DP with HE: the key holder adds the noise before it replies, so the server never gets the exact
    sum (the base class adds none afterwards) and the noise on the sum has the stated scale."""
    from securefl import schemes

    z, clip, dim = 0.8, 0.5, 3000
    agg = schemes.make(scheme, seed=3, dp=dp.GaussianMechanism(z, clip))
    res = agg.aggregate([torch.zeros(dim) for _ in range(3)])
    noise = res.sum.numpy().astype(np.float64)
    assert "dp_noise" not in res.report.seconds  # no party after the key holder added noise
    assert noise.std() == pytest.approx(z * clip, rel=0.06)
    assert abs(noise.mean()) < 5 * z * clip / math.sqrt(dim)
    assert res.report.epsilon == pytest.approx(dp.epsilon(noise_multiplier=z, delta=1e-5), rel=0.01)
