"""The benchmark matrix: every registered scheme on the same updates, against Plaintext and the hardware floor.

Points are a star around a base (n, m, dropout): n swept at the base m, m swept at the base n,
the dropout rate swept, DP at the base point with each mechanism (where the Aggregator base takes dp=), the
scaling sweep to large n (schemes whose class says `scales_in_n`, e.g. SecAgg+), and the config's special
points (config.Special: their own n, a flat update or a model-shaped state_dict, schemes and DP variants).
A point's arms are (scheme, DP mechanism or None); every arm gets the same updates, seed and dropped
clients; each runs one warm-up round (Numba JIT, key generation: reported as first_call_s), then `repeats`
rounds interleaved across the arms so they share the machine's load. Figures are medians over those
rounds; each cell is set against Plaintext with the same DP at its point and, with DP, against the same
scheme without DP there. A scheme that raises records the error in its cell and the run goes on. Cell
budget: a cell whose estimated round time (the scheme's largest measured round at no more clients and
parameters, scaled linearly in n x m) would not fit a warm-up and one timed round is skipped, and one that
cannot fit all its rounds gets fewer (at least one; the cell records how many). Run budget (--quick): cells
not started in time are skipped.
"""

from __future__ import annotations

import inspect
import json
import statistics
import time
from dataclasses import asdict, dataclass, field

from securefl import schemes
from securefl.aggregator import Aggregator
from securefl.bench import floors, memory, output, peers
from securefl.bench.config import Config, Progress
from securefl.bench.workload import dropped_clients, make_state_dicts, make_updates, model_shapes, size
from securefl.errors import InputError
from securefl.report import Report


def supports_dp() -> bool:
    """Whether aggregators take dp= (the Aggregator base's signature says)."""
    return "dp" in inspect.signature(Aggregator.__init__).parameters


def scaling_schemes(names: list[str]) -> list[str]:
    """The schemes whose client cost grows more slowly than n (their class's `scales_in_n`, e.g. SecAgg+), swept to
    large n for the log-log plot. A scheme that cannot be built is left out here; its cells record why."""
    out = []
    for name in names:
        try:
            if schemes.make(name).scales_in_n():
                out.append(name)
        except Exception:  # its cells record the error
            continue
    return out


def make_mechanism(config: Config, kind: str) -> object:
    """A fresh DP mechanism ("distributed" or "central") for one aggregator."""
    from securefl import dp

    cls = {"distributed": dp.DistributedGaussian, "central": dp.GaussianMechanism}[kind]
    return cls(noise_multiplier=config.dp_noise_multiplier, clip=config.dp_clip)


Arm = tuple[str, str | None]  # (scheme, DP mechanism or None)


@dataclass
class Point:
    """One (n, m, dropout, update shape) configuration and its arms, each with the sweeps it belongs to. The update is
    a flat vector of m values, or (model) a state_dict of workload.MODELS[model] at base width `width`."""

    n: int
    m: int
    dropout: float
    model: str = ""
    width: int = 0
    arms: dict[Arm, set[str]] = field(default_factory=dict)

    @property
    def sweeps(self) -> set[str]:
        return set().union(*self.arms.values())

    @property
    def schemes(self) -> list[str]:
        return list(dict.fromkeys(name for name, _ in self.arms))

    @property
    def tensors(self) -> int:
        return len(model_shapes(self.model, self.width)) if self.model else 1

    def updates(self, seed: int) -> list:
        """The n updates every arm gets: flat tensors, or state_dicts of the model's shapes."""
        if self.model:
            return make_state_dicts(self.n, model_shapes(self.model, self.width), seed)
        return make_updates(self.n, self.m, seed)


