"""The privacy report of one configuration: what each party of a real simulated round received, what the
scheme says it learns and who must collude with it (Aggregator.roles_view), and the epsilon each party
really gets from the noise it sees.

A Plaintext server sees each update with only its own client's noise share; a SecAgg server sees the
sum carrying every survivor's share; a party that adds the central noise itself sees the exact sum
(no DP against it); observers of the released aggregate get the accountant's epsilon.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import dp_accounting
import numpy as np
import torch

from securefl.aggregator import Aggregator, RoleView
from securefl.audit.recording import fresh_copy, record_round
from securefl.dp import Accountant, Mechanism
from securefl.errors import DropoutError
from securefl.wire import PartyId

SCHEME_PARAMS = ("graph", "neighbors", "threshold", "share_holders", "colluders_needed", "num_aggregators",
                 "min_clients", "key_bits", "poly_modulus_degree")  # shown in the report's header


def party_epsilon(mech: Mechanism, view: RoleView, *, frac_bits: int, noisy_survivors: int, min_survivors: int,
                  dim: int, sampling_rate: float = 1.0, rounds: int = 1) -> float | None:
    """Epsilon at mech.delta, over `rounds` rounds, of a party with this view (None: it sees no plaintext; inf: it
    sees an update or the sum before any noise). A party that knows who took part gets sampling_rate = 1."""
    if view.sees == "nothing":
        return None
    clients_noise = mech.client_variance(frac_bits, min_survivors) > 0
    if not (clients_noise or view.released):
        return math.inf  # only the release noise protects it, and it sees the value before that noise
    event = mech.round_event(frac_bits=frac_bits, noisy_clients=1 if view.sees == "updates" else noisy_survivors,
                             min_survivors=min_survivors, dim=dim, sampling_rate=sampling_rate)
    acc = Accountant()
    acc.step(dp_accounting.SelfComposedDpEvent(event, rounds))
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
    messages: dict[str, list[int]]  # "sender kind:wire.Kind name" -> [count, total bytes]
    learns_alone: str
    collusion_needed: str
    sees: str = "unknown"  # "updates", "sum", "nothing" (RoleView.sees), or "unknown": the scheme states nothing
    released: bool = False  # it sees that value after the release (central) noise
    epsilon: float | None = None  # one round, from the noise it sees; inf: none; None: sees no plaintext


@dataclass
class PrivacyReport:
    """The privacy report of one configuration (markdown and JSON)."""

    scheme: str
    threat_model: str
    clients: int
    dim: int
    params: dict  # the scheme's parameters in the audited round (SCHEME_PARAMS)
    dropouts_tolerated: int
    epsilon: float | None  # one round, observers of the released aggregate (the accountant's, with client sampling)
    epsilon_min_batch: float | None  # one round whose sum holds only the minimum batch's noise (q = 1)
    epsilon_cumulative: float | None  # `rounds` such rounds, composed by the accountant
    rounds: int
    delta: float | None
    dp: dict
    output_party: str
    parties: list[PartyView] = field(default_factory=list)

    def to_dict(self) -> dict:
        out = asdict(self)
        for p in out["parties"]:  # strict JSON: no Infinity
            p["epsilon"] = "inf" if p["epsilon"] is not None and math.isinf(p["epsilon"]) else p["epsilon"]
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_markdown(self) -> str:
        shown = ", ".join(f"{k} {v}" for k, v in self.params.items())
        lines = [
            f"## Privacy report: {self.scheme}",
            "",
            f"- threat model: {self.threat_model}",
            f"- audited round: one real simulated round of {self.clients} clients, {self.dim} values each"
            + (f"; {shown}" if shown else ""),
            f"- dropouts tolerated: {self.dropouts_tolerated} of {self.clients} (measured: that many clients vanishing "
            "before their input still leave a result; one more ends the round with DropoutError)",
        ]
        if self.epsilon is None:
            lines.append("- differential privacy: none (the aggregate is released exactly)")
        else:
            lines += self._dp_lines()
        lines += ["", "| party | count | bytes received | messages received (from:kind = count x bytes) | learns alone "
                  "| to learn one client's update needs | epsilon against it (one round) |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for p in self.parties:
            msgs = ", ".join(f"{k} = {c} x {b // max(c, 1)}" for k, (c, b) in sorted(p.messages.items()))
            count = str(p.parties) if p.parties else "coalition"
            lines.append(f"| {p.kind} | {count} | {p.bytes_received or '-'} | {msgs or '-'} | {p.learns_alone} | "
                         f"{p.collusion_needed} | {_fmt_eps(p, self.dp)} |")
        lines += [
            "",
            "- count: parties of that kind in the round; a coalition has no messages of its own (it pools its "
            "members').",
            "- messages: sender kind and wire.Kind name = messages x mean bytes each; bytes received: their total.",
            "- learns alone / needs: the scheme's own statement (Aggregator.roles_view), for the parameters above.",
            "- epsilon against it: one round at delta, from the noise that party actually sees, without sampling "
            "amplification (it knows who took part); 'none' = it sees the value before any noise.",
        ]
        return "\n".join(lines) + "\n"

    def _dp_lines(self) -> list[str]:
        d = self.dp
        z, eff = d["noise_multiplier"], d["effective_noise_multiplier"]
        if d["local_variance"]:
            noise = (f"each client adds discrete Gaussian noise of variance (z clip)^2 / {d['min_survivors']} (sized "
                     f"for the {d['min_survivors']} survivors the scheme guarantees); this round's sum holds "
                     f"{d['noisy_survivors']} shares, effective z {eff:.3f}")
        else:
            noise = f"the {self.output_party} adds discrete Gaussian noise of std z clip to the sum before releasing it"
        q = d["sampling_rate"]
        lines = [
            f"- mechanism: {d['mechanism']}, z {z:g}, clip {d['clip']:g}, delta {self.delta:g}, sampling rate q "
            f"{q:g}: {noise}",
            f"- epsilon per round: {self.epsilon:.3f} (the accountant's figure for one released aggregate of this "
            f"round, against observers of it" + (f", amplified by q = {q:g})" if q < 1 else ")"),
        ]
        if self.epsilon_min_batch is not None:
            lines.append(f"- epsilon per round at the minimum batch: {self.epsilon_min_batch:.3f} (a sum of only the "
                         f"{d['min_survivors']} survivors the scheme guarantees, which a coordinator that drops the "
                         "rest can force; the noise is sized for it, q = 1)")
        lines.append(f"- cumulative epsilon: {self.epsilon_cumulative:.3f} after {self.rounds} such rounds (report."
                     f"epsilon after round {self.rounds}: rounds compose in RDP, so it grows about as sqrt(rounds), "
                     "not rounds x the per-round figure)")
        return lines


def _fmt_eps(p: PartyView, dp: dict) -> str:
    if p.sees == "unknown":
        return "not assessed (the scheme states no roles)"
    if p.epsilon is None:
        return "- (no plaintext)"
    what = {"updates": "each update", "sum": "the sum"}[p.sees]
    if math.isinf(p.epsilon):
        return f"none: sees {what} before any noise" if dp else "none (no DP)"
    if not dp["local_variance"]:
        whose = "the release noise"
    else:
        whose = "its own noise share only" if p.sees == "updates" else f"{dp['noisy_survivors']} clients' noise shares"
    return f"{p.epsilon:.3f} (sees {what}{' as released' if p.released else ''}, with {whose})"


def privacy_report(aggregator: Aggregator, *, clients: int = 6, dim: int = 256, seed: int = 0,
                   rounds: int = 10) -> PrivacyReport:
    """Run a real simulated round of `aggregator` on random updates and describe what every party saw; with DP,
    the epsilon per round, at the minimum batch, and after `rounds` rounds."""
    rng = np.random.default_rng(seed)
    updates = [torch.from_numpy(rng.normal(0, 0.1, dim).astype(np.float32)) for _ in range(clients)]
    result, transcript = record_round(aggregator, updates)
    rep = result.report
    roles = aggregator.roles_view(rep.params)
    stated = ("see the threat model", "-")
    views: dict[str, PartyView] = {}
    names: dict[str, set[str]] = {}
    for m in transcript:
        kind = PartyId.parse(m.dst).kind
        role = roles.get(kind)
        v = views.setdefault(kind, PartyView(kind, 0, 0, {}, *((role.learns_alone, role.exposes_one_update)
                                                             if role else stated)))
        names.setdefault(kind, set()).add(m.dst)
        key = f"{PartyId.parse(m.src).kind}:{m.kind}"
        c, b = v.messages.get(key, [0, 0])
        v.messages[key] = [c + 1, b + len(m.payload)]
        v.bytes_received += len(m.payload)
    for kind, v in views.items():
        v.parties = len(names[kind])
    for kind, role in roles.items():  # coalitions: no messages of their own
        views.setdefault(kind, PartyView(kind, 0, 0, {}, role.learns_alone, role.exposes_one_update))
    mech, info = aggregator.dp, rep.params.get("dp", {})
    for kind, v in views.items():
        role = roles.get(kind)
        if role is None:
            continue
        v.sees, v.released = role.sees, role.released
        if mech is None:
            v.epsilon = None if role.sees == "nothing" else math.inf
        else:
            v.epsilon = party_epsilon(mech, role, frac_bits=aggregator.frac_bits,
                                      noisy_survivors=info["noisy_survivors"], min_survivors=info["min_survivors"],
                                      dim=dim)
    min_batch = cumulative = None
    if mech is not None:
        kw = {"frac_bits": aggregator.frac_bits, "min_survivors": info["min_survivors"], "dim": dim}
        observer = RoleView("", "", "sum", released=True)
        if info["local_variance"] and info["min_survivors"] != info["noisy_survivors"]:
            min_batch = party_epsilon(mech, observer, noisy_survivors=info["min_survivors"], **kw)
        cumulative = party_epsilon(mech, observer, noisy_survivors=info["noisy_survivors"],
                                   sampling_rate=mech.sampling_rate, rounds=rounds, **kw)
    return PrivacyReport(
        scheme=rep.scheme, threat_model=aggregator.threat_model, clients=clients, dim=dim,
        params={k: rep.params[k] for k in SCHEME_PARAMS if k in rep.params},
        dropouts_tolerated=dropouts_tolerated(aggregator, updates),
        epsilon=rep.epsilon, epsilon_min_batch=min_batch, epsilon_cumulative=cumulative, rounds=rounds,
        delta=rep.delta, dp=info, output_party=aggregator.output_party,
        parties=sorted(views.values(), key=lambda p: (p.parties == 0, p.kind)),
    )
