"""Flower's own SecAgg+ (SecAggPlusWorkflow + secaggplus_mod) against securefl, same configurations.

Run: python benchmarks/flower_secaggplus.py [--m 100000] [--rounds 2]

Each Flower configuration runs in its own process through flwr.simulation.run_simulation (Ray
backend; the code is securefl.bench.peers.flower, which `securefl bench` uses too): 50 clients
whose fit() returns a fixed vector of m float32 values (no training); seconds per round are taken
from the strategy (configure_fit -> aggregate_fit) of the last round.
Configurations: SecAgg+ with num_shares = 50 (complete graph), SecAgg+ with num_shares = 11 (10
neighbours and the client itself) with 10% of the clients failing at collect_masked_vectors, and
plain FedAvg. securefl runs the matching SecAgg(neighbors=None), SecAgg(neighbors=10) with 10%
dropped at masked_input, and Plaintext, each secure configuration in both threat models:
semi-honest (signed_keys=False: no signatures, no consistency check; the same threat model as
Flower's SecAgg+, which is honest-but-curious only) and active (the default: signed keys and the
signed survivor list, secure against a malicious server). Protocol cost = secure minus plain
seconds, each against its own framework's plain baseline; both ratios are set against the 20x
target. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import subprocess
import time

from securefl.bench.peers.flower import round_seconds_in_subprocess

N = 50
CONFIGS = {  # name -> (num_shares or None for plain FedAvg, every how many clients one drops; 0: none)
    "complete": (N, 0),
    "sparse": (11, 10),
    "plain": (None, 0),
}


def securefl_round_seconds(config: str, m: int, repeats: int = 2, signed_keys: bool = True) -> float:
    """Wall seconds of one simulated securefl round (best of `repeats`); signed_keys=False: semi-honest mode."""
    import torch

    import securefl
    from securefl.mpc.secagg import SecAgg

    vec = torch.linspace(-1, 1, m)
    ups = [vec.clone() for _ in range(N)]
    if config == "plain":
        agg, dropped = securefl.Plaintext(seed=0), None
    elif config == "complete":
        agg, dropped = SecAgg(threshold=0.6, signed_keys=signed_keys, seed=0), None
    else:
        agg = SecAgg(threshold=0.6, neighbors=10, signed_keys=signed_keys, seed=0)
        dropped = {i: "masked_input" for i in range(0, N, 10)}
    agg.aggregate(ups[:4] if config == "plain" else ups, dropped=dropped)  # warm-up (Numba, caches)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        agg.aggregate(ups, dropped=dropped)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--m", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=900)
    args = ap.parse_args()

    flower: dict[str, float | str] = {}
    for cfg, (shares, drop_every) in CONFIGS.items():
        try:
            flower[cfg] = round_seconds_in_subprocess(N, args.m, args.rounds, shares, 0.6, drop_every, args.timeout)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            flower[cfg] = f"FAILED: {e}"
        print(f"flower   {cfg:9s}: {flower[cfg] if isinstance(flower[cfg], str) else f'{flower[cfg]:.3f} s/round'}",
              flush=True)
    modes = {"semi-honest": False, "active": True}  # label -> signed_keys
    ours = {"plain": securefl_round_seconds("plain", args.m)}
    print(f"securefl plain    : {ours['plain']:.3f} s/round")
    for cfg in ("complete", "sparse"):
        for mode, signed in modes.items():
            ours[cfg, mode] = securefl_round_seconds(cfg, args.m, signed_keys=signed)
            print(f"securefl {cfg:9s} {mode:11s}: {ours[cfg, mode]:.3f} s/round", flush=True)
    print(f"\nprotocol cost (secure - plain), n={N}, m={args.m}; semi-honest = Flower's threat model, "
          "active = securefl's default (also secure against a malicious server):")
    for cfg in ("complete", "sparse"):
        have_flower = isinstance(flower[cfg], float) and isinstance(flower["plain"], float)
        theirs = flower[cfg] - flower["plain"] if have_flower else None
        print(f"  {cfg}: flower {f'{theirs:.3f} s' if have_flower else 'not measured here'}")
        for mode in modes:
            mine = ours[cfg, mode] - ours["plain"]
            if theirs is None:
                print(f"    securefl {mode:11s} {mine:.3f} s")
                continue
            ratio = theirs / mine if mine > 0 else float("inf")
            print(f"    securefl {mode:11s} {mine:.3f} s: {ratio:.1f}x cheaper than flower "
                  f"(target >= 20x: {'MET' if ratio >= 20 else 'MISSED'})")


if __name__ == "__main__":
    main()
