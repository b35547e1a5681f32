"""Privacy accounting of released rounds: an Accountant (a dp-accounting PrivacyAccountant) and the
`epsilon` / `noise_multiplier` calculators, all for the add-or-remove-one-client relation.

Why RDP, not PLD: securefl's noise is the discrete Gaussian (central and distributed). Its privacy is
known as zero-concentrated DP: N_Z(0, S) on integer vectors with L2 sensitivity D is
(D^2 / 2S)-zCDP, i.e. its Renyi divergence of every order a is at most a D^2 / 2S, the continuous
Gaussian's (Canonne, Kamath, Steinke 2020, Thm. 14-15), and a sum of k independent client shares
is (eps^2 / 2)-zCDP with the eps of Kairouz, Liu, Steinke 2021 (Prop. 14). The tight PLD of the
continuous Gaussian is not proven to bound the multivariate discrete one, so a round is a
dp_accounting.ZCDpEvent(rho) and rounds compose in RDP, converted to (epsilon, delta) with
dp-accounting's `compute_epsilon` (CKS Prop. 12 conversion).

Client sampling (Poisson, rate q < 1): dp-accounting's sampled-Gaussian formula is specific to the
continuous Gaussian, so a sampled round is bounded with Zhu and Wang's general upper bound for
Poisson subsampling of any mechanism with RDP curve eps(l) (ICML 2019, Thm. 6), at integer orders:

    eps'(a) <= log[(1-q)^(a-1) (a q - q + 1) + C(a,2) q^2 (1-q)^(a-2) e^eps(2)
                   + 3 sum_{l=3..a} C(a,l) (1-q)^(a-l) q^l e^((l-1) eps(l))] / (a - 1),

and never above the unsampled curve (a fractional order takes the next integer order's bound, as
Renyi divergence grows with the order). This is looser than the continuous Gaussian's tight
figure; it is what we can prove for the discrete noise we add.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import lru_cache

import dp_accounting
import numpy as np
from dp_accounting.rdp.rdp_privacy_accountant import DEFAULT_RDP_ORDERS, compute_epsilon
from scipy.special import gammaln, logsumexp

from securefl.errors import ConfigError

ORDERS = np.array(DEFAULT_RDP_ORDERS, np.float64)
MIN_NOISE_MULTIPLIER = 0.25  # calibration floor
STATE_VERSION = 1
_NeighborRel = dp_accounting.NeighboringRelation


def check(*, sampling_rate: float, delta: float) -> None:
    """Raise ConfigError on a sampling rate outside (0, 1] or delta outside (0, 1)."""
    if not 0.0 < sampling_rate <= 1.0:
        raise ConfigError(f"sampling_rate must be in (0, 1], got {sampling_rate}")
    if not 0.0 < delta < 1.0:
        raise ConfigError(f"delta must be in (0, 1), got {delta}")


def round_event(rho: float, sampling_rate: float = 1.0) -> dp_accounting.DpEvent:
    """The DpEvent of one round whose release is rho-zCDP, clients Poisson-sampled at sampling_rate
    (rho = inf: a round with no noise, NonPrivateDpEvent)."""
    if not rho < math.inf:
        return dp_accounting.NonPrivateDpEvent()
    zcdp = dp_accounting.ZCDpEvent(float(rho))
    return zcdp if sampling_rate >= 1.0 else dp_accounting.PoissonSampledDpEvent(float(sampling_rate), zcdp)


def _sampled_rdp(rho: float, xi: float, q: float) -> np.ndarray:
    """Zhu-Wang's bound (module docstring) for a (xi, rho)-zCDP mechanism, at every order of ORDERS."""
    out = np.empty(ORDERS.size)
    log_q, log_1q = math.log(q), math.log1p(-q)
    for i, order in enumerate(ORDERS):
        a = max(2, math.ceil(order))
        ell = np.arange(3, a + 1, dtype=np.float64)
        log_comb = gammaln(a + 1) - gammaln(ell + 1) - gammaln(a - ell + 1)
        terms = [(a - 1) * log_1q + math.log(a * q - q + 1),
                 math.log(a * (a - 1) / 2) + 2 * log_q + (a - 2) * log_1q + xi + 2 * rho]
        tail = math.log(3) + log_comb + (a - ell) * log_1q + ell * log_q + (ell - 1) * (xi + rho * ell)
        bound = float(logsumexp(np.concatenate([terms, tail]))) / (a - 1)
        out[i] = min(bound, xi + rho * order)
    return out


