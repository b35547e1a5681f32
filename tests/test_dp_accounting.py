"""dp.epsilon / dp.noise_multiplier against direct dp-accounting computations."""

from __future__ import annotations

import dp_accounting
import pytest
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant

from securefl import dp
from securefl.errors import ConfigError


def _direct(accountant, z, q, rounds, delta):
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), rounds)
    return accountant.compose(event).get_epsilon(delta)


def test_pld_epsilon_equals_dp_accounting():
    direct = _direct(pld_privacy_accountant.PLDAccountant(), 1.1, 0.2, 10, 1e-5)
    assert dp.epsilon(noise_multiplier=1.1, sampling_rate=0.2, rounds=10, delta=1e-5) == pytest.approx(direct, 1e-9)


def test_rdp_epsilon_equals_dp_accounting():
    direct = _direct(rdp_privacy_accountant.RdpAccountant(), 1.1, 0.2, 10, 1e-5)
    got = dp.epsilon(noise_multiplier=1.1, sampling_rate=0.2, rounds=10, delta=1e-5, accountant="rdp")
    assert got == pytest.approx(direct, 1e-9)


def test_unsampled_epsilon_is_the_plain_gaussian():
    direct = pld_privacy_accountant.PLDAccountant().compose(
        dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(2.0), 3)).get_epsilon(1e-6)
    assert dp.epsilon(noise_multiplier=2.0, rounds=3, delta=1e-6) == pytest.approx(direct, 1e-9)


def test_noise_multiplier_inverts_epsilon():
    z = dp.noise_multiplier(target_epsilon=3.0, delta=1e-5)
    assert dp.epsilon(noise_multiplier=z, delta=1e-5) <= 3.0
    assert dp.epsilon(noise_multiplier=z * 0.99, delta=1e-5) > 3.0


def test_heterogeneous_rounds_compose():
    mixed = dp.epsilon_of_rounds({1.0: 2, 2.0: 3}, sampling_rate=1.0, delta=1e-5)
    assert dp.epsilon(noise_multiplier=2.0, rounds=5, delta=1e-5) < mixed < dp.epsilon(noise_multiplier=1.0,
                                                                                        rounds=5, delta=1e-5)


@pytest.mark.parametrize("kwargs", [
    {"noise_multiplier": 1.0, "sampling_rate": 0.0, "delta": 1e-5},
    {"noise_multiplier": 1.0, "sampling_rate": 1.5, "delta": 1e-5},
    {"noise_multiplier": 1.0, "delta": 0.0},
    {"noise_multiplier": 1.0, "delta": 1e-5, "accountant": "moments"},
])
def test_bad_accounting_arguments_raise(kwargs):
    with pytest.raises(ConfigError):
        dp.epsilon(**kwargs)


def test_noise_multiplier_refuses_targets_below_the_floor():
    with pytest.raises(ConfigError):
        dp.noise_multiplier(target_epsilon=1000.0, delta=1e-5)
