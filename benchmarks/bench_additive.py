"""AdditiveSharing against Plaintext on the same float32 updates: upload bytes, aggregator and client seconds.

Both run through the public .aggregate() API with the same seed (so their results must be
identical); figures are medians over --repeats rounds each, alternating the two schemes, after
one warm-up round each (Numba JIT).
Usage: python benchmarks/bench_additive.py [--clients 100] [--params 1000000] [--aggregators 3]
[--repeats 5] [--json PATH]
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

TARGETS = {"upload_bytes": 1.05, "slowest_aggregator": 3.0, "all_aggregators": 6.0, "client": 3.0}


def figures(report: Report, aggregators: tuple[str, ...]) -> dict[str, float]:
    """Per-round costs read from a Report: mean client upload bytes and seconds, aggregator seconds."""
    secs = [report.party_seconds.get(a, 0.0) for a in aggregators]
    clients = len(report.survivors)
    return {
        "upload_bytes": report.mean_bytes_sent("client"),
        "slowest_aggregator": max(secs),
        "all_aggregators": sum(secs),
        "client": report.kind_seconds("client") / clients,
    }


def run(schemes: dict[str, tuple[Aggregator, tuple[str, ...]]], updates: list[torch.Tensor], repeats: int) -> dict:
    """One warm-up round each, then `repeats` rounds alternating the schemes (so both see the same
    machine load); per scheme the median of each figure and the last result."""
    for agg, _ in schemes.values():
        agg.aggregate(updates)
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in schemes}
    last = {}
    for _ in range(repeats):
        for name, (agg, aggregators) in schemes.items():
            last[name] = agg.aggregate(updates)
            rows[name].append(figures(last[name].report, aggregators))
    return {name: ({key: statistics.median(r[key] for r in rs) for key in rs[0]}, last[name])
            for name, rs in rows.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--params", type=int, default=1_000_000)
    ap.add_argument("--aggregators", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args()
    n, m, k = args.clients, args.params, args.aggregators

    g = torch.Generator().manual_seed(0)
    updates = [torch.randn(m, generator=g) * 0.05 for _ in range(n)]
    helpers = tuple(f"helper/{j}" for j in range(1, k))
    t0 = time.perf_counter()
    schemes = {"plaintext": (Plaintext(seed=7), ("server",)),
               "additive": (AdditiveSharing(num_aggregators=k, seed=7), ("leader", *helpers))}
    medians = run(schemes, updates, args.repeats)
    (base, base_res), (add, add_res) = medians["plaintext"], medians["additive"]
    wall = time.perf_counter() - t0
    identical = torch.equal(base_res.mean, add_res.mean)
    aes = aes_ctr_throughput()
    floor = n * (k - 1) * add_res.report.params["ring_bits"] // 8 * (m + 1) / aes

    print(f"AdditiveSharing(K={k}) vs Plaintext: n={n} clients, m={m:,} float32 parameters, "
          f"{add_res.report.params['ring_bits']}-bit ring, median of {args.repeats} alternating rounds after a warm-up")
    print(f"results identical to Plaintext (same seed): {identical}")
    print(f"AES-128-CTR on this machine: {aes / 1e9:.2f} GB/s; keystream the helpers must expand takes "
          f">= {floor:.3f} s in all")
    rows = [
        ("client upload bytes", "upload_bytes", "{:,.0f}"),
        ("slowest aggregator s", "slowest_aggregator", "{:.4f}"),
        ("all aggregators s", "all_aggregators", "{:.4f}"),
        ("client s (mean)", "client", "{:.4f}"),
    ]
    print(f"{'figure':<22}{'additive':>14}{'plaintext':>14}{'ratio':>8}{'target':>9}  verdict")
    out = {"clients": n, "params": m, "aggregators": k, "repeats": args.repeats, "identical": identical,
           "aes_ctr_bytes_per_s": aes, "wall_seconds": wall, "figures": {}}
    for label, key, fmt in rows:
        ratio = add[key] / base[key]
        verdict = "MET" if ratio <= TARGETS[key] else "MISSED"
        print(f"{label:<22}{fmt.format(add[key]):>14}{fmt.format(base[key]):>14}{ratio:>8.3f}"
              f"{'<= ' + str(TARGETS[key]):>9}  {verdict}")
        out["figures"][key] = {"additive": add[key], "plaintext": base[key], "ratio": ratio,
                               "target": TARGETS[key], "met": ratio <= TARGETS[key]}
    print(f"client upload vs the raw float32 update ({4 * m:,} bytes): {add['upload_bytes'] / (4 * m):.5f}")
    sec = add_res.report.party_seconds
    print("last round, seconds per aggregator: " + ", ".join(f"{a} {sec[a]:.4f}" for a in ("leader", *helpers))
          + f"; plaintext server {base_res.report.party_seconds['server']:.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
