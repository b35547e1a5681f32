"""The strategy side: any Flower averaging strategy whose training rounds run through securefl.

`SecureStrategy` wraps a Message-API strategy (FedAvg, FedAdam, FedProx, ...) and runs it over a
`SecureGrid`; `secure_default_workflow` does the same for the legacy DefaultWorkflow. Strategies
whose aggregation reads individual updates would run on n copies of the mean: they are refused
when the wrapper is built (`refuse_incompatible`).
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

from securefl.aggregator import Aggregator
from securefl.deploy import aggregator_of
from securefl.errors import ConfigError
from securefl.flower.grid import POLL, RoundRecord, SecureGrid, StageHook
from securefl.schemes import scheme_class
from securefl.session import RoundConfig

# strategies whose aggregation reads individual updates (robust aggregation, per-client losses, server-side
# clipping): over securefl they would run on n copies of the mean, so they are refused by name
INCOMPATIBLE = ("Krum", "MultiKrum", "Bulyan", "FedMedian", "FedTrimmedAvg", "QFedAvg", "FedXgbBagging", "FedXgbCyclic",
                "FedXgbNnAvg", "DifferentialPrivacyServerSideFixedClipping",
                "DifferentialPrivacyServerSideAdaptiveClipping", "DPFedAvgFixed", "DPFedAvgAdaptive")


def refuse_incompatible(strategy: object) -> None:
    """ConfigError when `strategy` (or a strategy it wraps) aggregates individual updates."""
    seen = 0
    while strategy is not None and seen < 16:
        for cls in type(strategy).__mro__:
            if cls.__name__ in INCOMPATIBLE and cls.__module__.startswith("flwr."):
                raise ConfigError(f"{type(strategy).__name__} aggregates individual updates, which securefl never "
                                  "reveals; use a strategy that averages (FedAvg, FedAvgM, FedProx, FedAdam, FedYogi, "
                                  "FedAdagrad, DifferentialPrivacyClientSide*)")
        strategy = getattr(strategy, "strategy", None)
        seen += 1


class SecureStrategy(Strategy):
    """A Message-API strategy whose training rounds run through securefl (any averaging strategy: FedAvg, FedAdam...).

        strategy = SecureStrategy(FedAvg(fraction_train=1.0), RoundConfig.load("fed/config.json"))
        result = strategy.start(grid=grid, initial_arrays=arrays, num_rounds=3)
        strategy.rounds[-1].report          # survivors, dropped, bytes per party, epsilon

    Every method but start() is the wrapped strategy's; start() runs it over a SecureGrid (a new session
    per start) after registering the nodes.
    """

    def __init__(self, strategy: Strategy, config: RoundConfig, *, aggregator: Aggregator | None = None,
                 poll: float = POLL, on_stage: StageHook | None = None):
        refuse_incompatible(strategy)
        if not isinstance(config, RoundConfig):
            raise ConfigError("config must be a securefl.session.RoundConfig (RoundConfig.load('config.json'))")
        scheme_class(config.scheme)
        self.strategy, self.config, self.poll, self.on_stage = strategy, config, poll, on_stage
        self.aggregator = aggregator if aggregator is not None else aggregator_of(config)
        self.grid: SecureGrid | None = None

    @property
    def rounds(self) -> list[RoundRecord]:
        """Every secure round of the last start(), in order."""
        return [] if self.grid is None else self.grid.rounds

    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 3, timeout: float = 3600,
              train_config=None, evaluate_config=None, evaluate_fn=None) -> Result:  # noqa: ANN001 (Flower's)
        self.grid = SecureGrid(grid, self.config, aggregator=self.aggregator, weight_key=_weighted_by(self.strategy),
                               poll=self.poll, on_stage=self.on_stage)
        self.grid.register(wait=True)
        return self.strategy.start(grid=self.grid, initial_arrays=initial_arrays, num_rounds=num_rounds,
                                   timeout=timeout, train_config=train_config, evaluate_config=evaluate_config,
                                   evaluate_fn=evaluate_fn)

    def configure_train(self, server_round, arrays, config, grid):  # noqa: ANN001, ANN201
        return self.strategy.configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round, replies):  # noqa: ANN001, ANN201
        return self.strategy.aggregate_train(server_round, replies)

    def configure_evaluate(self, server_round, arrays, config, grid):  # noqa: ANN001, ANN201
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round, replies):  # noqa: ANN001, ANN201
        return self.strategy.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        self.strategy.summary()


def _weighted_by(strategy: object) -> str:
    """The metric a strategy (or the strategy it wraps) weighs replies by."""
    while strategy is not None and not hasattr(strategy, "weighted_by_key"):
        strategy = getattr(strategy, "strategy", None)
    return str(getattr(strategy, "weighted_by_key", "num-examples"))


def secure_default_workflow(config: RoundConfig, *, aggregator: Aggregator | None = None, poll: float = POLL,
                            on_stage: StageHook | None = None) -> Callable[[Grid, Context], SecureGrid]:
    """The legacy API: `secure_default_workflow(config)(grid, legacy_context)` runs DefaultWorkflow's rounds with
    securefl fit rounds (the workflow samples registered clients only); returns the SecureGrid (its rounds)."""
    from flwr.server.workflow import DefaultWorkflow

    def workflow(grid: Grid, context: Context) -> SecureGrid:
        refuse_incompatible(getattr(context, "strategy", None))
        sg = SecureGrid(grid, config, aggregator=aggregator, poll=poll, on_stage=on_stage)
        sg.register(wait=True)
        DefaultWorkflow()(sg, context)
        return sg

    return workflow