@lru_cache(maxsize=256)
def _rdp(rho: float, xi: float, q: float) -> np.ndarray:
    """The RDP curve (at ORDERS, read-only) of one round: (xi, rho)-zCDP, Poisson-sampled at rate q."""
    if not rho < math.inf:
        curve = np.full(ORDERS.size, math.inf)
    else:
        curve = xi + rho * ORDERS if q >= 1.0 else _sampled_rdp(rho, xi, q)
    curve.setflags(write=False)
    return curve


class Accountant(dp_accounting.PrivacyAccountant):
    """Privacy budget across released rounds, separate from the mechanisms (Opacus-style).

    step(event) records one round (a mechanism's round_event), get_epsilon(delta) is the cumulative
    epsilon, state_dict() / load_state_dict() save and restore the budget as plain JSON-able data:
    the rounds themselves, {rho, xi, sampling_rate, count}, from which the RDP curve is recomputed.
    Supports ZCDpEvent and GaussianDpEvent (rho = 1 / 2z^2), each optionally Poisson-sampled,
    their (self-)compositions, NoOpDpEvent and NonPrivateDpEvent.
    """

    def __init__(self) -> None:
        super().__init__(_NeighborRel.ADD_OR_REMOVE_ONE)
        self._rounds: dict[tuple[float, float, float], int] = {}  # (rho, xi, sampling rate) -> rounds
        self._curve = np.zeros(ORDERS.size)

    def _maybe_compose(self, event: dp_accounting.DpEvent, count: int,
                       do_compose: bool) -> dp_accounting.PrivacyAccountant.CompositionErrorDetails | None:
        if isinstance(event, dp_accounting.NoOpDpEvent):
            return None
        if isinstance(event, dp_accounting.SelfComposedDpEvent):
            return self._maybe_compose(event.event, event.count * count, do_compose)
        if isinstance(event, dp_accounting.ComposedDpEvent):
            for e in event.events:
                error = self._maybe_compose(e, count, do_compose)
                if error is not None:
                    return error
            return None
        q, inner = 1.0, event
        if isinstance(event, dp_accounting.PoissonSampledDpEvent):
            q, inner = float(event.sampling_probability), event.event
        if isinstance(inner, dp_accounting.NonPrivateDpEvent):
            key = (math.inf, 0.0, 1.0)
        elif isinstance(inner, dp_accounting.ZCDpEvent) and inner.rho >= 0 and inner.xi >= 0:
            key = (float(inner.rho), float(inner.xi), q)
        elif isinstance(inner, dp_accounting.GaussianDpEvent) and inner.noise_multiplier >= 0:
            z = float(inner.noise_multiplier)
            key = (1.0 / (2 * z * z) if z > 0 else math.inf, 0.0, q)
        else:
            return self.CompositionErrorDetails(event, "securefl's accountant takes zCDP or Gaussian rounds, "
                                                       "optionally Poisson-sampled")
        if not 0.0 < key[2] <= 1.0:
            return self.CompositionErrorDetails(event, f"sampling probability {key[2]} outside (0, 1]")
        if do_compose and count:
            self._rounds[key] = self._rounds.get(key, 0) + count
            self._curve = self._curve + count * _rdp(*key)
        return None

    def step(self, event: dp_accounting.DpEvent) -> None:
        """Record one released round."""
        try:
            self.compose(event)
        except dp_accounting.UnsupportedEventError as e:
            raise ConfigError(str(e)) from None

    def get_epsilon(self, target_delta: float) -> float:
        """Cumulative epsilon at target_delta (0 before the first round)."""
        if not 0.0 < target_delta < 1.0:
            raise ConfigError(f"delta must be in (0, 1), got {target_delta}")
        if not self._rounds:
            return 0.0
        return float(compute_epsilon(ORDERS, self._curve, target_delta)[0])

    @property
    def rounds(self) -> int:
        """Rounds recorded so far."""
        return sum(self._rounds.values())

    def state_dict(self) -> dict:
        """The budget as plain data (json.dumps-able; infinite rho written as null)."""
        rows = [{"rho": None if math.isinf(rho) else rho, "xi": xi, "sampling_rate": q, "count": c}
                for (rho, xi, q), c in sorted(self._rounds.items())]
        return {"version": STATE_VERSION, "rounds": rows}

    def load_state_dict(self, state: Mapping) -> None:
        """Replace the budget with a saved one; ConfigError on anything malformed."""
        try:
            if state["version"] != STATE_VERSION:
                raise ConfigError(f"accountant state version {state['version']!r}, expected {STATE_VERSION}")
            rows = [(math.inf if r["rho"] is None else float(r["rho"]), float(r["xi"]), float(r["sampling_rate"]),
                     int(r["count"])) for r in state["rounds"]]
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"malformed accountant state: {e!r}") from None
        fresh = Accountant()
        for rho, xi, q, count in rows:
            if not (rho >= 0 and xi >= 0 and 0.0 < q <= 1.0 and count >= 0 and math.isfinite(xi)):
                raise ConfigError(f"malformed accountant state row: rho={rho}, xi={xi}, q={q}, count={count}")
            inner = dp_accounting.NonPrivateDpEvent() if math.isinf(rho) else dp_accounting.ZCDpEvent(rho, xi)
            event = inner if q >= 1.0 else dp_accounting.PoissonSampledDpEvent(q, inner)
            fresh.step(dp_accounting.SelfComposedDpEvent(event, count))
        self._ledger, self._rounds, self._curve = fresh._ledger, fresh._rounds, fresh._curve


