"""AdditiveSharing against Plaintext on the same updates, in one run, with the helpers' keystream floor.

Both run the same float32 updates through the public .aggregate() API, alternating round by round so
both see the same machine load; each is warmed up once (Numba JIT, the long-lived parties' pairwise keys),
then figures are medians over --repeats rounds. The cost of the security fixes (this checkout against the
code before them, each in its own process) is benchmarks/bench_security_cost.py.
Usage: python benchmarks/bench_additive.py [--clients 100] [--params 100000] [--aggregators 3]
[--repeats 9] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from securefl.aggregator import Aggregator
from securefl.bench.floors import aes_ctr_throughput
from securefl.mpc.additive import AdditiveSharing
from securefl.plaintext import Plaintext
from securefl.report import Report

ROWS = [("client upload bytes", "upload_bytes", "{:,.0f}"), ("slowest aggregator s", "slowest_aggregator", "{:.4f}"),
        ("all aggregators s", "all_aggregators", "{:.4f}"), ("client s (mean)", "client", "{:.4f}")]


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


def table(a: dict, b: dict) -> dict:
    """AdditiveSharing's figures beside Plaintext's and their ratio, printed and returned."""
    print(f"{'figure':<22}{'additive':>14}{'plaintext':>14}{'ratio':>8}")
    out = {}
    for label, key, fmt in ROWS:
        ratio = a[key] / b[key]
        print(f"{label:<22}{fmt.format(a[key]):>14}{fmt.format(b[key]):>14}{ratio:>8.3f}")
        out[key] = {"additive": a[key], "plaintext": b[key], "ratio": ratio}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--params", type=int, default=100_000)
    ap.add_argument("--aggregators", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args()
    n, m, k = args.clients, args.params, args.aggregators

    g = torch.Generator().manual_seed(0)
    updates = [torch.randn(m, generator=g) * 0.05 for _ in range(n)]
    aggregators = ("leader", *(f"helper/{j}" for j in range(1, k)))
    t0 = time.perf_counter()
    schemes = {"plaintext": (Plaintext(seed=7), ("server",)),
               "additive": (AdditiveSharing(num_aggregators=k, seed=7), aggregators)}
    res = run(schemes, updates, args.repeats)
    wall = time.perf_counter() - t0
    (base, _, _), (new, new_phase, new_res) = res["plaintext"], res["additive"]
    bits = new_res.report.params["ring_bits"]
    aes = aes_ctr_throughput()
    floor = n * (k - 1) * bits // 8 * (m + 1) / aes
    err = float((new_res.mean.double() - torch.stack(updates).double().mean(0)).abs().max())

    print(f"AdditiveSharing(K={k}): n={n} clients, m={m:,} float32 parameters, {bits}-bit ring, median of "
          f"{args.repeats} alternating rounds after a warm-up")
    print(f"max |mean - float64 mean|: {err:.2e}; AES-128-CTR here: {aes / 1e9:.2f} GB/s, the helpers' "
          f"keystream takes >= {floor:.4f} s in all\n")
    out = {"clients": n, "params": m, "aggregators": k, "repeats": args.repeats, "aes_ctr_bytes_per_s": aes,
           "wall_seconds": wall, "max_abs_error": err, "vs_plaintext": table(new, base), "phases": new_phase}
    print("\nmedian seconds per phase:party kind (aggregators): "
          + ", ".join(f"{key} {v:.4f}" for key, v in sorted(new_phase.items())))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
