"""The accountant and dp.epsilon / dp.noise_multiplier against dp-accounting and an independent Zhu-Wang bound."""

from __future__ import annotations

import json
import math
from decimal import Decimal, getcontext

import dp_accounting
import numpy as np
import pytest
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant

from securefl import dp
from securefl.dp import accounting
from securefl.errors import ConfigError


def test_unsampled_rounds_equal_dp_accountings_rdp_for_the_gaussian():
    for z, rounds, delta in [(1.0, 1, 1e-5), (2.0, 3, 1e-6), (0.5, 10, 1e-5)]:
        event = dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(z), rounds)
        direct = rdp_privacy_accountant.RdpAccountant().compose(event).get_epsilon(delta)
        assert dp.epsilon(noise_multiplier=z, rounds=rounds, delta=delta) == pytest.approx(direct, rel=1e-9)


def test_zcdp_is_never_below_the_tight_continuous_figure():
    for z in (0.5, 1.0, 3.0):
        pld = pld_privacy_accountant.PLDAccountant().compose(dp_accounting.GaussianDpEvent(z)).get_epsilon(1e-5)
        assert dp.epsilon(noise_multiplier=z, delta=1e-5) >= pld


def _zhu_wang(rho: float, q: float, a: int) -> float:
    """Zhu and Wang 2019, Thm. 6, for a rho-zCDP mechanism (eps(l) = rho l), summed term by term in Decimal."""
    getcontext().prec = 60
    r, p = Decimal(rho), Decimal(q)
    total = (1 - p) ** (a - 1) * (a * p - p + 1) + math.comb(a, 2) * p**2 * (1 - p) ** (a - 2) * (2 * r).exp()
    total += 3 * sum(math.comb(a, ell) * (1 - p) ** (a - ell) * p**ell * ((ell - 1) * ell * r).exp()
                     for ell in range(3, a + 1))
    return float(total.ln() / (a - 1))


@pytest.mark.parametrize("rho,q", [(0.5, 0.1), (0.02, 0.01), (2.0, 0.5)])
def test_sampled_rounds_follow_the_zhu_wang_bound(rho, q):
    curve = accounting._sampled_rdp(rho, 0.0, q)
    for i, order in enumerate(accounting.ORDERS):
        if order == int(order) and order <= 40:
            assert curve[i] == pytest.approx(min(_zhu_wang(rho, q, int(order)), rho * order), rel=1e-9)
    assert np.all(curve <= rho * accounting.ORDERS + 1e-12)  # sampling never hurts


def test_sampling_amplifies_but_stays_above_the_continuous_sampled_gaussian():
    z, q, rounds = 1.1, 0.2, 10
    ours = dp.epsilon(noise_multiplier=z, sampling_rate=q, rounds=rounds, delta=1e-5)
    event = dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)),
                                              rounds)
    tight = pld_privacy_accountant.PLDAccountant().compose(event).get_epsilon(1e-5)
    assert tight <= ours < dp.epsilon(noise_multiplier=z, rounds=rounds, delta=1e-5)


def test_noise_multiplier_inverts_epsilon():
    z = dp.noise_multiplier(target_epsilon=3.0, delta=1e-5)
    assert dp.epsilon(noise_multiplier=z, delta=1e-5) <= 3.0
    assert dp.epsilon(noise_multiplier=z * 0.99, delta=1e-5) > 3.0
    zs = dp.noise_multiplier(target_epsilon=3.0, sampling_rate=0.1, rounds=50, delta=1e-5)
    assert dp.epsilon(noise_multiplier=zs, sampling_rate=0.1, rounds=50, delta=1e-5) <= 3.0


def test_heterogeneous_rounds_compose():
    acc = dp.Accountant()
    for rho in (0.5, 0.5, 0.125, 0.125, 0.125):
        acc.step(accounting.round_event(rho))
    assert acc.rounds == 5
    mixed = acc.get_epsilon(1e-5)
    assert dp.epsilon(noise_multiplier=2.0, rounds=5, delta=1e-5) < mixed < dp.epsilon(noise_multiplier=1.0,
                                                                                        rounds=5, delta=1e-5)


def test_state_dict_is_plain_json_and_restores_the_budget():
    acc = dp.Accountant()
    acc.step(accounting.round_event(0.3, 0.25))
    acc.step(dp_accounting.SelfComposedDpEvent(accounting.round_event(0.1), 4))
    acc.step(dp_accounting.ZCDpEvent(0.05, 0.01))
    state = json.loads(json.dumps(acc.state_dict(), allow_nan=False))
    back = dp.Accountant()
    back.load_state_dict(state)
    assert back.rounds == acc.rounds == 6
    assert back.get_epsilon(1e-5) == acc.get_epsilon(1e-5) > 0
    back.step(accounting.round_event(0.1))
    assert back.get_epsilon(1e-5) > acc.get_epsilon(1e-5)


def test_a_round_without_noise_is_infinite_and_saved_as_null():
    acc = dp.Accountant()
    acc.step(accounting.round_event(math.inf))
    assert math.isinf(acc.get_epsilon(1e-5))
    state = acc.state_dict()
    assert state["rounds"][0]["rho"] is None
    back = dp.Accountant()
    back.load_state_dict(json.loads(json.dumps(state)))
    assert math.isinf(back.get_epsilon(1e-5))


@pytest.mark.parametrize("state", [{}, {"version": 9, "rounds": []}, {"version": 1, "rounds": [{"rho": 1}]},
                                   {"version": 1, "rounds": [{"rho": -1, "xi": 0, "sampling_rate": 1, "count": 1}]},
                                   {"version": 1, "rounds": [{"rho": 1, "xi": 0, "sampling_rate": 2, "count": 1}]}])
def test_malformed_states_raise(state):
    with pytest.raises(ConfigError):
        dp.Accountant().load_state_dict(state)


def test_unsupported_events_raise():
    with pytest.raises(ConfigError):
        dp.Accountant().step(dp_accounting.LaplaceDpEvent(1.0))


@pytest.mark.parametrize("kwargs", [
    {"noise_multiplier": 1.0, "sampling_rate": 0.0, "delta": 1e-5},
    {"noise_multiplier": 1.0, "sampling_rate": 1.5, "delta": 1e-5},
    {"noise_multiplier": 1.0, "delta": 0.0},
    {"noise_multiplier": 0.0, "delta": 1e-5},
])
def test_bad_accounting_arguments_raise(kwargs):
    with pytest.raises(ConfigError):
        dp.epsilon(**kwargs)


def test_noise_multiplier_refuses_targets_below_the_floor():
    with pytest.raises(ConfigError):
        dp.noise_multiplier(target_epsilon=1000.0, delta=1e-5)
