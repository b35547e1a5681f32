"""Audit a whole training run: one-run auditing (Steinke, Nasr and Jagielski 2023) over every round of a
federated training, side by side with the accountant's cumulative epsilon and the model's accuracy.

The run is securefl.fedavg.train on a Federated data set with the chosen scheme and DP mechanism.
`canaries` canary clients join the federation, each included with probability 1/2 (the coin the
auditor guesses); an included canary takes part in every round it is sampled for (the real
clients' Poisson rate) and uploads clip * e_j, a Dirac vector on its own coordinate of an extra
tensor appended to every update (the real clients carry zeros there). So the canaries pass through
the same clipping, encoding, masking or encryption and noise as the model, each released
aggregate holds the same noise per coordinate as without them, and the model is not moved by them:
training steps with the released sum's model part divided by the real clients' weight (the real
clients' participation does not depend on the canaries' coins). The auditor sees every released
aggregate (what the accountant's epsilon covers, composed over all rounds) and scores canary j by
the sum of its coordinate over all rounds: an included canary adds about clip per round it took
part in, against noise growing as sqrt(rounds). The accountant charges the rounds as they ran,
canaries included (their noise shares too, with distributed DP).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from securefl.aggregator import Aggregator
from securefl.audit.canaries import epsilon_lower_bound, guess
from securefl.datasets import Federated
from securefl.errors import DropoutError, InputError
from securefl.fedavg import RoundMetrics, train
from securefl.report import Result

CANARY_TENSOR = "securefl.audit.canaries"  # the extra tensor of every update that holds the canaries


@dataclass
class RunRound:
    """One round of the audited run."""

    round: int
    accuracy: float
    epsilon: float | None  # the accountant's, cumulative after this round (None: no DP)
    lower_bound: float  # from the canary scores summed over rounds 1..round
    correct: int  # right guesses of those scores
    guesses: int
    canaries: int  # canary clients in this round's aggregate


@dataclass
class RunAudit:
    """A whole training run, audited: accountant's epsilon, empirical lower bound and accuracy, per round."""

    scheme: str
    mechanism: dict | None
    clients: int
    canaries: int
    included: int  # canaries whose coin came up "in"
    guesses: int
    delta: float
    confidence: float
    sample_rate: float
    seconds: float
    rounds: list[RunRound] = field(default_factory=list)

    @property
    def final(self) -> RunRound:
        return self.rounds[-1]

    @property
    def ceiling(self) -> float:
        """The bound with every guess right: the most this many canaries and guesses can show."""
        return epsilon_lower_bound(self.canaries, self.guesses, self.guesses, self.delta, self.confidence)

    def to_dict(self) -> dict:
        return {**asdict(self), "ceiling": self.ceiling}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_markdown(self) -> str:
        f = self.final
        eps = "inf (no DP)" if f.epsilon is None else f"{f.epsilon:.3f}"
        first = self.rounds[0].epsilon
        d = self.mechanism
        mech = "none" if d is None else f"{d['mechanism']} z={d['noise_multiplier']:.4g} clip {d['clip']:g}"
        verdict = ("no DP, so nothing bounds it: every guess right means each canary's membership is exposed"
                   if d is None else "below the accountant's figure = no violation found")
        lines = [
            f"| scheme | DP | clients | rounds | canaries (in) | accountant epsilon, all rounds | empirical lower "
            f"bound ({self.confidence:.0%}) | right guesses | final accuracy |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            f"| {self.scheme} | {mech} | {self.clients} | {len(self.rounds)} | {self.canaries} ({self.included}) | "
            f"{eps} | {f.lower_bound:.3f} | {f.correct}/{self.guesses} | {f.accuracy:.2%} |",
            "",
            ("- accountant epsilon: infinite, no DP noise protects the released aggregates" if d is None else
             f"- accountant epsilon: the cumulative (epsilon, delta = {self.delta:g}) of all {len(self.rounds)} "
             "released aggregates, composed by the accountant (report.epsilon of the last round"
             + (f", amplified by client sampling at q = {self.sample_rate:g})" if self.sample_rate < 1 else ")")
             + f"; after round 1 it was {first:.3f}: it grows with every round"),
            f"- empirical lower bound: the epsilon that {f.correct} right of {self.guesses} membership guesses on "
            f"{self.canaries} canary clients ({self.included} put in by their coin) rule out at {self.confidence:.0%} "
            f"confidence (Steinke, Nasr, Jagielski 2023), from their coordinates summed over every round; {verdict}",
            f"- why they differ: the accountant bounds the worst case over all neighbouring runs; the audit measures "
            f"one attack on one run, and {self.canaries} canaries can show at most {self.ceiling:.3f} even with every "
            "guess right, so it is a sanity check (missing or broken noise shows up as a bound at that ceiling), "
            "not an estimate of the true epsilon" + ("" if d is not None else (
                " (here: no noise and every guess right, so the bound sits at the ceiling)" if f.correct == self.guesses
                else " (here no noise, yet canaries that client sampling never put in a round look excluded: more "
                     "rounds close the gap)")),
            f"- final accuracy: test accuracy of the global model after round {f.round}; canaries live on their own "
            f"coordinates and the step divides by the real clients' weight, so they do not move the model",
            f"- DP: {mech}, delta {self.delta:g}; clients sampled per round at q = {self.sample_rate:g} (canaries "
            f"too); the run took {self.seconds:.1f} s",
        ]
        return "\n".join(lines) + "\n"

    def plot(self, path: str | Path) -> Path:
        """A PNG: epsilon (accountant, lower bound, ceiling) and test accuracy against the round."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator

        r = [x.round for x in self.rounds]
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
        if self.rounds[0].epsilon is not None:
            left.plot(r, [x.epsilon for x in self.rounds], "o-", label="accountant epsilon (cumulative)")
        left.plot(r, [x.lower_bound for x in self.rounds], "s-", label=f"empirical lower bound ({self.confidence:.0%})")
        left.axhline(self.ceiling, color="grey", ls="--", lw=1, label="lower bound with every guess right")
        left.set(xlabel="round", ylabel=f"epsilon (delta {self.delta:g})", title="privacy", ylim=(0, None))
        left.legend(fontsize=8)
        right.plot(r, [100 * x.accuracy for x in self.rounds], "o-", color="tab:green")
        right.set(xlabel="round", ylabel="test accuracy (%)", title="accuracy", ylim=(0, 100))
        for ax in (left, right):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        fig.suptitle(f"securefl audit --run: {self.scheme}, {self.clients} clients + {self.canaries} canaries",
                     fontsize=10)
        fig.tight_layout()
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=110)
        plt.close(fig)
        return out


class CanaryFederation:
    """The aggregator as fedavg.train sees it: each round adds the sampled included canaries as clients,
    records their coordinates of the released sum, and returns the mean over the real clients."""

    def __init__(self, aggregator: Aggregator, inside: np.ndarray, value: float, sample_rate: float,
                 rng: np.random.Generator):
        self.aggregator, self.inside, self.value = aggregator, inside, value
        self.sample_rate, self.rng = sample_rate, rng
        self.scores = np.zeros(inside.size)
        self.last_canaries = 0

    def __getattr__(self, name: str) -> object:  # scheme, stages, input_stage, dp: the aggregator's
        return getattr(self.aggregator, name)

    def aggregate(self, updates: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float] | None = None,
                  dropped: object = None) -> Result:
        m, n = self.inside.size, len(updates)
        sampled = self.rng.random(m) < self.sample_rate
        members = np.flatnonzero(self.inside & sampled)
        template = {k: torch.zeros_like(v) for k, v in updates[0].items()}
        real = [{**u, CANARY_TENSOR: torch.zeros(m)} for u in updates]
        canaries = []
        for j in members:
            spike = torch.zeros(m)
            spike[j] = self.value
            canaries.append({**template, CANARY_TENSOR: spike})
        w = [1.0] * n if weights is None else [float(x) for x in weights]
        result = self.aggregator.aggregate(real + canaries, weights=w + [1.0] * members.size, dropped=dropped)
        total = dict(result.sum)
        self.scores += total.pop(CANARY_TENSOR).double().numpy()
        self.last_canaries = members.size
        kept = [i for i in result.report.survivors if i < n]
        weight, k = sum(w[i] for i in kept), len(kept)
        if weight <= 0:  # released (the canaries are scored), but there is no real mean to train with
            raise DropoutError(f"{self.aggregator.scheme}: no real client's input reached the aggregate")
        mean = {key: (v / weight if v.is_floating_point() else (2 * v + k) // (2 * k)).to(updates[0][key].dtype)
                for key, v in total.items()}
        return Result(mean=mean, sum=total, report=result.report)


def audit_run(aggregator: Aggregator, data: Federated, *, canaries: int = 100, guesses: int | None = None,
              rounds: int = 10, sample_rate: float = 1.0, seed: int = 0, confidence: float = 0.95,
              on_round: Callable[[RunRound], None] | None = None, **train_options: object) -> RunAudit:
    """Train `data` through `aggregator` (its accountant is charged: this is a real run) with `canaries` canary
    clients (module docstring); after every round, the lower bound from the canary scores so far.
    guesses: membership guesses (default: half the canaries). train_options: fedavg.train's (model, lr, ...)."""
    if canaries < 2:
        raise InputError(f"a run audit needs at least 2 canaries, got {canaries}")
    rng = np.random.default_rng([seed, 2])  # the auditor's coins: simulation randomness, not a guarantee's
    inside = rng.random(canaries) < 0.5
    mech = aggregator.dp
    fed = CanaryFederation(aggregator, inside, mech.clip if mech is not None else 1.0, sample_rate, rng)
    delta = mech.delta if mech is not None else 1e-5
    wanted = canaries // 2 if guesses is None else guesses
    out = RunAudit(aggregator.scheme, None if mech is None else mech.describe(), len(data.clients), canaries,
                   int(inside.sum()), guess(fed.scores, inside, wanted)[0], delta, confidence, sample_rate, 0.0)

    def record(m: RoundMetrics) -> None:
        r, right = guess(fed.scores, inside, wanted)
        row = RunRound(m.round, m.accuracy, None if mech is None else mech.epsilon(),
                       epsilon_lower_bound(canaries, r, right, delta, confidence), right, r,
                       0 if m.error else fed.last_canaries)
        out.rounds.append(row)
        if on_round:
            on_round(row)

    t0 = time.perf_counter()
    train(fed, data, rounds=rounds, sample_rate=sample_rate, seed=seed, on_round=record, **train_options)
    out.seconds = time.perf_counter() - t0
    return out
