"""SecAgg / SecAgg+ cost against the hardware floor, and SecAgg+ scaling in n.

Run: python benchmarks/bench_secagg.py [--out bench-out/] [--scaling 100,1000,5000]

1. n = 100, m = 100,000, complete graph, 10% of the clients dropped at masked_input, in both threat
   models: active (default: signed keys and the consistency check) and semi-honest
   (signed_keys=False, the threat model of Flower's SecAgg+). The floor of a party is the bytes of
   AES-CTR keystream it must expand divided by the AES-CTR throughput measured in this run; its key
   agreements (X25519) and signature operations (Ed25519) are timed separately, in the same run, by
   performing the same number of them. Targets: server and one client each <= 3 x floor + key
   agreements; for the active client also shown with its Ed25519 operations added to the bound.
2. SecAgg+ (neighbors="auto": k and t from the parameter finder for 5% dropout and 5% corrupt
   clients), 5% dropped at masked_input, m = 10,000, for each n: median client and server
   seconds and bytes; a log-log plot in --out.

With --baseline DIR (a directory holding another copy of the `securefl` package, e.g. from before a
refactor), only point 1 runs, in fresh processes alternating between DIR's package and this
checkout's, and prints per-stage seconds side by side (median over --repeats processes each).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from securefl import crypto
from securefl.bench.floors import aes_ctr_throughput
from securefl.mpc.secagg import SecAgg


def updates(n: int, m: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.rand(m, generator=g) * 2 - 1 for _ in range(n)]


def time_ops(x25519: int, verify: int, sign: int) -> tuple[float, float]:
    """Seconds of `x25519` key agreements, and of `verify` + `sign` Ed25519 operations, done for real."""
    sk, _ = crypto.x25519_keypair()
    peers = [crypto.x25519_keypair()[1] for _ in range(64)]
    t0 = time.perf_counter()
    for j in range(x25519):
        crypto.agree(sk, peers[j % 64], "bench")
    ka = time.perf_counter() - t0
    isk, ipk = crypto.ed25519_keypair()
    msg = os.urandom(200)
    sig = isk.sign(msg)
    t0 = time.perf_counter()
    for _ in range(verify):
        crypto.verify(ipk, sig, msg, "bench")
    for _ in range(sign):
        isk.sign(msg)
    return ka, time.perf_counter() - t0


def floor_run(n: int, m: int, drop_frac: float, throughput: float, signed: bool, repeats: int) -> dict:
    """Best of `repeats` rounds (server seconds, median client seconds) with the floor and the public-key op times."""
    dropped = {i: "masked_input" for i in range(0, n, round(1 / drop_frac))}
    agg, ups = SecAgg(signed_keys=signed, seed=0), updates(n, m)
    reps = [agg.aggregate(ups, dropped=dropped).report for _ in range(repeats)]
    rep = min(reps, key=lambda r: r.party_seconds["server"])
    t, word = rep.params["threshold"], rep.params["ring_bits"] // 8
    length = m + 1  # floats and the weight slot
    survivors, gone = len(rep.survivors), len(dropped)
    # PRG output each party must expand: the server removes every survivor's self mask and, for each
    # dropped client, its pairwise mask with every survivor; a client expands its self mask and one
    # pairwise mask per peer that shared keys with it (everyone else, in the complete graph).
    server_prg = (survivors + gone * survivors) * length * word
    client_prg = (1 + (n - 1)) * length * word
    server_ka, _ = time_ops(gone * (1 + survivors), 0, 0)
    # a client verifies n - 1 key signatures and t survivor-list signatures, and signs twice (active only)
    client_ka, client_sig = time_ops(2 * (n - 1), ((n - 1) + t) if signed else 0, 2 if signed else 0)
    finishers = [f"client/{i}" for i in rep.survivors]
    return {
        "signed_keys": signed, "n": n, "m": m, "threshold": t, "dropped": gone, "repeats": repeats,
        "server_s": rep.party_seconds["server"],
        "client_s": min(statistics.median(r.party_seconds[c] for c in finishers) for r in reps),
        "client_max_s": max(rep.party_seconds[c] for c in finishers),
        "server_prg_bytes": server_prg, "client_prg_bytes": client_prg,
        "server_floor_s": server_prg / throughput, "client_floor_s": client_prg / throughput,
        "server_x25519_s": server_ka, "client_x25519_s": client_ka, "client_ed25519_s": client_sig,
        "server_bytes": rep.bytes_sent["server"] + rep.bytes_received["server"],
        "client_bytes": statistics.median(rep.bytes_sent[c] + rep.bytes_received[c] for c in finishers),
        "seconds_by_phase": rep.seconds,
    }


def one_round(n: int, m: int, signed: bool, drop_frac: float = 0.1) -> dict:
    """Per-stage seconds of one warm round (summed per party kind), the server's and the median finisher's."""
    dropped = {i: "masked_input" for i in range(0, n, round(1 / drop_frac))}
    SecAgg(signed_keys=signed, seed=0).aggregate(updates(4, 10), dropped={0: "masked_input"})  # Numba, first calls
    rep = SecAgg(signed_keys=signed, seed=0).aggregate(updates(n, m), dropped=dropped).report
    return {"phases": rep.seconds, "server": rep.party_seconds["server"],
            "client": statistics.median(rep.party_seconds[f"client/{i}"] for i in rep.survivors)}


def compare(baseline: Path, n: int, m: int, repeats: int) -> None:
    """Point 1 in fresh processes, alternating between the package in `baseline` and this checkout's."""
    here = Path(__file__).resolve().parents[1]
    runs: dict[tuple[str, bool], list[dict]] = {}
    for rep in range(repeats):
        for signed in (True, False):
            pair = [("before", baseline), ("after", here)]
            for label, path in pair if rep % 2 == 0 else pair[::-1]:  # neither always runs first
                env = {**os.environ, "PYTHONPATH": str(path)}
                out = subprocess.run([sys.executable, __file__, "--worker", f"{n},{m},{int(signed)}"], env=env,
                                     check=True, capture_output=True, text=True, cwd=path).stdout
                runs.setdefault((label, signed), []).append(json.loads(out.splitlines()[-1]))
    def row(label: str, before: list[float], after: list[float]) -> str:
        (bm, am), (b0, a0) = (statistics.median(x) for x in (before, after)), (min(before), min(after))
        return f"{label:26s} {bm:9.4f} {am:9.4f} {am / bm:6.2f}   {b0:9.4f} {a0:9.4f} {a0 / b0:6.2f}"

    for signed in (True, False):
        print(f"\n== {'active' if signed else 'semi-honest'}: n={n}, m={m}, 10% dropped at masked_input; "
              f"{repeats} processes each, alternating, order swapped every repeat ==")
        before, after = runs["before", signed], runs["after", signed]
        print(f"{'stage, kind (s)':26s} {'before':>9s} {'after':>9s} {'ratio':>6s}   {'before':>9s} {'after':>9s} "
              f"{'ratio':>6s}\n{'':26s} {'(median)':>26s}   {'(min: least disturbed)':>26s}")
        for phase in after[0]["phases"]:
            for kind in after[0]["phases"][phase]:
                print(row(f"{phase} {kind}", [r["phases"].get(phase, {}).get(kind, float("nan")) for r in before],
                          [r["phases"][phase][kind] for r in after]))
        for who in ("server", "client"):
            print(row(f"total {who}", [r[who] for r in before], [r[who] for r in after]))


