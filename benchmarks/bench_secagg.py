"""SecAgg / SecAgg+ cost against the hardware floor, and SecAgg+ scaling in n.

Run: python benchmarks/bench_secagg.py [--out bench-out/] [--scaling 100,300,1000,3000,10000] [--scaling-only]

1. n = 100, m = 100,000, complete graph, 10% of the clients dropped at masked_input, in both threat
   models: active (default: signed keys and the consistency check) and semi-honest
   (signed_keys=False, the threat model of Flower's SecAgg+). The floor of a party is the bytes of
   AES-CTR keystream it must expand divided by the AES-CTR throughput measured in this run; its key
   agreements (X25519) and signature operations (Ed25519) are timed separately, in the same run, by
   performing the same number of them. Targets: server and one client each <= 3 x floor + key
   agreements; for the active client also shown with its Ed25519 operations added to the bound.
2. SecAgg+ (the registry's "secagg+": neighbors="auto", k and t from the parameter finder for 5%
   dropout and 5% corrupt clients), 5% dropped at masked_input, m = 10,000, n = 100 ... 10,000, each n
   in a fresh process: setup and one round timed together (wall and CPU), per party CPU and wall
   seconds (median client, server), bytes, the client's public-key floor, the process's peak memory;
   the growth of each against n (log-log slope, a + b ln n fit); a log-log plot with log n and n
   reference lines (--plot, default OUT/secagg_scaling.png). --scaling-only runs just this.

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
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from securefl import crypto, schemes
from securefl.bench import memory
from securefl.bench.floors import aes_ctr_throughput
from securefl.mpc.secagg import SecAgg
from securefl.simulation import Simulation


def updates(n: int, m: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.rand(m, generator=g) * 2 - 1 for _ in range(n)]


def time_ops(x25519: int, verify: int, sign: int, clock: Callable[[], float] = time.perf_counter
             ) -> tuple[float, float]:
    """Seconds of `x25519` key agreements, and of `verify` + `sign` Ed25519 operations, done for real (`clock`:
    wall by default, time.thread_time for CPU seconds)."""
    sk, _ = crypto.x25519_keypair()
    peers = [crypto.x25519_keypair()[1] for _ in range(64)]
    t0 = clock()
    for j in range(x25519):
        crypto.agree(sk, peers[j % 64], "bench")
    ka = clock() - t0
    isk, ipk = crypto.ed25519_keypair()
    msg = os.urandom(200)
    sig = isk.sign(msg)
    t0 = clock()
    for _ in range(verify):
        crypto.verify(ipk, sig, msg, "bench")
    for _ in range(sign):
        isk.sign(msg)
    return ka, clock() - t0


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


def _cpu_simulation(made: list[Simulation]) -> type[Simulation]:
    """A Simulation that also counts each party's CPU seconds (thread time: on a machine shared with other work,
    wall seconds measure the load as much as the code) and records itself in `made`."""

    class CpuSimulation(Simulation):
        def __init__(self, *args: object, **kwargs: object):
            super().__init__(*args, **kwargs)
            self.party_cpu: dict[str, float] = defaultdict(float)
            made.append(self)

        @contextmanager
        def clock(self, phase: str, party: str) -> Iterator[None]:
            c0 = time.thread_time()
            try:
                with super().clock(phase, party):
                    yield
            finally:
                self.party_cpu[party] += time.thread_time() - c0

    return CpuSimulation


def _vm_hwm() -> int:
    """This process's peak resident memory so far (VmHWM), in bytes."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def scaling_run(n: int, m: int) -> dict:
    """One SecAgg+ round (the registry's "secagg+": k and t for 5% dropout and 5% corrupt clients) of n clients,
    5% of them dropped at masked_input, in this process: setup (identities, parties) and round, timed together."""
    schemes.make("secagg+", seed=0).aggregate(updates(20, 10), dropped={0: "masked_input"})  # Numba, scipy
    rng = np.random.default_rng(1)
    dropped = {int(i): "masked_input" for i in rng.choice(n, n // 20, replace=False)}
    ups = updates(n, m)
    made: list[Simulation] = []
    agg = schemes.make("secagg+", seed=0)
    agg.simulation_class = _cpu_simulation(made)
    with memory.peak_memory() as added:
        t0, c0 = time.perf_counter(), time.process_time()
        rep = agg.aggregate(ups, dropped=dropped).report
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    sim = made[-1]
    fin = [f"client/{i}" for i in rep.survivors]
    k, t = rep.params["neighbors"], rep.params["threshold"]
    # a client's public-key work: 2k agreements, k + t signature checks, 2 signatures
    ka, sig = time_ops(2 * k, k + t, 2, time.thread_time)
    return {
        "n": n, "m": m, "k": k, "t": t, "dropped": len(dropped), "ring_bits": rep.params["ring_bits"],
        "wall_s": wall, "cpu_s": cpu, "round_s": sum(rep.party_seconds.values()),
        "round_cpu_s": sum(sim.party_cpu.values()),
        "client_s": statistics.median(rep.party_seconds[c] for c in fin),
        "client_cpu_s": statistics.median(sim.party_cpu[c] for c in fin),
        "client_max_cpu_s": max(sim.party_cpu[c] for c in fin),
        "client_pk_floor_s": ka + sig,
        "server_s": rep.party_seconds["server"], "server_cpu_s": sim.party_cpu["server"],
        "client_bytes": statistics.median(rep.bytes_sent[c] + rep.bytes_received[c] for c in fin),
        "server_bytes": rep.bytes_sent["server"] + rep.bytes_received["server"],
        "peak_rss_bytes": _vm_hwm(), "round_added_bytes": added.bytes,
    }


def scaling_sweep(ns: list[int], m: int) -> list[dict]:
    """scaling_run for each n in a fresh process (so each point's peak memory is its own), rows printed as they come."""
    print(f"{'n':>6} {'k':>3} {'t':>3} {'ring':>4} {'client cpu s':>12} {'(pk floor)':>10} {'client wall s':>13} "
          f"{'server cpu s':>12} {'client KB':>9} {'server MB':>9} {'wall s':>7} {'cpu s':>7} {'peak MB':>8}")
    rows = []
    for n in ns:
        out = subprocess.run([sys.executable, __file__, "--scaling-worker", f"{n},{m}"], check=True,
                             capture_output=True, text=True).stdout
        r = json.loads(out.splitlines()[-1])
        rows.append(r)
        print(f"{r['n']:>6} {r['k']:>3} {r['t']:>3} {r['ring_bits']:>4} {r['client_cpu_s']:>12.4f} "
              f"{r['client_pk_floor_s']:>10.4f} {r['client_s']:>13.4f} {r['server_cpu_s']:>12.3f} "
              f"{r['client_bytes'] / 1e3:>9.1f} {r['server_bytes'] / 1e6:>9.1f} {r['wall_s']:>7.1f} {r['cpu_s']:>7.1f} "
              f"{r['peak_rss_bytes'] / 2**20:>8.0f}", flush=True)
    return rows


def growth(ns: list[int], ys: list[float]) -> dict:
    """How ys grows with n: the log-log slope (n^slope), the least-squares fit a + b ln n with its R^2, and the
    growth from the first to the last n beside that of log n and of n."""
    x, y = np.log(np.asarray(ns, float)), np.asarray(ys, float)
    slope = float(np.polyfit(x, np.log(y), 1)[0])
    b, a = np.polyfit(x, y, 1)
    r2 = 1 - float(((y - (a + b * x)) ** 2).sum() / max(((y - y.mean()) ** 2).sum(), 1e-300))
    return {"loglog_slope": slope, "a": float(a), "b_per_ln_n": float(b), "r2_log_fit": r2,
            "growth": float(y[-1] / y[0]), "log_n_growth": float(x[-1] / x[0]), "n_growth": ns[-1] / ns[0]}


def describe(name: str, g: dict) -> str:
    return (f"{name}: x{g['growth']:.2f} (log n: x{g['log_n_growth']:.2f}, n: x{g['n_growth']:.0f}); log-log slope "
            f"{g['loglog_slope']:.3f}; fit {g['a']:.4g} + {g['b_per_ln_n']:.4g} ln n (R^2 {g['r2_log_fit']:.3f})")


def plot(rows: list[dict], path: Path) -> None:
    """Log-log: client (median) and server CPU seconds and bytes against n, with log n and n reference lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = np.array([r["n"] for r in rows], float)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.3))
    panels = (("client_cpu_s", "server_cpu_s", "CPU seconds", "time"), ("client_bytes", "server_bytes",
                                                                       "bytes sent + received", "traffic"))
    for ax, (client, server, unit, what) in zip(axes, panels, strict=True):
        c, s = np.array([r[client] for r in rows]), np.array([r[server] for r in rows])
        ax.loglog(ns, c, "o-", color="C0", label="client (median)")
        ax.loglog(ns, s, "s-", color="C1", label="server")
        if client == "client_cpu_s":
            ax.loglog(ns, [r["client_pk_floor_s"] for r in rows], "^:", color="grey", ms=4,
                      label="client public-key floor")
        ax.loglog(ns, c[0] * np.log(ns) / np.log(ns[0]), "--", color="C0", alpha=0.5, label="∝ log n")
        ax.loglog(ns, s[0] * ns / ns[0], ":", color="C1", alpha=0.6, label="∝ n")
        ax.set(xlabel="clients n", ylabel=unit, title=f"SecAgg+ {what}, m = {rows[0]['m']:,}, 5% dropped")
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def scaling(spec: str, m: int, out: Path, plot_path: Path | None = None) -> list[dict]:
    """The SecAgg+ sweep over the comma-separated n of `spec`: the table, the growth fits, the plot."""
    ns = [int(x) for x in spec.split(",") if x]
    if not ns:
        return []
    print(f"\n== SecAgg+ scaling (registry 'secagg+': neighbors=auto for 5% dropout / 5% corrupt), m={m:,}, 5% dropped "
          "at masked_input; one process per n: setup (identities, parties) + one round ==")
    print("cpu = thread CPU seconds of the party (wall is inflated by other work on a shared machine); pk floor = "
          "the client's 2k X25519 agreements, k + t Ed25519 checks and 2 signatures, timed alone; "
          "peak = the process's VmHWM")
    t0 = time.perf_counter()
    rows = scaling_sweep(ns, m)
    print(f"sweep wall {time.perf_counter() - t0:.0f} s")
    if len(rows) > 1:
        ns = [r["n"] for r in rows]
        for label, key in (("client CPU s", "client_cpu_s"), ("client bytes", "client_bytes"),
                           ("server CPU s", "server_cpu_s"), ("server bytes", "server_bytes")):
            g = growth(ns, [r[key] for r in rows])
            rows[-1].setdefault("growth", {})[key] = g
            print(describe(label, g))
        print(f"k: {rows[0]['k']} -> {rows[-1]['k']}, t: {rows[0]['t']} -> {rows[-1]['t']}")
        path = plot_path or out / "secagg_scaling.png"
        plot(rows, path)
        print(f"plot: {path}")
    return rows


def verdict(got: float, bound: float) -> str:
    return f"{'MET' if got <= bound else 'MISSED'} ({got:.3f} s vs bound {bound:.3f} s)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench-out/")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--m", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=2, help="rounds per threat model at the floor point (best is kept)")
    ap.add_argument("--scaling", default="100,300,1000,3000,10000",
                    help="comma-separated n for SecAgg+ scaling ('' to skip)")
    ap.add_argument("--scaling-m", type=int, default=10_000)
    ap.add_argument("--scaling-only", action="store_true", help="run only the SecAgg+ scaling sweep")
    ap.add_argument("--plot", type=Path, help="where the scaling plot goes (default: OUT/secagg_scaling.png)")
    ap.add_argument("--scaling-worker", help=argparse.SUPPRESS)  # "n,m": one scaling_run, as JSON
    ap.add_argument("--baseline", type=Path, help="compare point 1, stage by stage, with the securefl package in DIR")
    ap.add_argument("--worker", help=argparse.SUPPRESS)  # "n,m,signed": one round, its timings as JSON (--baseline)
    args = ap.parse_args()
    if args.worker:
        n, m, signed = (int(x) for x in args.worker.split(","))
        print(json.dumps(one_round(n, m, bool(signed))))
        return
    if args.scaling_worker:
        n, m = (int(x) for x in args.scaling_worker.split(","))
        print(json.dumps(scaling_run(n, m)))
        return
    if args.baseline:
        compare(args.baseline, args.n, args.m, args.repeats)
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.scaling_only:
        rows = scaling(args.scaling, args.scaling_m, out, args.plot)
        (out / "bench_secagg_scaling.json").write_text(json.dumps(rows, indent=2, default=float))
        return

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

    rows = scaling(args.scaling, args.scaling_m, out, args.plot)
    (out / "bench_secagg.json").write_text(json.dumps({"aes_ctr_bytes_per_s": thr, "floor": modes, "scaling": rows},
                                                      indent=2, default=float))


if __name__ == "__main__":
    main()
