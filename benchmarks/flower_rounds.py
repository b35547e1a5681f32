"""securefl inside Flower against Flower's own rounds: one Flower simulation, the same nodes, every configuration.

    python benchmarks/flower_rounds.py                      # both parts, n=50, m=100,000
    python benchmarks/flower_rounds.py legacy --rounds 3    # SecAgg figures only
    python benchmarks/flower_rounds.py message              # Plaintext vs FedAvg, Message API

legacy: one run_simulation (Ray) of n SuperNodes whose legacy NumPyClient returns a fixed vector of m
float32 values (no training) behind three mods: a dropout mod, securefl's mod and Flower's
secaggplus_mod. The ServerApp runs, one after the other on the same nodes, through legacy FedAvg
and DefaultWorkflow: Flower's plain round, securefl Plaintext, Flower's SecAggPlusWorkflow
(complete graph: num_shares = n; sparse: num_shares = 11, i.e. 10 neighbours, with every 10th
client failing at collect_masked_vectors) and securefl SecAgg in both threat models (semi-honest:
signed_keys=False, Flower's threat model; active: signed keys and consistency check), complete and
sparse (neighbors=10, every 10th client failing at masked_input).
message: one run_simulation of a Message-API ClientApp: Flower's FedAvg round against
SecureStrategy(FedAvg) with securefl Plaintext (the integration's own overhead; target <= 1.2x).

A round's seconds run from the strategy's configure_fit/configure_train to the end of its
aggregate_fit/aggregate_train; the figure is the median of the rounds after the first (the first
absorbs Ray's start, the hello and warm-up). Protocol cost = secure round minus its own framework's
plain round. Not part of the test suite; a shared 2-core machine makes every figure noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

RESULT = "RESULT "
DROP_KEY = "drop-every"  # fit config: clients whose partition-id is a multiple of it fail at the input stage


def _securefl_configs(n: int) -> dict[str, tuple[str, dict, int]]:
    """securefl configuration -> (scheme, options, drop every k-th client)."""
    return {
        "securefl plaintext": ("plaintext", {}, 0),
        "securefl secagg complete semi-honest": ("secagg", {"threshold": 0.6, "signed_keys": False}, 0),
        "securefl secagg complete active": ("secagg", {"threshold": 0.6}, 0),
        "securefl secagg sparse semi-honest": ("secagg", {"threshold": 0.6, "neighbors": 10, "signed_keys": False},
                                               10),
        "securefl secagg sparse active": ("secagg", {"threshold": 0.6, "neighbors": 10}, 10),
    }


def _federations(folder: str, n: int, m: int, configs: dict[str, tuple[str, dict, int]]) -> dict[str, str]:
    import torch

    from securefl import schemes
    from securefl.flower import write_federation

    out = {}
    for i, (name, (scheme, options, _)) in enumerate(configs.items()):
        path = os.path.join(folder, f"fed{i}")
        write_federation(path, schemes.make(scheme, **options), [torch.zeros(m)], n, weight_bound=1.0,
                         timeouts={"default": 600.0, "securefl.hello": 900.0, "masked_input": 600.0, "upload": 600.0})
        out[name] = path
    return out


def _drop_mod(msg, context, call_next):  # noqa: ANN001, ANN201
    """Fail (a dropout) at the input stage of a round whose fit config says so: Flower's collect_masked_vectors,
    securefl's input stage (the stages that carry the fit instruction)."""
    cfg = msg.content.config_records.get("fitins.config")
    every = int(cfg.get(DROP_KEY, 0)) if cfg is not None else 0
    if every and int(context.node_config["partition-id"]) % every == 0:
        secagg = msg.content.config_records.get("secaggplus_configs")
        if (secagg is not None and secagg.get("stage") == "collect_masked_vectors") or \
                "securefl.meta" in msg.content.config_records:
            raise RuntimeError("simulated dropout")
    return call_next(msg, context)


def _only_secaggplus(mod):  # noqa: ANN001, ANN202
    """Flower's secaggplus_mod takes every train message for a SecAgg+ one; route only those to it."""
    def route(msg, context, call_next):  # noqa: ANN001, ANN202
        if "secaggplus_configs" in msg.content.config_records:
            return mod(msg, context, call_next)
        return call_next(msg, context)
    return route


