"""Flower's own SecAgg+ (SecAggPlusWorkflow + secaggplus_mod) against securefl, same configurations.

Run: python benchmarks/flower_secaggplus.py [--m 100000] [--rounds 2]

Each Flower configuration runs in its own process through flwr.simulation.run_simulation (Ray
backend): 50 clients whose fit() returns a fixed vector of m float32 values (no training);
seconds per round are taken from the strategy (configure_fit -> aggregate_fit) of the last round.
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
import json
import subprocess
import sys
import time

N = 50
CONFIGS = {
    "complete": {"num_shares": N, "threshold": 0.6, "drop": 0.0},
    "sparse": {"num_shares": 11, "threshold": 0.6, "drop": 0.1},
    "plain": None,
}


def flower_round_seconds(config: str, m: int, rounds: int) -> float:
    """Run one Flower simulation in this process; return the seconds of its last round."""
    import numpy as np
    from flwr.client import ClientApp, NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.common import Context, ndarrays_to_parameters
    from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.simulation import run_simulation

    spec = CONFIGS[config]
    vector = np.linspace(-1, 1, m, dtype=np.float32)
    dropped = set(range(0, N, 10)) if spec and spec["drop"] else set()

    class FixedClient(NumPyClient):
        def fit(self, parameters, cfg):
            return [vector], 1, {}

    def drop_mod(msg, ctxt, call_next):
        """Make the chosen clients fail when asked for their masked vector (a dropout)."""
        cfg = msg.content.config_records.get("secaggplus_configs")
        if cfg is not None and cfg.get("stage") == "collect_masked_vectors":
            if int(ctxt.node_config["partition-id"]) in dropped:
                raise RuntimeError("simulated dropout")
        return call_next(msg, ctxt)

    mods = [drop_mod, secaggplus_mod] if spec else []
    client_app = ClientApp(client_fn=lambda context: FixedClient().to_client(), mods=mods)
    marks: list[tuple[float, float]] = []

    class TimedFedAvg(FedAvg):
        def configure_fit(self, server_round, parameters, client_manager):
            marks.append((time.perf_counter(), 0.0))
            return super().configure_fit(server_round, parameters, client_manager)

        def aggregate_fit(self, server_round, results, failures):
            out = super().aggregate_fit(server_round, results, failures)
            marks[-1] = (marks[-1][0], time.perf_counter())
            return out

    strategy = TimedFedAvg(
        fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=N, min_available_clients=N,
        accept_failures=True, initial_parameters=ndarrays_to_parameters([np.zeros(m, np.float32)]),
    )
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        ctx = LegacyContext(context=context, config=ServerConfig(num_rounds=rounds), strategy=strategy)
        fit = SecAggPlusWorkflow(num_shares=spec["num_shares"], reconstruction_threshold=spec["threshold"]) if spec \
            else None
        (DefaultWorkflow(fit_workflow=fit) if fit else DefaultWorkflow())(grid, ctx)

    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=N,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
    done = [b - a for a, b in marks if b]
    if not done:
        raise RuntimeError(f"flower {config}: no round finished")
    return done[-1]


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
    ap.add_argument("--child", choices=list(CONFIGS), help=argparse.SUPPRESS)
    ap.add_argument("--timeout", type=float, default=900)
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(flower_round_seconds(args.child, args.m, args.rounds)), flush=True)
        return

    flower: dict[str, float | str] = {}
    for cfg in CONFIGS:
        cmd = [sys.executable, __file__, "--child", cfg, "--m", str(args.m), "--rounds", str(args.rounds)]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            lines = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
            if lines:
                flower[cfg] = float(json.loads(lines[-1][7:]))
            else:
                tail = (p.stdout + p.stderr).strip().splitlines()[-15:]
                flower[cfg] = f"FAILED (exit {p.returncode}): " + " | ".join(tail)
        except subprocess.TimeoutExpired:
            flower[cfg] = f"FAILED: no result within {args.timeout:.0f} s"
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