def epsilon(*, noise_multiplier: float, sampling_rate: float = 1.0, rounds: int = 1, delta: float) -> float:
    """Epsilon at `delta` after `rounds` rounds of the Gaussian mechanism (discrete or continuous) with this
    noise multiplier, each client sampled with `sampling_rate`: the figure report.epsilon gives for
    dp.GaussianMechanism."""
    check(sampling_rate=sampling_rate, delta=delta)
    if not (noise_multiplier > 0 and math.isfinite(noise_multiplier)):
        raise ConfigError(f"noise_multiplier must be a positive finite number, got {noise_multiplier}")
    if rounds < 0:
        raise ConfigError(f"rounds must be >= 0, got {rounds}")
    acc = Accountant()
    acc.step(dp_accounting.SelfComposedDpEvent(round_event(0.5 / noise_multiplier**2, sampling_rate), rounds))
    return acc.get_epsilon(delta)


def noise_multiplier(*, target_epsilon: float, sampling_rate: float = 1.0, rounds: int = 1, delta: float) -> float:
    """The smallest noise multiplier whose epsilon at `delta` over `rounds` rounds is <= target_epsilon."""
    check(sampling_rate=sampling_rate, delta=delta)
    if not (target_epsilon > 0 and math.isfinite(target_epsilon)):
        raise ConfigError(f"target_epsilon must be a positive finite number, got {target_epsilon}")
    if rounds < 1:
        raise ConfigError(f"rounds must be >= 1, got {rounds}")
    if epsilon(noise_multiplier=MIN_NOISE_MULTIPLIER, sampling_rate=sampling_rate, rounds=rounds,
               delta=delta) <= target_epsilon:
        raise ConfigError(f"target_epsilon={target_epsilon} is reached below noise multiplier {MIN_NOISE_MULTIPLIER}: "
                          "such weak noise is outside what securefl calibrates")
    z = dp_accounting.calibrate_dp_mechanism(
        Accountant,
        lambda z: dp_accounting.SelfComposedDpEvent(round_event(0.5 / z**2, sampling_rate), rounds),
        target_epsilon,
        delta,
        dp_accounting.LowerEndpointAndGuess(MIN_NOISE_MULTIPLIER, 1.0),
        tol=1e-4,
    )
    return float(z)
