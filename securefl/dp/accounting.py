"""(epsilon, delta) of repeated, Poisson-sampled Gaussian rounds, computed with dp-accounting.

PLD (privacy loss distributions, tight) by default; RDP as an option. Nothing is re-derived
here: every figure is dp-accounting's, for the add-or-remove-one-client relation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import dp_accounting
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant

from securefl.errors import ConfigError

ACCOUNTANTS = ("pld", "rdp")
MIN_NOISE_MULTIPLIER = 0.25  # calibration floor (PLD tables grow as 1 / z^2)


def check(*, sampling_rate: float, delta: float, accountant: str) -> None:
    """Raise ConfigError on a sampling rate outside (0, 1], delta outside (0, 1) or an unknown accountant."""
    if not 0.0 < sampling_rate <= 1.0:
        raise ConfigError(f"sampling_rate must be in (0, 1], got {sampling_rate}")
    if not 0.0 < delta < 1.0:
        raise ConfigError(f"delta must be in (0, 1), got {delta}")
    if accountant not in ACCOUNTANTS:
        raise ConfigError(f"accountant must be one of {ACCOUNTANTS}, got {accountant!r}")


def _event(noise_multiplier: float, sampling_rate: float) -> dp_accounting.DpEvent:
    gauss = dp_accounting.GaussianDpEvent(noise_multiplier)
    return gauss if sampling_rate >= 1.0 else dp_accounting.PoissonSampledDpEvent(sampling_rate, gauss)


def _accountant(accountant: str, discretization: float) -> dp_accounting.PrivacyAccountant:
    if accountant == "rdp":
        return rdp_privacy_accountant.RdpAccountant()
    return pld_privacy_accountant.PLDAccountant(value_discretization_interval=discretization)


def epsilon_of_rounds(
    rounds: Mapping[float, int],
    *,
    sampling_rate: float,
    delta: float,
    accountant: str = "pld",
    discretization: float = 1e-4,
) -> float:
    """Epsilon at `delta` of rounds given as {noise multiplier: number of rounds}, all sampled at `sampling_rate`.

    discretization: PLD value discretisation (a coarser one is faster and only ever larger).
    """
    check(sampling_rate=sampling_rate, delta=delta, accountant=accountant)
    events = []
    for z, count in sorted(rounds.items()):
        if count < 0:
            raise ConfigError(f"number of rounds must be >= 0, got {count}")
        if count == 0:
            continue
        if not (z > 0 and math.isfinite(z)):
            return math.inf
        events.append(dp_accounting.SelfComposedDpEvent(_event(z, sampling_rate), count))
    if not events:
        return 0.0
    if accountant == "pld" and min(rounds) < MIN_NOISE_MULTIPLIER:
        accountant = "rdp"  # PLD tables grow as 1 / z^2; RDP gives a valid (looser) bound for such weak noise
    acc = _accountant(accountant, discretization)
    acc.compose(events[0] if len(events) == 1 else dp_accounting.ComposedDpEvent(events))
    return float(acc.get_epsilon(delta))


def epsilon(
    *,
    noise_multiplier: float,
    sampling_rate: float = 1.0,
    rounds: int = 1,
    delta: float,
    accountant: str = "pld",
) -> float:
    """Epsilon at `delta` after `rounds` rounds of the Gaussian mechanism, each client sampled with `sampling_rate`."""
    return epsilon_of_rounds({noise_multiplier: rounds}, sampling_rate=sampling_rate, delta=delta,
                             accountant=accountant)


def noise_multiplier(
    *,
    target_epsilon: float,
    sampling_rate: float = 1.0,
    rounds: int = 1,
    delta: float,
    accountant: str = "pld",
) -> float:
    """The smallest noise multiplier whose epsilon at `delta` over `rounds` rounds is <= target_epsilon."""
    check(sampling_rate=sampling_rate, delta=delta, accountant=accountant)
    if not (target_epsilon > 0 and math.isfinite(target_epsilon)):
        raise ConfigError(f"target_epsilon must be a positive finite number, got {target_epsilon}")
    if rounds < 1:
        raise ConfigError(f"rounds must be >= 1, got {rounds}")
    if epsilon(noise_multiplier=MIN_NOISE_MULTIPLIER, sampling_rate=sampling_rate, rounds=rounds, delta=delta,
               accountant=accountant) <= target_epsilon:
        raise ConfigError(f"target_epsilon={target_epsilon} is reached below noise multiplier {MIN_NOISE_MULTIPLIER}: "
                          "such weak noise is outside what securefl calibrates")
    return float(dp_accounting.calibrate_dp_mechanism(
        lambda: _accountant(accountant, 1e-4),
        lambda z: dp_accounting.SelfComposedDpEvent(_event(z, sampling_rate), rounds),
        target_epsilon,
        delta,
        dp_accounting.LowerEndpointAndGuess(MIN_NOISE_MULTIPLIER, 1.0),
        tol=1e-4,
    ))