def plan(config: Config, names: list[str]) -> list[Point]:
    """The points of the run, smallest n x m first (so skip estimates have data); at each, the arms without DP first,
    Plaintext first among them."""
    points: dict[tuple, Point] = {}

    def add(n: int, m: int, d: float, sweep: str, which: list[str], dp: str | None = None, model: str = "",
            width: int = 0) -> None:
        p = points.setdefault((n, m, d, model, width), Point(n, m, d, model, width))
        for name in which:
            p.arms.setdefault((name, dp), set()).add(sweep)

    c = config
    for n in c.ns:
        add(n, c.base_m, c.base_dropout, "n", names)
    for m in c.ms:
        add(c.base_n, m, c.base_dropout, "m", names)
    for d in c.dropouts:
        add(c.base_n, c.base_m, d, "dropout", names)
    with_dp = supports_dp()
    for mech in c.dp_mechanisms if with_dp else ():
        add(c.base_n, c.base_m, c.base_dropout, "dp", [n for n in names if mech in schemes.dp_kinds(n)], mech)
    scaled = scaling_schemes(names)
    if scaled:
        for n in c.scaling_ns:
            add(n, c.scaling_m, c.base_dropout, "scaling", [schemes.BASELINE, *scaled])
    for sp in c.specials:
        which = [name for name in names if name == schemes.BASELINE or name in sp.schemes]
        if len(which) < 2:  # none of its schemes is measured in this run
            continue
        width = sp.width if sp.model else 0
        m = size(model_shapes(sp.model, width)) if sp.model else sp.m
        for mech in sp.dp:
            if mech is None or with_dp:
                add(sp.n, m, sp.dropout, sp.name, which, mech, sp.model, width)
    rank = {None: -1} | {k: i for i, k in enumerate(schemes.DP_KINDS)}
    for p in points.values():
        p.arms = dict(sorted(p.arms.items(), key=lambda a: (rank[a[0][1]], names.index(a[0][0]))))
    return sorted(points.values(), key=lambda p: (p.n * p.m, p.n, p.dropout, p.model))


def summarize(report: Report, wall: float, peak: int | None) -> dict:
    """One round's figures: per party kind seconds and bytes (clients: over the survivors), per phase seconds."""
    names = set(report.party_seconds) | set(report.bytes_sent) | set(report.bytes_received)
    survivors = {f"client/{i}" for i in report.survivors}
    kinds: dict[str, list[str]] = {}
    for name in sorted(names):
        kind = name.split("/")[0]
        if kind != "client" or name in survivors:
            kinds.setdefault(kind, []).append(name)
    parties = {}
    for kind, members in kinds.items():
        secs = [report.party_seconds.get(p, 0.0) for p in members]
        parties[kind] = {
            "count": len(members),
            "seconds_total": sum(secs),
            "seconds_per_party": sum(secs) / len(members),
            "seconds_max_party": max(secs),
            "bytes_sent_per_party": sum(report.bytes_sent.get(p, 0) for p in members) / len(members),
            "bytes_received_per_party": sum(report.bytes_received.get(p, 0) for p in members) / len(members),
        }
    return {
        "wall_s": wall,
        "peak_memory_bytes": peak,
        "aggregator_seconds": sum(p["seconds_total"] for k, p in parties.items() if k != "client"),
        "parties": parties,
        "phases": report.seconds,
    }


def median_tree(samples: list[dict]) -> dict:
    """Key-wise median of nested dicts of numbers (None where no sample has a number)."""
    out = {}
    for key in dict.fromkeys(k for s in samples for k in s):
        vals = [s[key] for s in samples if key in s]
        if isinstance(vals[0], dict):
            out[key] = median_tree(vals)
        else:
            nums = [v for v in vals if v is not None]
            out[key] = statistics.median(nums) if nums else None
    return out


