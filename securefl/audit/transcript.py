"""Transcript check: a distinguisher on one party's view of two input sets with the same aggregate.

Several rounds run with all-zero inputs and as many with large inputs that cancel in pairs; a diagonal
linear discriminant on byte statistics of what the party received is scored by leave-one-out
accuracy, and a label-permutation test gives its p-value. It flags Plaintext, even with each update
under its own DP noise share, so it would catch a gross leak; staying at chance is evidence against
such leaks, not a proof of indistinguishability (a cleverer distinguisher or other inputs may
succeed where this one does not).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from securefl.aggregator import Aggregator
from securefl.audit.recording import Message, record_round
from securefl.errors import SecureFLError


@dataclass
class TranscriptCheck:
    """A distinguisher on one party's view: all-zero vs large inputs (same aggregate) over `runs` rounds each."""

    party: str
    runs: int  # rounds recorded per input set
    bytes_compared: int
    statistic: float  # leave-one-out accuracy of the linear distinguisher (0.5 = chance)
    p_value: float  # label-permutation test of that accuracy
    alpha: float

    @property
    def indistinguishable(self) -> bool:
        """Whether the distinguisher stayed at chance (p > alpha): evidence against a gross leak, not a proof."""
        return self.p_value > self.alpha

    def summary(self) -> str:
        """One line: what was compared, the distinguisher's accuracy and p-value, and what the verdict means."""
        verdict = ("indistinguishable: evidence against a gross leak, not a proof" if self.indistinguishable
                   else "DISTINGUISHABLE: this party's view depends on the individual inputs")
        return (f"transcript check: can {self.party} tell all-zero inputs from large ones with the same sum? A linear "
                f"distinguisher on byte statistics of what it received ({self.runs} + {self.runs} rounds, "
                f"{self.bytes_compared} bytes) is right {self.statistic:.0%} of the time (50% = chance), "
                f"permutation p = {self.p_value:.3g} -> {verdict} (alpha {self.alpha:g})")


def _features(transcript: list[Message], party: str) -> np.ndarray:
    """What `party` received, as 48 byte statistics. For each message body and each byte position modulo 8:
    the mean byte and the frequencies of 0x00 and 0xFF (where small or negative integers, sign extension and
    padding show); then their mean and their spread over the messages (one client's shifted update shows in
    the spread even when the shifts cancel on average). Uniform bytes give the same figures whatever the inputs."""
    stats_ = []
    for m in transcript:
        if m.dst != party or not m.body:
            continue
        d = np.frombuffer(m.body, np.uint8)
        pos = np.arange(d.size) % 8
        count = np.maximum(np.bincount(pos, minlength=8), 1)
        stats_.append(np.concatenate([np.bincount(pos, weights=v, minlength=8) / count
                                      for v in (d.astype(np.float64) / 255, d == 0, d == 255)]))
    if not stats_:
        raise SecureFLError(f"transcript check: {party!r} received nothing")
    per_message = np.array(stats_)
    return np.concatenate([per_message.mean(0), per_message.std(0)])


def loo_accuracy(x: np.ndarray, labels: np.ndarray, ridge: float = 0.1) -> np.ndarray:
    """Leave-one-out accuracy of a diagonal linear discriminant (class means, pooled per-feature variance, all
    refitted without the left-out run), for each row of `labels` (one labelling of the runs each)."""
    y = labels.astype(np.float64)[:, :, None]  # (P, N, 1): 1 = second input set
    x2 = x * x
    n1 = y.sum(1, keepdims=True) - y  # class sizes without run i: (P, N, 1)
    n0 = x.shape[0] - 1 - n1
    s1 = (y * x).sum(1, keepdims=True) - y * x  # class sums without run i: (P, N, F)
    s0 = ((1 - y) * x).sum(1, keepdims=True) - (1 - y) * x
    q1 = (y * x2).sum(1, keepdims=True) - y * x2
    q0 = ((1 - y) * x2).sum(1, keepdims=True) - (1 - y) * x2
    m1, m0 = s1 / n1, s0 / n0
    var = (q1 - n1 * m1 * m1 + q0 - n0 * m0 * m0) / (n1 + n0 - 2) + ridge
    score = ((m1 - m0) / var * (x[None] - (m1 + m0) / 2)).sum(2)
    return ((score > 0) == (labels == 1)).mean(1)


def transcript_check(aggregator: Aggregator, *, clients: int = 6, dim: int = 2048, party: str | None = None,
                     seed: int = 0, runs: int = 12, permutations: int = 1999, alpha: float = 1e-3) -> TranscriptCheck:
    """Can `party` (default: the server, else the leader) tell two input sets with the same aggregate apart:
    all zeros, and large values on the fixed-point grid that cancel in pairs (so even a party that is meant
    to learn the sum sees the same sum; only the individual updates differ)? `runs` rounds of each are
    recorded; a linear discriminant on byte statistics of what the party received (_features) is
    scored by leave-one-out accuracy, against `permutations` relabellings (the p-value). The features are
    standardised without the labels, so the permutation test is exact."""
    rng = np.random.default_rng(seed)
    scale = 2.0**aggregator.frac_bits
    zeros = [torch.zeros(dim) for _ in range(clients)]
    pairs = [torch.from_numpy(np.round(rng.uniform(0.5, 1.0, dim) * aggregator.clip * scale) / scale)
             for _ in range(clients // 2)]
    large = [sign * v for v in pairs for sign in (1, -1)] + zeros[: clients % 2]
    rows, size = [], 0
    for inputs in (zeros, large):
        for _ in range(runs):
            _, transcript = record_round(aggregator, inputs)
            if party is None:
                seen = {m.dst for m in transcript}
                party = next((p for p in ("server", "leader") if p in seen), aggregator.output_party)
            rows.append(_features(transcript, party))
            size += sum(len(m.body) for m in transcript if m.dst == party)
    x = np.array(rows)
    x = (x - x.mean(0)) / (x.std(0) + 1e-12)
    truth = np.repeat([0, 1], runs)
    labels = np.vstack([truth] + [rng.permutation(truth) for _ in range(permutations)])
    acc = np.concatenate([loo_accuracy(x, labels[i:i + 200]) for i in range(0, len(labels), 200)])
    p = (1 + int((acc[1:] >= acc[0]).sum())) / (1 + permutations)
    return TranscriptCheck(party, runs, size, float(acc[0]), p, alpha)
