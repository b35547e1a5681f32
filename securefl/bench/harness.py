"""The benchmark matrix: every registered scheme on the same updates, against Plaintext and the hardware floor.

Points are a star around a base (n, m, dropout): n swept at the base m, m swept at the base n,
the dropout rate swept, DP at the base point with each mechanism (where the Aggregator base takes dp=), and
the scaling sweep to large n (schemes whose class says `scales_in_n`, e.g. SecAgg+). At each point
every scheme gets the same updates, seed and dropped clients; each runs one warm-up round (Numba
JIT, key generation: reported as first_call_s), then `repeats` rounds interleaved across the
schemes so they share the machine's load. Figures are medians over those rounds. A scheme that
raises records the error in its cell and the run goes on. Cell budget: a cell whose estimated
round time (the scheme's largest measured round, scaled linearly in n x m) would not fit a
warm-up and one timed round is skipped, and one that cannot fit all its rounds gets fewer (at
least one; the cell records how many). Run budget (--quick): cells not started in time are skipped.
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
from securefl.bench.workload import dropped_clients, make_updates
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


@dataclass
class Point:
    """One (n, m, dropout, DP mechanism or None) configuration, its sweeps and the schemes measured there."""

    n: int
    m: int
    dropout: float
    dp: str | None
    sweeps: set[str] = field(default_factory=set)
    schemes: list[str] = field(default_factory=list)


def plan(config: Config, names: list[str]) -> list[Point]:
    """The points of the run, smallest n x m first (so skip estimates have data)."""
    points: dict[tuple, Point] = {}

    def add(n: int, m: int, d: float, dp: str | None, sweep: str, which: list[str]) -> None:
        p = points.setdefault((n, m, d, dp), Point(n, m, d, dp))
        p.sweeps.add(sweep)
        p.schemes = [s for s in names if s in p.schemes or s in which]

    c = config
    for n in c.ns:
        add(n, c.base_m, c.base_dropout, None, "n", names)
    for m in c.ms:
        add(c.base_n, m, c.base_dropout, None, "m", names)
    for d in c.dropouts:
        add(c.base_n, c.base_m, d, None, "dropout", names)
    for mech in c.dp_mechanisms if supports_dp() else ():
        add(c.base_n, c.base_m, c.base_dropout, mech, "dp", names)
    scaled = scaling_schemes(names)
    if scaled:
        for n in c.scaling_ns:
            add(n, c.scaling_m, c.base_dropout, None, "scaling", [schemes.BASELINE, *scaled])
    return sorted(points.values(), key=lambda p: (p.n * p.m, p.n, p.dropout, p.dp or ""))


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
        """Seconds of a round at (n, m): the scheme's largest measured round scaled linearly in n x m."""
        seen = [(rn * rm, s) for rn, rm, s in self._seen.get(key, [])]
        if not seen:
            return None
        size, seconds = max(seen)
        return seconds * n * m / size


def _skip_reason(name: str, point: Point, config: Config, est: _Estimates, deadline: float | None) -> str | None:
    if deadline is not None and time.perf_counter() > deadline:
        return f"the run's time budget of {config.run_budget_s:g} s was spent"
    guess, budget = est.estimate(name, point.n, point.m), config.cell_budget(point.sweeps)
    if guess is not None and 2 * guess > budget:
        return (f"estimated {guess:.2f} s per round: a warm-up and one timed round exceed the cell budget "
                f"of {budget:g} s")
    return None


def _timed_rounds(warmup: float, guess: float | None, config: Config, budget: float) -> int:
    """Timed rounds that fit the cell budget after the warm-up (at least one, at most config.repeats)."""
    per_round = min(warmup, guess) if guess is not None else warmup
    return max(1, min(config.repeats, int((budget - warmup) / max(per_round, 1e-9))))


def _measure_point(point: Point, config: Config, est: _Estimates, tick: Progress,
                   deadline: float | None = None) -> list[dict]:
    """Warm up and time every scheme at one point; one finished cell per scheme."""
    updates = make_updates(point.n, point.m, config.seed)
    dropped = dropped_clients(point.n, point.dropout, config.seed)
    units = config.repeats + 1
    cells, aggs, rounds, samples, last = {}, {}, {}, {}, {}
    for name in point.schemes:
        cell = cells[name] = {"scheme": name, "dp": point.dp, "n": point.n, "m": point.m, "dropout": point.dropout,
                              "dropped": len(dropped), "sweeps": sorted(point.sweeps), "status": "ok"}
        reason = _skip_reason(name, point, config, est, deadline)
        if reason:
            cell["status"], cell["error"] = "skipped", reason
            tick(units, f"{name} skipped")
            continue
        tick(0, f"{name} n={point.n} m={point.m} warm-up")
        try:
            options = schemes.dropout_options(name, point.dropout)
            if point.dp:
                options["dp"] = make_mechanism(config, point.dp)
            agg = schemes.make(name, seed=config.seed, **options)
            t0 = time.perf_counter()
            agg.aggregate(updates, dropped=dropped)
            cell["warmup_s"] = time.perf_counter() - t0
        except Exception as e:  # a failing scheme must not end the run: its cell records why
            cell["status"], cell["error"] = "error", _error(e)
            tick(units, f"{name} failed")
            continue
        aggs[name], samples[name] = agg, []
        rounds[name] = _timed_rounds(cell["warmup_s"], est.estimate(name, point.n, point.m), config,
                                     config.cell_budget(point.sweeps))
        tick(1 + config.repeats - rounds[name], f"{name} n={point.n} m={point.m}")
    for rep in range(config.repeats):
        for name, agg in list(aggs.items()):
            if rep >= rounds[name]:
                continue
            tick(0, f"{name} n={point.n} m={point.m} round {rep + 1}/{rounds[name]}")
            try:
                with memory.peak_memory() as peak:
                    t0 = time.perf_counter()
                    last[name] = agg.aggregate(updates, dropped=dropped)
                    wall = time.perf_counter() - t0
                samples[name].append(summarize(last[name].report, wall, peak.bytes))
            except Exception as e:
                cells[name]["status"], cells[name]["error"] = "error", _error(e)
                del aggs[name]
                tick(rounds[name] - rep, f"{name} failed")
                continue
            tick(1, f"{name} n={point.n} m={point.m}")
    base = last.get(schemes.BASELINE) if schemes.BASELINE in aggs else None
    for name in aggs:
        cell, res = cells[name], last[name]
        cell.update(median_tree(samples[name]))
        cell["repeats"] = len(samples[name])
        cell["first_call_s"] = cell["warmup_s"] - cell["wall_s"]
        cell["survivors"] = len(res.report.survivors)
        cell["bytes_per_param"] = cell["parties"]["client"]["bytes_sent_per_party"] / point.m
        cell["params"] = _jsonable(res.report.params)
        cell["epsilon"] = res.report.epsilon
        cell["max_abs_diff_vs_plaintext"] = (
            float((res.mean.double() - base.mean.double()).abs().max()) if base is not None else None)
        if point.dp is None:  # DP rounds add noise sampling and accounting; estimates come from plain rounds
            est.add(name, point.n, point.m, cell["wall_s"])
    if base is not None:
        for name in aggs:
            cells[name]["ratio"] = ratios(cells[name], cells[schemes.BASELINE])
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
    cells = sum(len(p.schemes) for p in plan(config, scheme_names(config)))
    return cells * (config.repeats + 1) + (len(peers.PEERS) if config.peers else 0)