def _div(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def ratios(cell: dict, base: dict) -> dict:
    """A cell's figures over Plaintext's at the same point: per party kind (kinds Plaintext lacks against its
    server), the aggregating side, the wall time and peak memory."""
    parties = {}
    for kind, p in cell["parties"].items():
        b = base["parties"].get(kind) or base["parties"]["server"]
        parties[kind] = {key: _div(p[key], b[key]) for key in
                         ("seconds_per_party", "seconds_max_party", "bytes_sent_per_party", "bytes_received_per_party")}
    return {
        "parties": parties,
        "aggregator_seconds": _div(cell["aggregator_seconds"], base["aggregator_seconds"]),
        "wall_s": _div(cell["wall_s"], base["wall_s"]),
        "peak_memory_bytes": _div(cell["peak_memory_bytes"], base["peak_memory_bytes"]),
    }


def _jsonable(obj: object) -> object:
    return json.loads(json.dumps(obj, default=str))


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


class _Estimates:
    """Median round seconds measured per scheme, to skip cells that would overrun the budget."""

    def __init__(self) -> None:
        self._seen: dict[str, list[tuple[int, int, float]]] = {}

    def add(self, key: str, n: int, m: int, seconds: float) -> None:
        self._seen.setdefault(key, []).append((n, m, seconds))

    def estimate(self, key: str, n: int, m: int) -> float | None:
        """Seconds of a round at (n, m): the scheme's largest measured round at no more clients and parameters
        (any measured round when there is none) scaled linearly in n x m. A large-n, small-m round says little
        about a small-n, large-m one: scaled to it, a SecAgg+ round of 200 clients would skip 8 clients x 1e4."""
        seen = self._seen.get(key, [])
        if not seen:
            return None
        below = [(rn * rm, s) for rn, rm, s in seen if rn <= n and rm <= m]
        size, seconds = max(below or [(rn * rm, s) for rn, rm, s in seen])
        return seconds * n * m / size


def _skip_reason(name: str, point: Point, budget: float, config: Config, est: _Estimates,
                 deadline: float | None) -> str | None:
    if deadline is not None and time.perf_counter() > deadline:
        return f"the run's time budget of {config.run_budget_s:g} s was spent"
    guess = est.estimate(name, point.n, point.m)
    if guess is not None and 2 * guess > budget:
        return (f"estimated {guess:.2f} s per round: a warm-up and one timed round exceed the cell budget "
                f"of {budget:g} s")
    return None


def _timed_rounds(warmup: float, guess: float | None, config: Config, budget: float) -> int:
    """Timed rounds that fit the cell budget after the warm-up (at least one, at most config.repeats)."""
    per_round = min(warmup, guess) if guess is not None else warmup
    return max(1, min(config.repeats, int((budget - warmup) / max(per_round, 1e-9))))


def max_abs_diff(a: object, b: object) -> float:
    """Largest absolute difference of two means (tensors, or state_dicts of them), in float64."""
    if isinstance(a, dict):
        return max(max_abs_diff(a[k], b[k]) for k in a)
    return float((a.double() - b.double()).abs().max())


def _label(arm: Arm, point: Point) -> str:
    name, mech = arm
    return f"{name}{' dp=' + mech if mech else ''} n={point.n} m={point.m}"


def _measure_point(point: Point, config: Config, est: _Estimates, tick: Progress,
                   deadline: float | None = None) -> list[dict]:
    """Warm up and time every arm at one point; one finished cell per arm."""
    updates = point.updates(config.seed)
    dropped = dropped_clients(point.n, point.dropout, config.seed)
    units = config.repeats + 1
    cells: dict[Arm, dict] = {}
    aggs, rounds, samples, last = {}, {}, {}, {}
    for arm, sweeps in point.arms.items():
        name, mech = arm
        label = _label(arm, point)
        cell = cells[arm] = {"scheme": name, "dp": mech, "n": point.n, "m": point.m, "model": point.model or None,
                             "tensors": point.tensors, "dropout": point.dropout, "dropped": len(dropped),
                             "sweeps": sorted(sweeps), "status": "ok"}
        budget = config.cell_budget(sweeps)
        reason = _skip_reason(name, point, budget, config, est, deadline)
        if reason:
            cell["status"], cell["error"] = "skipped", reason
            tick(units, f"{label} skipped")
            continue
        tick(0, f"{label} warm-up")
        try:
            options = schemes.dropout_options(name, point.dropout)
            if mech:
                options["dp"] = make_mechanism(config, mech)
            agg = schemes.make(name, seed=config.seed, **options)
            t0 = time.perf_counter()
            agg.aggregate(updates, dropped=dropped)
            cell["warmup_s"] = time.perf_counter() - t0
        except Exception as e:  # a failing scheme must not end the run: its cell records why
            cell["status"], cell["error"] = "error", _error(e)
            tick(units, f"{label} failed")
            continue
        aggs[arm], samples[arm] = agg, []
        rounds[arm] = _timed_rounds(cell["warmup_s"], est.estimate(name, point.n, point.m), config, budget)
        tick(1 + config.repeats - rounds[arm], label)
    for rep in range(config.repeats):
        for arm, agg in list(aggs.items()):
            if rep >= rounds[arm]:
                continue
            label = _label(arm, point)
            tick(0, f"{label} round {rep + 1}/{rounds[arm]}")
            try:
                with memory.peak_memory() as peak:
                    t0 = time.perf_counter()
                    last[arm] = agg.aggregate(updates, dropped=dropped)
                    wall = time.perf_counter() - t0
                samples[arm].append(summarize(last[arm].report, wall, peak.bytes))
            except Exception as e:
                cells[arm]["status"], cells[arm]["error"] = "error", _error(e)
                del aggs[arm]
                tick(rounds[arm] - rep, f"{label} failed")
                continue
            tick(1, label)
    reference = last.get((schemes.BASELINE, None)) if (schemes.BASELINE, None) in aggs else None
    for arm in aggs:
        cell, res = cells[arm], last[arm]
        cell.update(median_tree(samples[arm]))
        cell["repeats"] = len(samples[arm])
        cell["first_call_s"] = cell["warmup_s"] - cell["wall_s"]
        cell["survivors"] = len(res.report.survivors)
        cell["bytes_per_param"] = cell["parties"]["client"]["bytes_sent_per_party"] / point.m
        cell["params"] = _jsonable(res.report.params)
        cell["epsilon"] = res.report.epsilon
        cell["max_abs_diff_vs_plaintext"] = max_abs_diff(res.mean, reference.mean) if reference is not None else None
        if arm[1] is None:  # DP rounds add noise sampling and accounting; estimates come from plain rounds
            est.add(arm[0], point.n, point.m, cell["wall_s"])
    for (name, mech), cell in cells.items():
        if (name, mech) not in aggs:
            continue
        if (schemes.BASELINE, mech) in aggs:
            cell["ratio"] = ratios(cell, cells[schemes.BASELINE, mech])
        if mech and (name, None) in aggs:
            cell["ratio_no_dp"] = ratios(cell, cells[name, None])
    return list(cells.values())


def add_floors(cells: list[dict], hw: dict[str, float]) -> None:
    """Each measured cell's floor per party kind, and its slowest party's seconds over that floor."""
    for c in cells:
        if c["status"] != "ok":
            continue
        c["floor"] = floors.scheme_floor(c["scheme"], c["n"], c["m"], c["survivors"], c["params"], c["parties"], hw)
        for kind, f in c["floor"].items():
            f["x_floor"] = _div(c["parties"].get(kind, {}).get("seconds_max_party"), f["seconds"])


def first_calls(cells: list[dict]) -> dict[str, float]:
    """Per scheme, the extra seconds of its first round in the run over a warm one (JIT compilation, keys)."""
    out: dict[str, float] = {}
    for c in cells:
        if c["status"] == "ok" and c["scheme"] not in out:
            out[c["scheme"]] = c["first_call_s"]
    return out


def scheme_names(config: Config) -> list[str]:
    """The schemes a run measures, the baseline (Plaintext, the base of every ratio) first."""
    registered = schemes.names()
    unknown = [s for s in config.schemes if s not in registered]
    if unknown:
        raise InputError(f"unknown schemes {', '.join(unknown)}; registered: {', '.join(registered)}")
    return [schemes.BASELINE, *[s for s in (config.schemes or registered) if s != schemes.BASELINE]]


def run(config: Config, progress: Progress | None = None) -> dict:
    """Measure the whole matrix, the hardware floor and the peers; return everything as one JSON-able dict."""
    tick = progress or (lambda _units, _what: None)
    t_start = time.perf_counter()
    names = scheme_names(config)
    points = plan(config, names)
    if config.peers:
        peers.check(config)
    tick(0, "hardware floor")
    hw = floors.measure_hardware(config.quick)
    cells: list[dict] = []
    est = _Estimates()
    deadline = None if config.run_budget_s is None else t_start + config.run_budget_s
    for point in points:
        cells.extend(_measure_point(point, config, est, tick, deadline))
    add_floors(cells, hw)
    peer_lines = peers.run_all(config, cells, tick) if config.peers else []
    return {
        "machine": output.machine(),
        "config": _jsonable(asdict(config)) | {"schemes": names, "dp_supported": supports_dp()},
        "hardware": hw,
        "memory_method": memory.METHOD if memory.available() else "unavailable (no writable /proc/self/clear_refs)",
        "cells": cells,
        "first_call_s": first_calls(cells),
        "peers": peer_lines,
        "wall_s": time.perf_counter() - t_start,
    }


def total_units(config: Config) -> int:
    """Progress units of a run (one per round of each cell, plus the peers)."""
    points = plan(config, scheme_names(config))
    cells = sum(len(p.arms) for p in points)
    planned = set().union(*(p.sweeps for p in points))
    return cells * (config.repeats + 1) + (peers.units(config, planned) if config.peers else 0)