def scaling_run(n: int, m: int) -> dict:
    rng = np.random.default_rng(1)
    dropped = {int(i): "masked_input" for i in rng.choice(n, n // 20, replace=False)}
    t0 = time.perf_counter()
    rep = SecAgg(neighbors="auto", dropout_rate=0.05, corrupt_fraction=0.05, seed=0).aggregate(
        updates(n, m), dropped=dropped
    ).report
    wall = time.perf_counter() - t0
    fin = [f"client/{i}" for i in rep.survivors]
    return {
        "n": n, "m": m, "k": rep.params["neighbors"], "t": rep.params["threshold"], "wall_s": wall,
        "client_s": statistics.median(rep.party_seconds[c] for c in fin),
        "server_s": rep.party_seconds["server"],
        "client_bytes": statistics.median(rep.bytes_sent[c] + rep.bytes_received[c] for c in fin),
        "server_bytes": rep.bytes_sent["server"] + rep.bytes_received["server"],
    }


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = [r["n"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.loglog(ns, [r["client_s"] for r in rows], "o-", label="client (median)")
    a.loglog(ns, [r["server_s"] for r in rows], "s-", label="server")
    a.set(xlabel="clients n", ylabel="seconds", title=f"SecAgg+ time, m = {rows[0]['m']}")
    b.loglog(ns, [r["client_bytes"] for r in rows], "o-", label="client (median)")
    b.loglog(ns, [r["server_bytes"] for r in rows], "s-", label="server")
    b.set(xlabel="clients n", ylabel="bytes sent + received", title="SecAgg+ traffic")
    for ax in (a, b):
        ax.legend()
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def verdict(got: float, bound: float) -> str:
    return f"{'MET' if got <= bound else 'MISSED'} ({got:.3f} s vs bound {bound:.3f} s)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench-out/")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--m", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=2, help="rounds per threat model at the floor point (best is kept)")
    ap.add_argument("--scaling", default="100,1000,5000", help="comma-separated n for SecAgg+ scaling ('' to skip)")
    ap.add_argument("--scaling-m", type=int, default=10_000)
    ap.add_argument("--baseline", type=Path, help="compare point 1, stage by stage, with the securefl package in DIR")
    ap.add_argument("--worker", help=argparse.SUPPRESS)  # "n,m,signed": one round, its timings as JSON (--baseline)
    args = ap.parse_args()
    if args.worker:
        n, m, signed = (int(x) for x in args.worker.split(","))
        print(json.dumps(one_round(n, m, bool(signed))))
        return
    if args.baseline:
        compare(args.baseline, args.n, args.m, args.repeats)
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    SecAgg(seed=0).aggregate(updates(4, 10), dropped={0: "masked_input"})  # load the Numba kernels
    thr = aes_ctr_throughput()
    print(f"AES-128-CTR throughput: {thr / 1e9:.2f} GB/s")

    modes = {"active": floor_run(args.n, args.m, 0.1, thr, True, args.repeats),
             "semi-honest": floor_run(args.n, args.m, 0.1, thr, False, args.repeats)}
    f = modes["active"]
    print(f"\n== SecAgg, complete graph: n={f['n']}, m={f['m']}, t={f['threshold']}, "
          f"{f['dropped']} dropped at masked_input; best of {args.repeats} rounds per threat model ==")
    print("active = default (signed keys + consistency check); semi-honest = signed_keys=False (Flower's model)")
    for mode, g in modes.items():
        print(f"phase seconds, {mode} (summed over parties of a kind):")
        for phase, kinds in g["seconds_by_phase"].items():
            print(f"  {phase:18s} " + "  ".join(f"{k} {v:.3f}" for k, v in kinds.items()))
    for mode, g in modes.items():
        print(f"\n-- {mode} --")
        for who in ("server", "client"):
            label = "server" if who == "server" else "client (median of finishers)"
            ka, sig = g[f"{who}_x25519_s"], g.get(f"{who}_ed25519_s", 0.0)
            print(f"{label}: {g[f'{who}_s']:.3f} s; PRG {g[f'{who}_prg_bytes'] / 1e6:.1f} MB -> floor "
                  f"{g[f'{who}_floor_s']:.3f} s; its X25519 agreements {ka:.3f} s; its Ed25519 ops {sig:.3f} s; "
                  f"traffic {g[f'{who}_bytes'] / 1e6:.2f} MB")
            bound = 3 * g[f"{who}_floor_s"] + ka
            print(f"  target {who} <= 3 x floor + key agreements: {verdict(g[f'{who}_s'], bound)}")
            if who == "client" and g["signed_keys"]:
                print(f"  the same bound + its Ed25519 signature checks and signing ({sig:.3f} s): "
                      f"{verdict(g[f'{who}_s'], bound + sig)}")
        print(f"slowest client: {g['client_max_s']:.3f} s")
    a, h = modes["active"], modes["semi-honest"]
    print(f"\nsemi-honest vs active: client {h['client_s']:.3f} s vs {a['client_s']:.3f} s, "
          f"server {h['server_s']:.3f} s vs {a['server_s']:.3f} s")

    rows = []
    ns = [int(x) for x in args.scaling.split(",") if x]
    if ns:
        print(f"\n== SecAgg+ scaling (neighbors=auto for 5% dropout / 5% corrupt), m={args.scaling_m}, "
              "5% dropped at masked_input ==")
        print(f"{'n':>6} {'k':>4} {'t':>4} {'client s':>9} {'server s':>9} {'client MB':>10} {'server MB':>10} "
              f"{'wall s':>7}")
        for n in ns:
            r = scaling_run(n, args.scaling_m)
            rows.append(r)
            print(f"{r['n']:>6} {r['k']:>4} {r['t']:>4} {r['client_s']:>9.4f} {r['server_s']:>9.3f} "
                  f"{r['client_bytes'] / 1e6:>10.3f} {r['server_bytes'] / 1e6:>10.2f} {r['wall_s']:>7.1f}", flush=True)
        if len(rows) > 1:
            growth = rows[-1]["client_s"] / rows[0]["client_s"]
            print(f"client seconds grow x{growth:.2f} for n x{rows[-1]['n'] / rows[0]['n']:.0f} "
                  f"(k: {rows[0]['k']} -> {rows[-1]['k']}, log n: x{np.log(rows[-1]['n']) / np.log(rows[0]['n']):.2f})")
        plot(rows, out / "secagg_scaling.png")
        print(f"plot: {out / 'secagg_scaling.png'}")
    (out / "bench_secagg.json").write_text(json.dumps({"aes_ctr_bytes_per_s": thr, "floor": modes, "scaling": rows},
                                                      indent=2, default=float))


if __name__ == "__main__":
    main()
