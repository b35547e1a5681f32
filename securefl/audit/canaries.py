"""One-run auditing (Steinke, Nasr and Jagielski, NeurIPS 2023): an empirical lower bound on epsilon.

m canaries, each included independently with probability 1/2; the auditor scores every canary on
what was released, guesses "in" for the highest scores and "out" for the lowest (abstaining on the
rest), and the number of right guesses rejects every epsilon under which so many would be too
unlikely (p_value, Theorem 5.2). A bound below the accountant's epsilon is consistent with the
claimed guarantee; a bound above it would be a violation. The bound is weak by design when the
noise is real: a few hundred canaries can never show more than a few units of epsilon
(`ceiling`: every guess right).

one_run_audit audits one round's mechanism through the real scheme; securefl.audit.run audits a
whole training run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from securefl.aggregator import Aggregator, RoleView
from securefl.audit.recording import fresh_copy
from securefl.audit.report import PrivacyReport, party_epsilon


def p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """P[>= v correct of r guesses] for an (eps, delta)-DP release with m canaries (SNJ 2023, Theorem 5.2)."""
    q = 1.0 / (1.0 + math.exp(-eps))
    beta = float(stats.binom.sf(v - 1, r, q))
    if v == 0:
        return min(beta, 1.0)
    i = np.arange(1, v + 1)
    tails = np.cumsum(stats.binom.pmf(v - i, r, q))  # P[v > Binomial(r, q) >= v - i]
    alpha = float((tails / i).max())
    return min(beta + alpha * delta * 2 * m, 1.0)


def epsilon_lower_bound(m: int, r: int, v: int, delta: float, confidence: float = 0.95) -> float:
    """The largest epsilon rejected at `confidence` given v correct of r guesses (0 if none is)."""
    if r == 0 or p_value(m, r, v, 0.0, delta) > 1 - confidence:
        return 0.0
    lo, hi = 0.0, 1.0
    while p_value(m, r, v, hi, delta) <= 1 - confidence and hi < 100:
        lo, hi = hi, 2 * hi
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if p_value(m, r, v, mid, delta) <= 1 - confidence else (lo, mid)
    return lo


def guess(scores: np.ndarray, inside: np.ndarray, guesses: int) -> tuple[int, int]:
    """(guesses made, right ones): "in" for the guesses/2 highest scores, "out" for as many lowest."""
    k = min(guesses // 2, scores.size // 2)
    order = np.argsort(scores, kind="stable")
    right = int(inside[order[scores.size - k:]].sum() + (~inside[order[:k]]).sum()) if k else 0
    return 2 * k, right


@dataclass
class AuditResult:
    """Outcome of a one-run audit of one round's mechanism."""

    canaries: int
    included: int
    guesses: int
    correct: int
    epsilon_lower_bound: float
    ceiling: float  # the bound with every guess right: the most this many canaries and guesses can show
    epsilon_accountant: float | None  # one canary round, q = 1: the claim the bound is tested against
    rounds: int  # canary rounds (disjoint canaries)
    clients_per_round: int
    delta: float
    confidence: float

    def explain(self, report: PrivacyReport) -> list[str]:
        """The audit's figures, one line each, set against the privacy report's per-round epsilon."""
        lines = [f"one-run audit (Steinke, Nasr, Jagielski 2023): {self.canaries} canary clients in {self.rounds} "
                 f"rounds of {self.clients_per_round}, each included with probability 1/2 ({self.included} were); "
                 f"{self.correct}/{self.guesses} membership guesses right -> epsilon >= {self.epsilon_lower_bound:.3f} "
                 f"at {self.confidence:.0%} confidence"]
        acc = self.epsilon_accountant
        if acc is None:
            lines.append("  no DP: the accountant's epsilon is infinite; right guesses show that the released sum "
                         "reveals who took part")
        else:
            why = []
            if report.epsilon is not None and abs(acc - report.epsilon) > 5e-4:
                if report.dp.get("sampling_rate", 1.0) < 1.0:
                    why.append("the report's per-round figure is amplified by client sampling, the canary coins "
                               "are the only randomness here")
                if report.dp.get("local_variance") and self.clients_per_round != report.clients:
                    why.append(f"each canary round's sum holds {self.clients_per_round} clients' noise shares, the "
                               f"audited round's {report.clients}")
            differs = f"; it differs from the per-round {report.epsilon:.3f} above: {'; '.join(why)}" if why else ""
            verdict = ("below it: no violation found" if self.epsilon_lower_bound <= acc
                       else "ABOVE it: the noise is weaker than the accountant claims")
            lines.append(f"  accountant, one canary round (q = 1): epsilon {acc:.3f}{differs}; the lower bound is "
                         f"{verdict}")
        lines.append(f"  ceiling: with every guess right these {self.canaries} canaries would show epsilon >= "
                     f"{self.ceiling:.3f}; the bound catches missing or broken noise, it does not estimate the true "
                     "epsilon (far below the accountant's is expected with real noise)")
        return lines


def one_run_audit(aggregator: Aggregator, *, canaries: int = 400, per_round: int = 10, guesses: int | None = None,
                  seed: int = 0, delta: float | None = None, confidence: float = 0.95) -> AuditResult:
    """Steinke-Nasr-Jagielski one-run audit of one round of `aggregator`, on a copy (its budget untouched).

    The canaries are split into rounds of `per_round` clients: canary j of a round is a client whose update
    is clip * e_j if it is included (probability 1/2) and zero if not (orthogonal Dirac canaries, the
    strongest for a sum), so every round has the same clients and the same noise whatever the coins.
    Rounds hold disjoint canaries, so each canary is protected by its own round's epsilon (parallel
    composition), the accountant's figure for one round of per_round clients (q = 1; a zero update
    and a canary differ by clip in L2, the add-or-remove sensitivity). The auditor scores each canary
    by its coordinate of its round's released sum and guesses the `guesses` / 2 highest in and as many
    lowest out (default guesses: half the canaries). Without noise every guess is right.
    """
    rng = np.random.default_rng(seed)
    agg = fresh_copy(aggregator)
    agg.seed = seed
    clip = agg.dp.clip if agg.dp is not None else 1.0
    delta = delta if delta is not None else (agg.dp.delta if agg.dp is not None else 1e-5)
    per_round = min(per_round, canaries)
    inside = rng.random(canaries) < 0.5
    scores = np.zeros(canaries)
    eps_acc: float | None = None
    rounds = math.ceil(canaries / per_round)
    for start in range(0, canaries, per_round):
        slots = range(start, min(start + per_round, canaries))
        updates = [torch.zeros(per_round) for _ in range(per_round)]  # spare slots of the last round stay zero
        for j, c in enumerate(slots):
            updates[j][j] = clip if inside[c] else 0.0
        result = agg.aggregate(updates)
        scores[start:start + len(slots)] = result.sum.numpy()[:len(slots)]
        if agg.dp is not None:
            info = result.report.params["dp"]
            eps = party_epsilon(agg.dp, RoleView("", "", "sum", released=True), frac_bits=agg.frac_bits,
                                noisy_survivors=info["noisy_survivors"], min_survivors=info["min_survivors"],
                                dim=per_round)
            eps_acc = eps if eps_acc is None else max(eps_acc, eps)
    r, right = guess(scores, inside, canaries // 2 if guesses is None else guesses)
    bound, ceiling = (epsilon_lower_bound(canaries, r, v, delta, confidence) for v in (right, r))
    return AuditResult(canaries, int(inside.sum()), r, right, bound, ceiling, eps_acc, rounds, per_round, delta,
                       confidence)
