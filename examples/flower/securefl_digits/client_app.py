"""The node: Flower's ClientApp with securefl's mod in front of an unchanged train function.

The same app runs on every node. A client's train function is called once per round, at the
scheme's input stage; only the securefl party's bytes leave the node (its metrics and num-examples
in the clear). Helpers and the key holder never train: the mod answers their securefl messages.
Where each node's key and config.json live: its node config (a deployment), or the run config
`securefl-federation` and the node's partition-id (a simulation); see ../README.md.
"""

from __future__ import annotations

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from securefl.flower import NodeSetup, node_config_resolver, run_config_resolver, secure_mod


def my_keys(context: Context) -> NodeSetup:
    """A deployed SuperNode names its own key and config.json in its node config; a node of a `flwr run`
    simulation has no node config of its own, so its files come from the run config's federation folder."""
    if "securefl-key" in context.node_config:
        return node_config_resolver(context)
    return run_config_resolver(context)


app = ClientApp(mods=[secure_mod(my_keys)])  # first in the list: any clipping mod goes after it


@app.train()
def train(msg: Message, context: Context) -> Message:
    # imported here: in a deployment every message runs in a new process, and only this stage needs PyTorch
    from securefl_digits.task import load_data, train_shard

    cfg, nc = context.run_config, context.node_config
    clients = my_keys(context).config.n  # the split is over the federation's clients (not its helpers)
    data = load_data(clients, float(cfg["alpha"]), int(cfg["seed"]))
    rnd = int(msg.content["config"]["server-round"])
    partition = int(nc["partition-id"])
    arrays, n = train_shard(msg.content["arrays"], data, partition, epochs=int(cfg["local-epochs"]),
                            lr=float(cfg["lr"]), batch_size=int(cfg["batch-size"]),
                            seed=int(cfg["seed"]) * 100_003 + rnd * 1_009 + partition)
    return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord({"num-examples": n})}), reply_to=msg)
