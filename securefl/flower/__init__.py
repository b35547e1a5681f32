"""securefl inside Flower (flwr >= 1.20, the `flower` extra): any scheme's round over Flower's Grid.

Server (ServerApp):

    config = RoundConfig.load("fed/config.json")               # the server's own copy
    strategy = SecureStrategy(FedAvg(fraction_train=1.0), config)   # or FedAdam, FedProx, ...
    result = strategy.start(grid=grid, initial_arrays=arrays, num_rounds=3)
    strategy.rounds[-1].report                                  # survivors, dropped, bytes per party, epsilon

    secure_default_workflow(config)(grid, legacy_context)       # the legacy DefaultWorkflow API

Node (ClientApp, the same app on clients, helpers and the key holder):

    app = ClientApp(mods=[secure_mod()])                        # keys and config from the node config

Federation (keys, directory, configuration): `securefl.deploy.write_federation(folder, aggregator, template,
clients)` (re-exported here).
See docs/flower.md for the commands of a simulation and of a multi-process deployment.
"""

try:
    import flwr  # noqa: F401  (the flower extra)
except ModuleNotFoundError:
    raise ModuleNotFoundError('securefl.flower needs Flower: pip install -c constraints.txt -e ".[flower]" in a '
                              "checkout, or pip install \"securefl[flower]\"", name="flwr") from None

from securefl.deploy import write_federation  # noqa: E402
from securefl.flower.federation import simulation_parties
from securefl.flower.grid import RoundRecord, SecureGrid
from securefl.flower.node import (
    NodeSetup,
    load_setup,
    node_config_resolver,
    run_config_resolver,
    secure_mod,
    simulation_resolver,
)
from securefl.flower.records import spec_of_arrays
from securefl.flower.strategy import SecureStrategy, refuse_incompatible, secure_default_workflow

__all__ = [
    "NodeSetup",
    "RoundRecord",
    "SecureGrid",
    "SecureStrategy",
    "load_setup",
    "node_config_resolver",
    "run_config_resolver",
    "refuse_incompatible",
    "secure_default_workflow",
    "secure_mod",
    "simulation_parties",
    "simulation_resolver",
    "spec_of_arrays",
    "write_federation",
]
