"""AdditiveSharing's cost before and after the security fixes, and against Plaintext, in one run.

Three aggregators run the same float32 updates through the public .aggregate() API, alternating
round by round so all see the same machine load: Plaintext, AdditiveSharing as it was before the
security work (the module at git revision --before, 8c4e4fd: unauthenticated per-round helper keys,
no minimum batch, no cross-check; loaded from git history) and the current AdditiveSharing (party
protocol, signed helper keys, MAC'd envelopes, endorsed accepted sets, replay guards). Each is
warmed up once (Numba JIT, the long-lived parties' pairwise keys), then figures are medians over
--repeats rounds. The issue-10 target: aggregators cost at most +10% over the pre-security code at
n=100, m=100,000.
Usage: python benchmarks/bench_additive.py [--clients 100] [--params 100000] [--aggregators 3]
[--repeats 9] [--before 8c4e4fd] [--json PATH]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from securefl.aggregator import Aggregator
from securefl.bench.floors import aes_ctr_throughput
from securefl.mpc.additive import AdditiveSharing
from securefl.plaintext import Plaintext
from securefl.report import Report

ROOT = Path(__file__).resolve().parent.parent
VS_BEFORE = {"slowest_aggregator": 1.10, "all_aggregators": 1.10}  # issue 10: at most +10%
ROWS = [("client upload bytes", "upload_bytes", "{:,.0f}"), ("slowest aggregator s", "slowest_aggregator", "{:.4f}"),
        ("all aggregators s", "all_aggregators", "{:.4f}"), ("client s (mean)", "client", "{:.4f}")]
VS_PLAINTEXT = {"upload_bytes": 1.05, "slowest_aggregator": 3.0, "all_aggregators": 6.0, "client": 3.0}


def load_before(rev: str) -> type[Aggregator]:
    """AdditiveSharing from securefl/mpc/additive.py at git revision `rev`, imported under its own module name."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:securefl/mpc/additive.py"], check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / f"additive_{rev}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"additive_{rev}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.AdditiveSharing


def figures(report: Report, aggregators: tuple[str, ...]) -> dict[str, float]:
    """Per-round costs read from a Report: mean client upload bytes and seconds, aggregator seconds."""
    secs = [report.party_seconds.get(a, 0.0) for a in aggregators]
    return {
        "upload_bytes": report.mean_bytes_sent("client"),
        "slowest_aggregator": max(secs),
        "all_aggregators": sum(secs),
        "client": report.kind_seconds("client") / len(report.survivors),
    }


def run(schemes: dict[str, tuple[Aggregator, tuple[str, ...]]], updates: list[torch.Tensor], repeats: int) -> dict:
    """One warm-up round each, then `repeats` rounds alternating the schemes; per scheme the median of each
    figure, the median seconds per (phase, party kind) and the last result."""
    for agg, _ in schemes.values():
        agg.aggregate(updates)
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in schemes}
    phases: dict[str, list[dict[str, float]]] = {name: [] for name in schemes}
    last = {}
    for _ in range(repeats):
        for name, (agg, aggregators) in schemes.items():
            last[name] = agg.aggregate(updates)
            rows[name].append(figures(last[name].report, aggregators))
            phases[name].append({f"{p}:{k}": s for p, kinds in last[name].report.seconds.items()
                                 for k, s in kinds.items() if k != "client"})
    med = {name: {key: statistics.median(r.get(key, 0.0) for r in rs) for key in rs[-1]} for name, rs in rows.items()}
    by_phase = {name: {key: statistics.median(r.get(key, 0.0) for r in rs) for key in rs[-1]}
                for name, rs in phases.items()}
    return {name: (med[name], by_phase[name], last[name]) for name in schemes}


def table(title: str, a: dict, b: dict, names: tuple[str, str], targets: dict[str, float]) -> dict:
    print(title)
    print(f"{'figure':<22}{names[0]:>14}{names[1]:>14}{'ratio':>8}{'target':>9}  verdict")
    out = {}
    for label, key, fmt in ROWS:
        ratio, target = a[key] / b[key], targets.get(key)
        verdict = "" if target is None else ("MET" if ratio <= target else "MISSED")
        print(f"{label:<22}{fmt.format(a[key]):>14}{fmt.format(b[key]):>14}{ratio:>8.3f}"
              f"{'' if target is None else '<= ' + str(target):>9}  {verdict}")
        out[key] = {names[0]: a[key], names[1]: b[key], "ratio": ratio, "target": target,
                    "met": None if target is None else ratio <= target}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--params", type=int, default=100_000)
    ap.add_argument("--aggregators", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--before", default="8c4e4fd", help="git revision of the pre-security AdditiveSharing")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args()
    n, m, k = args.clients, args.params, args.aggregators

    g = torch.Generator().manual_seed(0)
    updates = [torch.randn(m, generator=g) * 0.05 for _ in range(n)]
    aggregators = ("leader", *(f"helper/{j}" for j in range(1, k)))
    t0 = time.perf_counter()
    schemes = {"plaintext": (Plaintext(seed=7), ("server",)),
               "before": (load_before(args.before)(num_aggregators=k, seed=7), aggregators),
               "after": (AdditiveSharing(num_aggregators=k, seed=7), aggregators)}
    res = run(schemes, updates, args.repeats)
    wall = time.perf_counter() - t0
    (base, _, _), (old, old_phase, _), (new, new_phase, new_res) = res["plaintext"], res["before"], res["after"]
    bits = new_res.report.params["ring_bits"]
    aes = aes_ctr_throughput()
    floor = n * (k - 1) * bits // 8 * (m + 1) / aes
    err = float((new_res.mean.double() - torch.stack(updates).double().mean(0)).abs().max())

    print(f"AdditiveSharing(K={k}): n={n} clients, m={m:,} float32 parameters, {bits}-bit ring, median of "
          f"{args.repeats} alternating rounds after a warm-up; before = {args.before}")
    print(f"max |mean - float64 mean| after: {err:.2e}; AES-128-CTR here: {aes / 1e9:.2f} GB/s, the helpers' "
          f"keystream takes >= {floor:.4f} s in all")
    out = {"clients": n, "params": m, "aggregators": k, "repeats": args.repeats, "before": args.before,
           "aes_ctr_bytes_per_s": aes, "wall_seconds": wall,
           "after_vs_before": table("\nafter (secure) vs before (8c4e4fd):", new, old, ("after", "before"), VS_BEFORE),
           "after_vs_plaintext": table("\nafter vs Plaintext:", new, base, ("after", "plaintext"), VS_PLAINTEXT),
           "phases": {"before": old_phase, "after": new_phase}}
    for name, ph in (("before", old_phase), ("after", new_phase)):
        print(f"\n{name}: median seconds per phase:party kind (aggregators): "
              + ", ".join(f"{key} {v:.4f}" for key, v in sorted(ph.items())))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
