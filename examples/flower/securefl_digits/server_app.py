"""The server: Flower's FedAvg, unchanged, wrapped in securefl's SecureStrategy.

The strategy samples registered clients only, and every training round runs the configured securefl
scheme's stages through the Grid; the model is evaluated on the digits test set after each round.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from securefl.flower import SecureStrategy
from securefl.session import RoundConfig
from securefl_digits.task import load_data, new_model, test_accuracy

app = ServerApp()


def _config_path(cfg: dict) -> Path:
    if cfg["securefl-config"]:
        return Path(str(cfg["securefl-config"]))
    if cfg["securefl-federation"]:
        return Path(str(cfg["securefl-federation"])) / "config.json"
    raise SystemExit("set the run config securefl-config (deployment) or securefl-federation (simulation)")


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    config = RoundConfig.load(_config_path(cfg))
    data = load_data(config.n, float(cfg["alpha"]), int(cfg["seed"]))
    torch.manual_seed(int(cfg["seed"]))
    initial = ArrayRecord(new_model(data).state_dict())
    report, progress = str(cfg["securefl-report"]), str(cfg["securefl-progress"])

    def on_stage(rnd: int, stage: str, parties: list[str]) -> None:
        if progress:
            with open(progress, "a") as f:
                f.write(f"round {rnd} stage {stage} {len(parties)}\n")

    strategy = SecureStrategy(FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_available_nodes=config.n),
                              config, on_stage=on_stage)
    accuracy: dict[int, float] = {}

    def evaluate(rnd: int, arrays: ArrayRecord) -> MetricRecord:
        acc, loss = test_accuracy(arrays, data)
        accuracy[rnd] = acc
        if report:
            rounds = [r.to_dict() | {"accuracy": accuracy.get(r.round)} for r in strategy.rounds]
            Path(report).write_text(json.dumps({"initial_accuracy": accuracy.get(0), "rounds": rounds}, indent=1))
        return MetricRecord({"accuracy": acc, "loss": loss})

    strategy.start(grid=grid, initial_arrays=initial, num_rounds=int(cfg["num-server-rounds"]),
                   timeout=float(cfg["input-timeout"]), evaluate_fn=evaluate)