def run_legacy(n: int, m: int, rounds: int) -> dict[str, list[float]]:
    import numpy as np
    from flwr.client import ClientApp, NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.common import Context, ndarrays_to_parameters
    from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.simulation import run_simulation

    from securefl.flower import secure_default_workflow, secure_mod, simulation_resolver
    from securefl.flower.node import load_config

    vector = np.linspace(-1, 1, m, dtype=np.float32)
    configs = _securefl_configs(n)
    folder = tempfile.mkdtemp(prefix="securefl-bench-")
    feds = _federations(folder, n, m, configs)

    class FixedClient(NumPyClient):
        def fit(self, parameters, config):  # noqa: ANN001, ANN201
            return [vector], 1, {}

    client_app = ClientApp(client_fn=lambda context: FixedClient().to_client(),
                           mods=[_drop_mod, secure_mod(simulation_resolver(*feds.values()), allow_plain_train=True),
                                 _only_secaggplus(secaggplus_mod)])
    times: dict[str, list[float]] = {}

    def strategy(name: str, drop_every: int) -> FedAvg:
        marks = times.setdefault(name, [])

        class Timed(FedAvg):
            def configure_fit(self, server_round, parameters, client_manager):  # noqa: ANN001, ANN201
                self._t0 = time.perf_counter()
                return super().configure_fit(server_round, parameters, client_manager)

            def aggregate_fit(self, server_round, results, failures):  # noqa: ANN001, ANN201
                out = super().aggregate_fit(server_round, results, failures)
                marks.append(time.perf_counter() - self._t0)
                print(f"[bench] {name} round {server_round}: {marks[-1]:.2f} s, {len(results)} results", flush=True)
                _check(name, len(results), n - len(range(0, n, drop_every)) if drop_every else n)
                return out

        return Timed(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n, min_available_clients=n,
                     accept_failures=True, initial_parameters=ndarrays_to_parameters([np.zeros(m, np.float32)]),
                     on_fit_config_fn=lambda r: {DROP_KEY: drop_every})

    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        def ctx(name: str, drop_every: int = 0) -> LegacyContext:
            return LegacyContext(context=context, config=ServerConfig(num_rounds=rounds),
                                 strategy=strategy(name, drop_every))

        def flower(name: str, shares: int | None, drop_every: int = 0) -> None:
            fit = SecAggPlusWorkflow(num_shares=shares, reconstruction_threshold=0.6) if shares else None
            (DefaultWorkflow(fit_workflow=fit) if fit else DefaultWorkflow())(grid, ctx(name, drop_every))

        def ours(name: str) -> None:
            config = load_config(os.path.join(feds[name], "config.json"))
            sg = secure_default_workflow(config)(grid, ctx(name, configs[name][2]))
            last = sg.rounds[-1]
            work = {p: sum(k.get(p, 0.0) for k in last.report.seconds.values()) for p in ("server", "client")}
            times[f"{name} | stages"] = [last.stage_seconds]  # the last round: wall seconds per stage,
            times[f"{name} | compute"] = [work]  # and the seconds the server and all clients computed in it

        flower("flower plain", None)
        ours("securefl plaintext")
        flower("flower secagg+ complete", n)
        ours("securefl secagg complete semi-honest")
        ours("securefl secagg complete active")
        flower("flower secagg+ sparse", 11, 10)
        ours("securefl secagg sparse semi-honest")
        ours("securefl secagg sparse active")

    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=n,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": os.cpu_count() or 1, "include_dashboard": False}})
    return times


def _check(name: str, got: int, want: int) -> None:
    """A round whose clients failed is not a figure: stop the benchmark."""
    if got != want:
        raise RuntimeError(f"{name}: {got} results, expected {want}: the round's figure would be meaningless")


def run_message(n: int, m: int, rounds: int) -> dict[str, list[float]]:
    import numpy as np
    from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation

    from securefl.flower import SecureStrategy, secure_mod, simulation_resolver
    from securefl.flower.node import load_config

    folder = tempfile.mkdtemp(prefix="securefl-bench-")
    configs = {"securefl plaintext": _securefl_configs(n)["securefl plaintext"]}
    fed = _federations(folder, n, m, configs)["securefl plaintext"]
    vector = np.linspace(-1, 1, m, dtype=np.float32)
    client_app = ClientApp(mods=[secure_mod(simulation_resolver(fed), allow_plain_train=True)])

    @client_app.train()
    def train(msg: Message, context: Context) -> Message:
        return Message(RecordDict({"arrays": ArrayRecord({"0": Array(vector)}),
                                   "metrics": MetricRecord({"num-examples": 1})}), reply_to=msg)

    times: dict[str, list[float]] = {}

    def strategy(name: str) -> FedAvg:
        marks = times.setdefault(name, [])

        class Timed(FedAvg):
            def configure_train(self, server_round, arrays, config, grid):  # noqa: ANN001, ANN201
                self._t0 = time.perf_counter()
                return super().configure_train(server_round, arrays, config, grid)

            def aggregate_train(self, server_round, replies):  # noqa: ANN001, ANN201
                replies = list(replies)
                out = super().aggregate_train(server_round, replies)
                marks.append(time.perf_counter() - self._t0)
                ok = sum(not r.has_error() for r in replies)
                print(f"[bench] {name} round {server_round}: {marks[-1]:.2f} s, {ok} results", flush=True)
                _check(name, ok, n)
                return out

        return Timed(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n, min_available_nodes=n)

    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        initial = ArrayRecord({"0": Array(np.zeros(m, np.float32))})
        config = load_config(os.path.join(fed, "config.json"))
        for _ in range(2):  # alternate, so that load drifts hit both
            strategy("flower fedavg").start(grid=grid, initial_arrays=initial, num_rounds=rounds,
                                            train_config=ConfigRecord({}))
            SecureStrategy(strategy("securefl plaintext"), config).start(
                grid=grid, initial_arrays=initial, num_rounds=rounds, train_config=ConfigRecord({}))

    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=n,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": os.cpu_count() or 1, "include_dashboard": False}})
    return times


