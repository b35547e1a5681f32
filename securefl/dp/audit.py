"""Privacy audit: what each party of a configuration receives, the epsilon each really gets, an empirical
epsilon lower bound (one-run audit), and a transcript distinguisher.

1. privacy_report: runs a real simulated round, records every message (sender, receiver, wire kind,
   size) and states per party kind what it received, what it could learn alone and with whom it
   would have to collude, how many dropouts the round survives (measured), and the epsilon of the
   noise that party (or coalition) actually sees: a Plaintext server sees each update with only
   its own client's noise share; a SecAgg server with its colluding clients sees sums carrying the
   honest survivors' shares; a party that adds the central noise itself sees the exact sum (no DP
   against it); observers of the released aggregate get the accountant's epsilon.
2. one_run_audit: Steinke, Nasr and Jagielski (NeurIPS 2023): m canary clients, each included
   with probability 1/2, scored on the released sum; the number of correct membership guesses
   gives an epsilon lower bound at the chosen confidence.
3. transcript_check (securefl.dp.transcript): a distinguisher on one party's view of two input
   sets with the same aggregate, at chance for a scheme without a gross leak (it flags Plaintext).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from scipy import stats

from securefl.aggregator import Aggregator
from securefl.dp.accounting import Accountant
from securefl.dp.mechanisms import Mechanism
from securefl.dp.recording import fresh_copy, record_round
from securefl.dp.transcript import TranscriptCheck, transcript_check
from securefl.errors import DropoutError

__all__ = ["AuditResult", "PartyView", "PrivacyReport", "TranscriptCheck", "View", "dropouts_tolerated",
           "epsilon_lower_bound", "one_run_audit", "p_value", "party_epsilon", "privacy_report", "transcript_check"]


def _kind(party: str) -> str:
    return party.split("/")[0]


# What a party sees of the updates: "updates" (each one, with its own client noise share only), "sum" (the sum
# before any release noise; `colluders` clients' shares known to it), "release" (the released noisy sum),
# "shares" (uniformly random shares or ciphertexts: no plaintext at all).
@dataclass(frozen=True)
class View:
    sees: str
    colluders: int = 0


def _roles(scheme: str, params: dict, n: int) -> dict[str, tuple[str, str, View]]:
    """Per party kind (and coalition): (what it learns alone, the coalition that would expose one client's
    update, what it sees of the updates)."""
    dp = " (with DP noise)" if "dp" in params else ""
    if scheme == "plaintext":
        return {"server": ("every client's update in the clear", "none needed", View("updates")),
                "client": ("its own update only", "the server alone sees every update", View("shares"))}
    if scheme == "additive":
        k = params.get("num_aggregators", "K")
        return {"leader": (f"the aggregate{dp}; each client's vector is masked by K-1 uniform shares",
                           f"all {k} aggregators (the leader and the {k}-1 helpers)", View("sum")),
                "helper": ("uniformly random share expansions; sealed seeds it alone can open",
                           f"all {k} aggregators", View("shares")),
                f"all {k} aggregators": ("every client's update", "-", View("updates")),
                "client": ("its own update and the aggregators' public keys", f"all {k} aggregators",
                           View("shares"))}
    if scheme.startswith("secagg"):
        c = int(params.get("colluders_needed", int(params.get("threshold", 1)) - 1))
        return {"server": (f"the aggregate{dp} and who survived; masked inputs look uniform",
                           f"the server with {c} colluding share holders of the target", View("sum")),
                f"server + {c} colluding clients": (f"the sum of the honest survivors' updates{dp}", "-",
                                                    View("sum", colluders=c)),
                "client": ("its own update; others' public keys and shares encrypted to it",
                           f"the server and {c} share holders together", View("shares"))}
    if scheme in ("ckks", "paillier"):
        return {"server": ("ciphertexts only, then the decrypted aggregate" + dp,
                           "the key holder (it decrypts what it is sent)", View("release")),
                "keyholder": ("the aggregate it decrypts (before the central noise it adds)",
                              "the server (to be sent one client's ciphertext)", View("sum")),
                "keyholder + server": ("every client's update", "-", View("updates")),
                "client": ("its own update and the signed public key", "the server and the key holder",
                           View("shares"))}
    return {}


def party_epsilon(mech: Mechanism, view: View, *, frac_bits: int, survivors: int, min_survivors: int, dim: int,
                  sampling_rate: float = 1.0) -> float | None:
    """Epsilon at mech.delta of one round for a party with this view (None: it sees no plaintext;
    inf: it sees an update or the sum without noise). A party that knows who took part gets q = 1."""
    if view.sees == "shares":
        return None
    clients_noise = mech.client_variance(frac_bits, min_survivors) > 0
    noisy = 1 if view.sees == "updates" else max(survivors - view.colluders, 0)
    if view.sees != "release" and not clients_noise:
        return math.inf  # only the release noise protects it, and it sees the value before that noise
    acc = Accountant()
    acc.step(mech.round_event(frac_bits=frac_bits, noisy_clients=noisy if clients_noise else survivors,
                              min_survivors=min_survivors, dim=dim, sampling_rate=sampling_rate))
    return acc.get_epsilon(mech.delta)


def dropouts_tolerated(aggregator: Aggregator, updates: list, stage: str | None = None) -> int:
    """Largest number of clients that can vanish at `stage` (default: the input stage) with the round
    still succeeding, measured on real rounds (a failing round must raise DropoutError)."""
    agg = fresh_copy(aggregator)
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
    """What one kind of party (or coalition) received in the audited round, could learn, and its epsilon."""

    kind: str
    parties: int
    bytes_received: int
    messages: dict[str, list[int]]  # "from-kind:wire-kind" -> [count, total bytes]
    learns_alone: str
    collusion_needed: str
    sees: str = "-"  # of the updates: "updates", "sum", "release", "shares" (see View) or "unknown"
    epsilon: float | None = None  # one round, from the noise it sees; inf: none; None: sees no plaintext


@dataclass
class PrivacyReport:
    """The privacy report of one configuration (markdown and JSON)."""

    scheme: str
    threat_model: str
    clients: int
    dim: int
    dropouts_tolerated: int
    epsilon: float | None  # observers of the released aggregate (the accountant's, with client sampling)
    delta: float | None
    dp: dict
    parties: list[PartyView] = field(default_factory=list)

    def to_dict(self) -> dict:
        out = asdict(self)
        for p in out["parties"]:  # strict JSON: no Infinity
            p["epsilon"] = "inf" if p["epsilon"] is not None and math.isinf(p["epsilon"]) else p["epsilon"]
        return out

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
            lines.append(f"- (epsilon, delta) for observers of the released aggregate: ({self.epsilon:.3f}, "
                         f"{self.delta:g}) per round; each party's own figure is in the table (one round; it "
                         "knows who took part, so no sampling amplification)")
            lines.append(f"- mechanism: {self.dp}")
        lines += ["", "| party | count | bytes received | messages (from:kind = count x bytes) | learns alone | "
                  "to learn one client's update needs | epsilon against it |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for p in self.parties:
            msgs = ", ".join(f"{k} = {c} x {b // max(c, 1)}" for k, (c, b) in sorted(p.messages.items()))
            lines.append(f"| {p.kind} | {p.parties} | {p.bytes_received} | {msgs or '-'} | {p.learns_alone} | "
                         f"{p.collusion_needed} | {_fmt_eps(p, self.epsilon is not None)} |")
        return "\n".join(lines) + "\n"


def _fmt_eps(p: PartyView, with_dp: bool) -> str:
    if p.sees == "unknown":
        return "not assessed"
    if p.epsilon is None:
        return "- (no plaintext)"
    if math.isinf(p.epsilon):
        what = {"updates": "each update", "sum": "the sum"}.get(p.sees, "the value")
        return f"none: sees {what} without noise" if with_dp else "none (no DP)"
    return f"{p.epsilon:.3f} (sees {'each update with its own noise share' if p.sees == 'updates' else p.sees})"


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
        v = views.setdefault(kind, PartyView(kind, 0, 0, {}, *roles.get(kind, ("see the threat model", "-"))[:2]))
        names.setdefault(kind, set()).add(m.dst)
        key = f"{_kind(m.src)}:{m.kind}"
        c, b = v.messages.get(key, [0, 0])
        v.messages[key] = [c + 1, b + len(m.payload)]
        v.bytes_received += len(m.payload)
    for kind, v in views.items():
        v.parties = len(names[kind])
    for kind, (alone, needs, _) in roles.items():  # coalitions: no messages of their own
        views.setdefault(kind, PartyView(kind, 0, 0, {}, alone, needs))
    mech = aggregator.dp
    for kind, v in views.items():
        view = roles[kind][2] if kind in roles else View("unknown")
        v.sees = view.sees
        if view.sees == "unknown":
            v.epsilon = None
        elif mech is None:
            v.epsilon = None if view.sees == "shares" else math.inf
        else:
            v.epsilon = party_epsilon(mech, view, frac_bits=aggregator.frac_bits, survivors=len(rep.survivors),
                                      min_survivors=rep.params["dp"]["min_survivors"], dim=dim)
    return PrivacyReport(
        scheme=rep.scheme, threat_model=getattr(aggregator, "threat_model", "(not stated by the scheme)"),
        clients=clients, dim=dim,
        dropouts_tolerated=dropouts_tolerated(aggregator, updates),
        epsilon=rep.epsilon, delta=rep.delta, dp=rep.params.get("dp", {}),
        parties=sorted(views.values(), key=lambda p: p.kind),
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
    agg = fresh_copy(aggregator)
    agg.seed = seed
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
    eps_acc = None
    if agg.dp is not None:
        info = result.report.params["dp"]
        eps_acc = party_epsilon(agg.dp, View("release"), frac_bits=agg.frac_bits, survivors=info["noisy_survivors"],
                                min_survivors=info["min_survivors"], dim=canaries)
    return AuditResult(canaries, int(members.size), r, correct, epsilon_lower_bound(canaries, r, correct, delta,
                       confidence), eps_acc, delta, confidence)
