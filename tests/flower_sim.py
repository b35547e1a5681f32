"""One Flower simulation (flwr.simulation.run_simulation, Ray) of a securefl federation, in its own process.

    python -m tests.flower_sim FOLDER OUT.json ROUNDS [STRATEGY]

FOLDER holds a federation written by securefl.flower.write_federation for the test model of
tests/flower_apps.py; one SuperNode per party. The ServerApp runs SecureStrategy(STRATEGY: fedavg or
fedadam) for ROUNDS rounds and writes the final model, each round's securefl record and the wall
seconds to OUT.json. Faults come from SECUREFL_TEST_FAIL / _HANG (see tests/flower_apps.py). Ray is
started once per process, so tests share one simulation across their checks.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
from flwr.app import ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAdam, FedAvg
from flwr.simulation import run_simulation

from securefl.flower import SecureStrategy, simulation_parties
from securefl.flower.node import load_config
from tests import flower_apps as fa


def main(folder: str, out: str, rounds: int, strategy_name: str = "fedavg") -> None:
    config = load_config(f"{folder}/config.json")
    n = config.n
    server_app = ServerApp()
    marks: dict[str, float] = {"called": time.time()}

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        marks["main"] = time.time()
        cls = FedAdam if strategy_name == "fedadam" else FedAvg
        strategy = SecureStrategy(cls(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n,
                                      min_available_nodes=n), config)
        result = strategy.start(grid=grid, initial_arrays=fa.initial_arrays(), num_rounds=rounds, timeout=20.0,
                                train_config=ConfigRecord({"lr": 0.1}))
        marks["done"] = time.time()
        final = {k: np.asarray(a.numpy(), np.float64).tolist() for k, a in result.arrays.items()}
        with open(out, "w") as f:
            json.dump({"final": final, "rounds": [r.to_dict() for r in strategy.rounds],
                       "registered": sorted(str(p) for p in strategy.grid.nodes),
                       "parties": sorted(str(p) for p in simulation_parties(config)),
                       "train_metrics": {str(k): dict(v) for k, v in result.train_metrics_clientapp.items()},
                       "marks": marks}, f, default=str)

    run_simulation(server_app=server_app, client_app=fa.make_app(folder),
                   num_supernodes=len(simulation_parties(config)),
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": 2, "include_dashboard": False}})
    with open(out) as f:
        data = json.load(f)
    data["marks"]["returned"] = time.time()
    with open(out, "w") as f:
        json.dump(data, f, default=str)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), *sys.argv[4:5])