def _steady(marks: list[float], rounds: int) -> float:
    """Median of the rounds after the first of each start (the first absorbs start-up)."""
    later = [t for i, t in enumerate(marks) if i % rounds]
    return statistics.median(later or marks)


def report(legacy: dict[str, list[float]] | None, message: dict[str, list[float]] | None, rounds: int) -> None:
    if message:
        f, s = _steady(message["flower fedavg"], rounds), _steady(message["securefl plaintext"], rounds)
        print(f"\nMessage API, same nodes: Flower FedAvg {f:.3f} s/round, SecureStrategy(FedAvg) + Plaintext "
              f"{s:.3f} s/round: {s / f:.2f}x (target <= 1.2x: {'MET' if s / f <= 1.2 else 'MISSED'})")
    if legacy:
        detail = {k: v[0] for k, v in legacy.items() if " | " in k}
        sec = {k: _steady(v, rounds) for k, v in legacy.items() if " | " not in k}
        print("\nlegacy API (DefaultWorkflow), one simulation, same nodes; seconds per round:")
        for k, v in sec.items():
            print(f"  {k:40s} {v:8.3f}")
        print(f"  securefl plaintext / flower plain: {sec['securefl plaintext'] / sec['flower plain']:.2f}x")
        print("protocol cost (secure minus its framework's plain round):")
        for graph in ("complete", "sparse"):
            theirs = sec[f"flower secagg+ {graph}"] - sec["flower plain"]
            for mode in ("semi-honest", "active"):
                mine = sec[f"securefl secagg {graph} {mode}"] - sec["securefl plaintext"]
                ratio = theirs / mine if mine > 0 else float("inf")
                print(f"  {graph:8s} {mode:11s}: flower {theirs:7.3f} s, securefl {mine:7.3f} s -> {ratio:5.1f}x "
                      f"lower (target >= 10x: {'MET' if ratio >= 10 else 'MISSED'})")
        print("securefl's last round of each configuration: wall seconds per stage (Flower transport, the nodes' "
              "work and the server's), and the seconds computed by the server and by all clients together:")
        for name in (k for k in sec if k.startswith("securefl")):
            stages = ", ".join(f"{s} {v:.2f}" for s, v in detail[f"{name} | stages"].items())
            work = detail[f"{name} | compute"]
            print(f"  {name:40s} {stages}; server {work['server']:.2f} s, clients {work['client']:.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", nargs="?", choices=["both", "legacy", "message"], default="both")
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--m", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:  # one simulation in this process (Ray starts once per process)
        run = run_legacy if args.part == "legacy" else run_message
        print(RESULT + json.dumps(run(args.n, args.m, args.rounds)), flush=True)
        return
    results = {}
    for part in (["legacy", "message"] if args.part == "both" else [args.part]):
        p = subprocess.run([sys.executable, __file__, part, "--n", str(args.n), "--m", str(args.m), "--rounds",
                            str(args.rounds), "--child"], capture_output=True, text=True)
        lines = [x for x in p.stdout.splitlines() if x.startswith(RESULT)]
        for x in p.stdout.splitlines():
            if x.startswith("[bench]"):
                print(x)
        if not lines:
            print(f"{part}: no result (exit {p.returncode}):\n{(p.stdout + p.stderr)[-3000:]}")
            continue
        results[part] = json.loads(lines[-1][len(RESULT):])
    report(results.get("legacy"), results.get("message"), args.rounds)


if __name__ == "__main__":
    main()
