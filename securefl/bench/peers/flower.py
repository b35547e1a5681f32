"""Flower's own SecAgg+ (SecAggPlusWorkflow + secaggplus_mod) as a peer baseline, and plain FedAvg beside it.

`round_seconds` runs one Flower simulation (Ray backend) in this process: n clients whose fit()
returns a fixed vector of m float32 values (no training); the seconds of the last round are taken
from the strategy (configure_fit -> aggregate_fit). Ray needs a fresh process per simulation, so
callers use `round_seconds_in_subprocess`, which runs this module (`python -m
securefl.bench.peers.flower`) and reads its one RESULT line. Used by `securefl bench` and by
benchmarks/flower_secaggplus.py; needs the `flower` extra (flwr[simulation]).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from securefl.errors import AggregatorError, DropoutError

RESULT = "RESULT "


def dropped_clients(n: int, every: int) -> frozenset[int]:
    """Clients 0, every, 2 * every, ... fail at collect_masked_vectors (none for every=0)."""
    return frozenset(range(0, n, every)) if every else frozenset()


def round_seconds(n: int, m: int, rounds: int, num_shares: int | None, threshold: float = 0.6,
                  drop_every: int = 0) -> float:
    """Seconds of the last of `rounds` Flower rounds: SecAgg+ with num_shares (None: plain FedAvg)."""
    import numpy as np
    from flwr.client import ClientApp, NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.common import Context, ndarrays_to_parameters
    from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.simulation import run_simulation

    vector = np.linspace(-1, 1, m, dtype=np.float32)
    dropped = dropped_clients(n, drop_every)

    class FixedClient(NumPyClient):
        def fit(self, parameters, cfg):
            return [vector], 1, {}

    def drop_mod(msg, ctxt, call_next):
        """Make the chosen clients fail when asked for their masked vector (a dropout)."""
        cfg = msg.content.config_records.get("secaggplus_configs")
        if cfg is not None and cfg.get("stage") == "collect_masked_vectors":
            if int(ctxt.node_config["partition-id"]) in dropped:
                raise DropoutError(f"partition {ctxt.node_config['partition-id']}: simulated dropout")
        return call_next(msg, ctxt)

    mods = [drop_mod, secaggplus_mod] if num_shares else []
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
        fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n, min_available_clients=n,
        accept_failures=True, initial_parameters=ndarrays_to_parameters([np.zeros(m, np.float32)]),
    )
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        ctx = LegacyContext(context=context, config=ServerConfig(num_rounds=rounds), strategy=strategy)
        fit = SecAggPlusWorkflow(num_shares=num_shares, reconstruction_threshold=threshold) if num_shares else None
        (DefaultWorkflow(fit_workflow=fit) if fit else DefaultWorkflow())(grid, ctx)

    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=n,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
    done = [b - a for a, b in marks if b]
    if not done:
        raise AggregatorError(f"flower num_shares={num_shares}: no round finished")
    return done[-1]


def round_seconds_in_subprocess(n: int, m: int, rounds: int, num_shares: int | None, threshold: float = 0.6,
                                drop_every: int = 0, timeout: float = 900) -> float:
    """`round_seconds` in a fresh Python process (Ray starts and stops with it)."""
    argv = [sys.executable, "-m", __name__, "--n", str(n), "--m", str(m), "--rounds", str(rounds),
            "--num-shares", str(num_shares or 0), "--threshold", str(threshold), "--drop-every", str(drop_every)]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=os.environ | {"RAY_DEDUP_LOGS": "0"})
    lines = [x for x in p.stdout.splitlines() if x.startswith(RESULT)]
    if not lines:
        tail = " | ".join((p.stdout + p.stderr).strip().splitlines()[-5:])
        raise AggregatorError(f"flower num_shares={num_shares}: no result (exit {p.returncode}): {tail}")
    return float(json.loads(lines[-1][len(RESULT):]))


def main() -> None:
    ap = argparse.ArgumentParser(description="One Flower simulation; prints 'RESULT <seconds of the last round>'.")
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--m", type=int, required=True)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--num-shares", type=int, default=0, help="SecAgg+ share count (0: plain FedAvg)")
    ap.add_argument("--threshold", type=float, default=0.6)
    ap.add_argument("--drop-every", type=int, default=0, help="clients 0, k, 2k, ... drop (0: none)")
    a = ap.parse_args()
    seconds = round_seconds(a.n, a.m, a.rounds, a.num_shares or None, a.threshold, a.drop_every)
    sys.stdout.write(RESULT + json.dumps(seconds) + "\n")


if __name__ == "__main__":
    main()
