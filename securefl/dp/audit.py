"""Privacy audit: what each party of a configuration receives and can learn, an empirical epsilon
lower bound (one-run audit), and a transcript indistinguishability check.

1. privacy_report: runs a real simulated round, records every message (sender, receiver, wire
   kind, size) and states per party kind what it received, what it could learn alone and with
   whom it would have to collude, how many dropouts the round survives (measured), and (eps, delta).
2. one_run_audit: Steinke, Nasr and Jagielski (NeurIPS 2023): m canary clients, each included
   with probability 1/2, scored on the released sum; the number of correct membership guesses
   gives an epsilon lower bound at the chosen confidence.
3. transcript_check: the chosen party's received bytes under two very different input sets are
   compared with a chi-square test on byte frequencies.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from scipy import stats

from securefl import wire
from securefl.aggregator import Aggregator
from securefl.errors import DropoutError
from securefl.report import Result
from securefl.simulation import Simulation


@dataclass(frozen=True)
class Message:
    """One recorded message: who sent it to whom, its wire kind (-1 if it has no securefl header), its bytes."""

    src: str
    dst: str
    kind: int
    payload: bytes


class RecordingSimulation(Simulation):
    """A Simulation that also keeps every message it routes."""

    def __init__(self, *args: object, **kwargs: object):
        super().__init__(*args, **kwargs)
        self.transcript: list[Message] = []

    def send(self, src: str, dst: str, payload: bytes) -> bytes:
        ok = len(payload) >= wire.HEADER_SIZE and payload[:2] == wire.MAGIC
        self.transcript.append(Message(src, dst, payload[3] if ok else -1, bytes(payload)))
        return super().send(src, dst, payload)


def record_round(aggregator: Aggregator, updates: list, weights: list | None = None,
                 dropped: object = None) -> tuple[Result, list[Message]]:
    """Run one round on a copy of the aggregator (its DP budget untouched) and return (result, transcript)."""
    agg = copy.deepcopy(aggregator)
    if agg.dp is not None:
        agg.dp.reset()
    sims: list[RecordingSimulation] = []

    class _Recorder(RecordingSimulation):
        def __init__(self, *a: object, **k: object):
            super().__init__(*a, **k)
            sims.append(self)

    agg.simulation_class = _Recorder
    result = agg.aggregate(updates, weights=weights, dropped=dropped)
    return result, sims[-1].transcript


def _kind(party: str) -> str:
    return party.split("/")[0]


def _roles(scheme: str, params: dict, n: int) -> dict[str, tuple[str, str]]:
    """Per party kind: (what it learns alone, the coalition that would expose one client's update)."""
    dp = " (with DP noise)" if "dp" in params else ""
    if scheme == "plaintext":
        return {"server": ("every client's update in the clear", "none needed"),
                "client": ("its own update only", "the server alone sees every update")}
    if scheme == "additive":
        k = params.get("num_aggregators", "K")
        return {"leader": (f"the aggregate{dp}; each client's vector is masked by K-1 uniform shares",
                           f"all {k} aggregators (the leader and the {k}-1 helpers)"),
                "helper": ("uniformly random share expansions; sealed seeds it alone can open",
                           f"all {k} aggregators"),
                "client": ("its own update and the aggregators' public keys", f"all {k} aggregators")}
    if scheme.startswith("secagg"):
        t = params.get("threshold", "t")
        return {"server": (f"the aggregate{dp} and who survived; masked inputs look uniform",
                           f"the server with {t} colluding clients (t = threshold), or a client's secrets"),
                "client": ("its own update; others' public keys and shares encrypted to it",
                           f"the server and {t} clients together")}
    if scheme in ("ckks", "paillier"):
        return {"server": ("ciphertexts only, then the decrypted aggregate" + dp,
                           "the key holder (it decrypts whatever the server sends)"),
                "keyholder": ("the aggregate it decrypts" + dp, "the server (to be sent a single ciphertext)"),
                "client": ("its own update and the signed public key", "the server and the key holder")}
    return {}


def dropouts_tolerated(aggregator: Aggregator, updates: list, stage: str | None = None) -> int:
    """Largest number of clients that can vanish at `stage` (default: the input stage) with the round
    still succeeding, measured on real rounds (a failing round must raise DropoutError)."""
    agg = copy.deepcopy(aggregator)
    if agg.dp is not None:
        agg.dp.reset()
    stage = stage or agg.input_stage
    tolerated = 0
    for j in range(1, len(updates)):
        try:
            agg.aggregate(updates, dropped={i: stage for i in range(j)})
        except DropoutError:
            break
        tolerated = j
    return tolerated


@dataclass
class PartyView:
    """What one kind of party received in the audited round and could learn."""

    kind: str
    parties: int
    bytes_received: int
    messages: dict[str, list[int]]  # "from-kind:wire-kind" -> [count, total bytes]
    learns_alone: str
    collusion_needed: str


@dataclass
class PrivacyReport:
    """The privacy report of one configuration (markdown and JSON)."""

    scheme: str
    threat_model: str
    clients: int
    dim: int
    dropouts_tolerated: int
    epsilon: float | None
    delta: float | None
    epsilon_against_server: float | None
    dp: dict
    parties: list[PartyView] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_markdown(self) -> str:
        lines = [
            f"## Privacy report: {self.scheme}",
            "",
            f"- threat model: {self.threat_model}",
            f"- audited round: {self.clients} clients, {self.dim} values each",
            f"- dropouts tolerated (clients vanishing before their input, measured): {self.dropouts_tolerated}",
        ]
        if self.epsilon is None:
            lines.append("- differential privacy: none (the aggregate is released exactly)")
        else:
            lines.append(f"- (epsilon, delta) per round: ({self.epsilon:.3f}, {self.delta:g}) for observers of the "
                         f"released aggregate; ({self.epsilon_against_server:.3f}, {self.delta:g}) against the server "
                         "(it knows who took part)")
            lines.append(f"- mechanism: {self.dp}")
        lines += ["", "| party | count | bytes received | messages (from:kind = count x bytes) | learns alone | "
                  "to learn one client's update needs |", "| --- | --- | --- | --- | --- | --- |"]
        for p in self.parties:
            msgs = ", ".join(f"{k} = {c} x {b // max(c, 1)}" for k, (c, b) in sorted(p.messages.items()))
            lines.append(f"| {p.kind} | {p.parties} | {p.bytes_received} | {msgs or '-'} | {p.learns_alone} | "
                         f"{p.collusion_needed} |")
        return "\n".join(lines) + "\n"


def privacy_report(aggregator: Aggregator, *, clients: int = 6, dim: int = 256, seed: int = 0) -> PrivacyReport:
    """Run a real simulated round of `aggregator` on random updates and describe what every party saw."""
    rng = np.random.default_rng(seed)
    updates = [torch.from_numpy(rng.normal(0, 0.1, dim).astype(np.float32)) for _ in range(clients)]
    result, transcript = record_round(aggregator, updates)
    rep = result.report
    roles = _roles(rep.scheme, rep.params, clients)
    views: dict[str, PartyView] = {}
    names: dict[str, set[str]] = {}
    for m in transcript:
        kind = _kind(m.dst)
        v = views.setdefault(kind, PartyView(kind, 0, 0, {}, *roles.get(kind, ("see the threat model", "-"))))
        names.setdefault(kind, set()).add(m.dst)
        key = f"{_kind(m.src)}:{m.kind}"
        c, b = v.messages.get(key, [0, 0])
        v.messages[key] = [c + 1, b + len(m.payload)]
        v.bytes_received += len(m.payload)
    for kind, v in views.items():
        v.parties = len(names[kind])
    dp = aggregator.dp
    eps_server = None
    if dp is not None:
        probe = copy.deepcopy(dp)
        probe.reset()
        probe.spend(rep.params["dp"]["effective_noise_multiplier"])
        eps_server = probe.epsilon(sampling_rate=1.0)
    return PrivacyReport(
        scheme=rep.scheme, threat_model=getattr(aggregator, "threat_model", "(not stated by the scheme)"),
        clients=clients, dim=dim,
        dropouts_tolerated=dropouts_tolerated(aggregator, updates),
        epsilon=rep.epsilon, delta=rep.delta, epsilon_against_server=eps_server,
        dp=rep.params.get("dp", {}), parties=sorted(views.values(), key=lambda p: p.kind),
    )


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


@dataclass
class AuditResult:
    """Outcome of a one-run audit."""

    canaries: int
    included: int
    guesses: int
    correct: int
    epsilon_lower_bound: float
    epsilon_accountant: float | None  # one round, no sampling amplification
    delta: float
    confidence: float


def one_run_audit(aggregator: Aggregator, *, canaries: int = 1000, guesses: int | None = None, seed: int = 0,
                  delta: float | None = None, confidence: float = 0.95) -> AuditResult:
    """Steinke-Nasr-Jagielski one-run audit of one round of `aggregator`.

    Canary i is the update clip * e_i (orthogonal Dirac canaries, the strongest for a sum); each is
    a client with probability 1/2; the auditor scores every canary by its coordinate of the
    released sum and guesses the `guesses` / 2 highest included and as many lowest excluded
    (default guesses: half the canaries; the rest abstain). Without noise every guess is right and
    the bound is large.
    """
    rng = np.random.default_rng(seed)
    agg = copy.deepcopy(aggregator)
    agg.seed = seed
    if agg.dp is not None:
        agg.dp.reset()
    clip = agg.dp.clip if agg.dp is not None else 1.0
    delta = delta if delta is not None else (agg.dp.delta if agg.dp is not None else 1e-5)
    inside = rng.random(canaries) < 0.5
    members = np.flatnonzero(inside)
    updates = []
    for i in members:
        u = torch.zeros(canaries)
        u[i] = clip
        updates.append(u)
    if not updates:
        raise DropoutError("one-run audit: no canary was included; use more canaries")
    result = agg.aggregate(updates)
    scores = result.sum.numpy().astype(np.float64)
    k = (canaries // 2 if guesses is None else guesses) // 2
    order = np.argsort(scores, kind="stable")
    guess_in, guess_out = order[canaries - k:], order[:k] if k else order[:0]
    correct = int(inside[guess_in].sum() + (~inside[guess_out]).sum())
    r = guess_in.size + guess_out.size
    eps_acc = agg.dp.epsilon(sampling_rate=1.0) if agg.dp is not None else None
    return AuditResult(canaries, int(members.size), r, correct, epsilon_lower_bound(canaries, r, correct, delta,
                       confidence), eps_acc, delta, confidence)


@dataclass
class TranscriptCheck:
    """Chi-square comparison of one party's received bytes under two input sets."""

    party: str
    bytes_compared: int
    statistic: float
    p_value: float
    alpha: float

    @property
    def indistinguishable(self) -> bool:
        return self.p_value > self.alpha


def _view(transcript: list[Message], party: str) -> np.ndarray:
    body = [m.payload[wire.HEADER_SIZE:] if m.kind >= 0 else m.payload for m in transcript if m.dst == party]
    return np.frombuffer(b"".join(body), np.uint8)


def transcript_check(aggregator: Aggregator, *, clients: int = 6, dim: int = 2048, party: str | None = None,
                     seed: int = 0, alpha: float = 1e-4) -> TranscriptCheck:
    """Compare what `party` (default: the server, else the leader) receives when the
    clients hold zeros versus large random values: a secure scheme's view must not tell them apart."""
    rng = np.random.default_rng(seed)
    clip = aggregator.clip
    zeros = [torch.zeros(dim) for _ in range(clients)]
    large = [torch.from_numpy(rng.uniform(0.5 * clip, clip, dim).astype(np.float32)) for _ in range(clients)]
    _, ta = record_round(aggregator, zeros)
    _, tb = record_round(aggregator, large)
    if party is None:
        seen = {m.dst for m in ta}
        party = next((p for p in ("server", "leader") if p in seen), aggregator.output_party)
    a, b = _view(ta, party), _view(tb, party)
    if not a.size or not b.size:
        raise ValueError(f"transcript check: {party!r} received nothing")
    table = np.stack([np.bincount(a, minlength=256), np.bincount(b, minlength=256)])
    table = table[:, table.sum(0) > 0]
    stat, p, _, _ = stats.chi2_contingency(table)
    return TranscriptCheck(party, int(a.size + b.size), float(stat), float(p), alpha)
