"""CKKS and packed Paillier against their usual baselines and Plaintext, on the same float32 updates; one run.

CKKS (n clients, m parameters in a few layers): securefl.CKKS against TenSEAL at NVIDIA FLARE's
defaults (poly degree 8192, coeff_mod_bit_sizes [60, 40, 40], scale 2^40, one CKKSVector per layer,
the public context sent along with every upload; the server loads it once, which favours the
baseline; no weighting, which favours it too): bytes per parameter on the wire, and the wall
seconds of encrypt + aggregate + decrypt summed over all parties (key generation and context
loading, the setup, are shown apart); also the process CPU time of the whole round, steadier than
wall time on a shared machine.
Paillier: securefl.Paillier against one phe encryption per value with a key of the same size. The
per-value baseline is timed on --subset values (encrypt, add, decrypt) and extrapolated linearly to
m values and n clients; its bytes count only the 2 * key_bits / 8-byte ciphertext integers.
Both baselines live in securefl.bench.peers.he (shipped with the package; `securefl bench` uses them too).
Usage: python benchmarks/bench_he.py [--ckks-params 1000000] [--ckks-clients 10] [--paillier-params 10000]
[--paillier-clients 10] [--key-bits 2048] [--subset 200] [--repeats 1] [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

import torch

from securefl import keys
from securefl.aggregator import Aggregator
from securefl.bench.peers.he import flare_baseline, max_error, per_value_paillier, reference_mean
from securefl.he.base import Policy
from securefl.he.ckks import CKKS
from securefl.he.paillier import Paillier
from securefl.plaintext import Plaintext
from securefl.report import Report
from securefl.wire import KEYHOLDER

LAYER_SHARES = (0.55, 0.3, 0.1, 0.049, 0.001)  # a few layers, as a model's state_dict has
TARGETS = {"ckks_bytes_per_param": 32.0, "ckks_speedup": 1.5, "paillier_speedup": 50.0, "paillier_byte_ratio": 50.0}


def make_updates(n: int, m: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """n updates of m float32 parameters split into layers, values like gradient steps."""
    sizes = [int(m * s) for s in LAYER_SHARES[:-1]]
    sizes.append(m - sum(sizes))
    g = torch.Generator().manual_seed(seed)
    return [{f"layer{j}": torch.randn(s, generator=g) * 0.05 for j, s in enumerate(sizes)} for _ in range(n)]


def party_figures(report: Report, m: int) -> dict[str, float]:
    """Seconds per party and bytes per client from a securefl report."""
    s = report.seconds
    clients = len(report.survivors)
    work = sum(s.get(phase, {}).get(kind, 0.0) for phase in ("upload", "decrypt") for kind in ("client", "server",
                                                                                                "keyholder"))
    return {
        "client_upload_s": s["upload"]["client"] / clients,
        "client_setup_s": s.get("setup", {}).get("client", 0.0) / clients,
        "server_s": report.kind_seconds("server"),
        "keyholder_s": report.kind_seconds("keyholder"),
        "setup_s": sum(s.get("setup", {}).values()),
        "work_s": work,
        "upload_bytes": report.mean_bytes_sent("client"),
        "client_received_bytes": report.bytes_received.get("client/0", 0),
        "bytes_per_param": report.mean_bytes_sent("client") / m,
    }


def policy_of(agg: Aggregator, template: object, n: int) -> Policy:
    """The public HE parameters every party of a deployment of `agg` with n clients derives from its configuration."""
    return agg.client_class.policy_of(agg.config(template, n))


def plaintext_figures(updates: list, m: int) -> dict[str, float]:
    Plaintext(seed=1).aggregate(updates[:2])  # warm-up (Numba)
    rep = Plaintext(seed=1).aggregate(updates).report
    return {
        "client_upload_s": rep.seconds["upload"]["client"] / len(updates),
        "server_s": rep.kind_seconds("server"),
        "upload_bytes": rep.mean_bytes_sent("client"),
        "bytes_per_param": rep.mean_bytes_sent("client") / m,
    }


def alternate(runs: dict[str, Callable[[], dict]], repeats: int) -> dict[str, dict]:
    """Run each measurement `repeats` times, alternating (so all see the same machine load); medians."""
    rows: dict[str, list[dict]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            rows[name].append(run())
    return {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in rows.items()}


def verdict(name: str, value: float, target: float, higher: bool, unit: str = "") -> dict:
    met = value >= target if higher else value <= target
    print(f"  {name:<58} {value:>10.2f}{unit} (target {'>=' if higher else '<='} {target:g}{unit})  "
          f"{'MET' if met else 'MISSED'}")
    return {"value": value, "target": target, "met": met}


def table(columns: dict[str, dict[str, float]], rows: list[tuple[str, str, str]]) -> None:
    print(f"  {'figure':<34}" + "".join(f"{c:>20}" for c in columns))
    for label, key, fmt in rows:
        cells = "".join(f"{fmt.format(col[key]) if key in col else '-':>20}" for col in columns.values())
        print(f"  {label:<34}{cells}")


def ckks_run(updates: list, m: int) -> dict[str, float]:
    cpu = time.process_time()
    res = CKKS(seed=1).aggregate(updates)
    cpu = time.process_time() - cpu
    ours = party_figures(res.report, m)
    ours["cpu_s"] = cpu
    ours["max_error"] = max_error({k: v.numpy() for k, v in res.mean.items()}, reference_mean(updates))
    ours["bytes_per_param_with_context"] = (ours["upload_bytes"] + ours["client_received_bytes"]) / m
    return ours


def bench_ckks(n: int, m: int, repeats: int) -> dict:
    updates = make_updates(n, m)
    CKKS(seed=1).aggregate(make_updates(2, 5000, seed=9))  # warm-up (Numba, TenSEAL)
    runs = alternate({"ours": lambda: ckks_run(updates, m), "base": lambda: flare_baseline(updates, m)}, repeats)
    ours, base = runs["ours"], runs["base"]
    base["bytes_per_param_with_context"] = base["bytes_per_param"]
    plain = plaintext_figures(updates, m)
    p = policy_of(CKKS(), updates[0], n).params.describe()
    print(f"\nCKKS: n={n} clients, m={m:,} float32 parameters in {len(updates[0])} layers, "
          f"{os.cpu_count()} cores, median of {repeats} alternating runs")
    print(f"  securefl: N={p['poly_modulus_degree']}, primes {p['coeff_mod_bit_sizes']} bits "
          f"(<= {p['max_coeff_bits']} for 128-bit), scale 2^{p['scale_bits']}, "
          f"{p['ciphertexts_per_client']} ciphertexts per client of {p['values_per_ciphertext']} values "
          f"(two per complex slot); FLARE baseline: N=8192, [60, 40, 40], 2^40")
    table({"securefl CKKS": ours, "FLARE TenSEAL": base, "Plaintext": plain}, [
        ("upload bytes per client", "upload_bytes", "{:,.0f}"),
        ("bytes/param (upload)", "bytes_per_param", "{:.2f}"),
        ("bytes/param (+ public context)", "bytes_per_param_with_context", "{:.2f}"),
        ("client s (encrypt, mean)", "client_upload_s", "{:.3f}"),
        ("server s (aggregate)", "server_s", "{:.3f}"),
        ("keyholder s (decrypt)", "keyholder_s", "{:.3f}"),
        ("setup s (keys, contexts)", "setup_s", "{:.3f}"),
        ("encrypt+aggregate+decrypt s", "work_s", "{:.3f}"),
        ("CPU s, whole round, all parties", "cpu_s", "{:.3f}"),
        ("max |error| of the mean", "max_error", "{:.2e}"),
    ])
    speedup = base["work_s"] / ours["work_s"]
    print(f"  CPU-time ratio (baseline / securefl, whole round incl. setup; both single-threaded): "
          f"{base['cpu_s'] / ours['cpu_s']:.2f}x")
    print(f"  throughput: securefl {n * m / ours['work_s']:,.0f} params/s, baseline {n * m / base['work_s']:,.0f}")
    return {
        "clients": n, "params": m, "securefl": ours, "baseline": base, "plaintext": plain, "he_params": p,
        "targets": {
            "bytes_per_param": verdict("CKKS bytes/param on the wire (upload)", ours["bytes_per_param"],
                                       TARGETS["ckks_bytes_per_param"], higher=False),
            "speedup": verdict("CKKS encrypt+aggregate+decrypt speed vs FLARE baseline", speedup,
                               TARGETS["ckks_speedup"], higher=True, unit="x"),
        },
    }


def paillier_run(agg: Paillier, updates: list, m: int) -> dict[str, float]:
    res = agg.aggregate(updates)
    ours = party_figures(res.report, m)
    ours["max_error"] = max_error({k: v.numpy() for k, v in res.mean.items()}, reference_mean(updates))
    return ours


def bench_paillier(n: int, m: int, key_bits: int, subset: int, repeats: int) -> dict:
    updates = make_updates(n, m)
    agg = Paillier(key_bits=key_bits, seed=1)
    agg.aggregate(make_updates(2, 50, seed=9))  # warm-up; generates the key, reused by the timed rounds
    ids = keys.create_identities(n, keyholder=True)
    config = agg.config(updates[0], n, directory=keys.Directory.of(ids.values()))
    keygen = time.perf_counter()
    Paillier.party(config, ids[KEYHOLDER])  # what the deployment's key holder does once
    keygen = time.perf_counter() - keygen
    runs = alternate({"ours": lambda: paillier_run(agg, updates, m),
                      "base": lambda: per_value_paillier(key_bits, n, m, min(subset, m))}, repeats)
    ours, base = runs["ours"], runs["base"]
    plain = plaintext_figures(updates, m)
    p = policy_of(agg, updates[0], n).params.describe()
    print(f"\nPaillier: n={n} clients, m={m:,} parameters, {key_bits}-bit key, median of {repeats} alternating runs; "
          f"{p['slots_per_ciphertext']} "
          f"{p['slot_bits']}-bit slots per ciphertext, {p['ciphertexts_per_client']} ciphertexts per client; "
          f"baseline timed on {min(subset, m)} values and extrapolated")
    table({"securefl Paillier": ours, "phe per value": base, "Plaintext": plain}, [
        ("upload bytes per client", "upload_bytes", "{:,.0f}"),
        ("bytes/param (upload)", "bytes_per_param", "{:.3f}"),
        ("client s offline (r^n precompute)", "client_setup_s", "{:.3f}"),
        ("client s online (encode+encrypt)", "client_upload_s", "{:.4f}"),
        ("server s (aggregate)", "server_s", "{:.4f}"),
        ("keyholder s (decrypt)", "keyholder_s", "{:.3f}"),
        ("encrypt+aggregate+decrypt s", "work_s", "{:.3f}"),
        ("max |error| of the mean", "max_error", "{:.2e}"),
    ])
    print(f"  key generation (first round only, then reused): {keygen:.3f} s; baseline {base['setup_s']:.3f} s")
    total_ours = ours["work_s"] + n * ours["client_setup_s"]
    enc_ours = ours["client_setup_s"] + ours["client_upload_s"]
    print(f"  per-client encryption: securefl {enc_ours:.3f} s (offline {ours['client_setup_s']:.3f} + online "
          f"{ours['client_upload_s']:.4f}); baseline {base['client_upload_s']:.2f} s "
          f"({base['per_value_encrypt_s'] * 1e3:.2f} ms per value)")
    return {
        "clients": n, "params": m, "key_bits": key_bits, "securefl": ours, "baseline": base, "plaintext": plain,
        "packing": p,
        "targets": {
            "speedup": verdict("Paillier speed vs per-value phe (all parties, with offline)",
                               base["work_s"] / total_ours, TARGETS["paillier_speedup"], higher=True, unit="x"),
            "client_encrypt_speedup": verdict("Paillier client encryption (offline+online) vs per-value phe",
                                              base["client_upload_s"] / enc_ours, TARGETS["paillier_speedup"],
                                              higher=True, unit="x"),
            "byte_ratio": verdict("Paillier upload bytes: per-value phe / securefl",
                                  base["upload_bytes"] / ours["upload_bytes"], TARGETS["paillier_byte_ratio"],
                                  higher=True, unit="x"),
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckks-params", type=int, default=1_000_000)
    ap.add_argument("--ckks-clients", type=int, default=10)
    ap.add_argument("--paillier-params", type=int, default=10_000)
    ap.add_argument("--paillier-clients", type=int, default=10)
    ap.add_argument("--key-bits", type=int, default=2048)
    ap.add_argument("--subset", type=int, default=200, help="values the per-value Paillier baseline is timed on")
    ap.add_argument("--repeats", type=int, default=1, help="alternating runs per measurement (medians)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run; figures not meaningful)")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args()
    if args.quick:
        args.ckks_params, args.ckks_clients, args.paillier_params, args.paillier_clients = 20_000, 3, 500, 3
        args.subset = 20
    t0 = time.perf_counter()
    out = {"ckks": bench_ckks(args.ckks_clients, args.ckks_params, args.repeats),
           "paillier": bench_paillier(args.paillier_clients, args.paillier_params, args.key_bits, args.subset,
                                      args.repeats)}
    out["wall_seconds"] = time.perf_counter() - t0
    print(f"\nwall time {out['wall_seconds']:.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
