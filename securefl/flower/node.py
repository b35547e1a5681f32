"""The node side: a ClientApp mod that runs this node's securefl party, and where a node finds its keys.

    app = ClientApp(mods=[secure_mod()])          # first in the list: Flower's clipping mods go after it

    @app.train()
    def train(msg, context): ...                  # the user's train function, unchanged

Every securefl stage reaches the mod as a train message carrying `securefl.meta`. The mod restores
the party from `Context.state` (bytes from the party's `state_dict()`, the only memory a node keeps
between messages: in a deployment each message runs in a fresh process), hands it the message, and
stores its new state. At the scheme's input stage the party asks for its update once: the mod then
calls the user's train function with the strategy's own instruction (the global model and config),
and gives the party the trained model minus the global model and the weight the strategy reads
(`num-examples` by default). Only the party's bytes leave the node, with the user's metrics and
weight in the clear (as in Flower's SecAgg+); the trained model never does.

A node configured for securefl refuses a plain train message (a server bypassing securefl would get
the model in the clear); helpers and the key holder answer securefl messages only.

Where the node's identity and configuration come from (`NodeSetup`):
- a deployment: the SuperNode's own node config, `securefl-key` (its PEM file), `securefl-config`
  (the RoundConfig JSON), optionally `securefl-role` (checked against the key) and
  `securefl-passphrase-env` (the environment variable holding the key's passphrase);
- a simulation: `simulation_resolver(folder)` maps Flower's partition-id to a party of the federation
  written by `write_federation` (clients first, then helpers, then the key holder); with `flwr run`,
  `run_config_resolver` takes that folder from the run config `securefl-federation`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, RecordDict

from securefl.aggregator import Aggregator
from securefl.deploy import CONFIG_FILE, key_file
from securefl.errors import ConfigError, InputError, ProtocolError
from securefl.flower import hello
from securefl.flower.federation import simulation_parties
from securefl.flower.records import (
    STATE,
    meta_of,
    model_delta,
    only_array_record,
    payload_bytes,
    stage_content,
    user_records,
)
from securefl.keys import Identity
from securefl.schemes import scheme_class
from securefl.session import RoundConfig
from securefl.wire import PartyId, Role, peek

log = logging.getLogger(__name__)

KEY = "securefl-key"
CONFIG = "securefl-config"
ROLE = "securefl-role"
PASSPHRASE_ENV = "securefl-passphrase-env"
FEDERATION = "securefl-federation"  # run config: a simulated federation's folder (flwr run with a simulation)


@dataclass(frozen=True)
class NodeSetup:
    """What a node holds: its own identity key and its own copy of the round configuration."""

    identity: Identity
    config: RoundConfig

    @property
    def party(self) -> PartyId:
        return self.identity.party

    @property
    def scheme(self) -> type[Aggregator]:
        return scheme_class(self.config.scheme)


Resolver = Callable[[Context], "NodeSetup | Sequence[NodeSetup]"]  # several: a node in several federations


@lru_cache(maxsize=64)
def _load(key: str, config: str, passphrase: str | None, mtimes: tuple[float, float]) -> NodeSetup:
    try:
        return NodeSetup(Identity.load(key, passphrase), RoundConfig.load(config))
    except FileNotFoundError as e:
        raise ConfigError(f"securefl node: {e.filename} does not exist") from None


def load_setup(key: str | os.PathLike, config: str | os.PathLike, passphrase: str | None = None) -> NodeSetup:
    """A node's identity and configuration from its files (cached while the files are unchanged)."""
    key, config = str(key), str(config)
    try:
        mtimes = (Path(key).stat().st_mtime, Path(config).stat().st_mtime)
    except FileNotFoundError as e:
        raise ConfigError(f"securefl node: {e.filename} does not exist") from None
    return _load(key, config, passphrase, mtimes)


def node_config_resolver(context: Context) -> NodeSetup:
    """A deployed node: its key and configuration files named in its own node config."""
    nc = context.node_config
    if KEY not in nc or CONFIG not in nc:
        raise ConfigError(f"securefl node: its node config needs {KEY}=\"<path to its .pem>\" and "
                          f"{CONFIG}=\"<path to config.json>\" (flower-supernode --node-config); got {sorted(nc)}")
    passphrase = None
    if PASSPHRASE_ENV in nc:
        passphrase = os.environ.get(str(nc[PASSPHRASE_ENV]))
        if passphrase is None:
            raise ConfigError(f"securefl node: environment variable {nc[PASSPHRASE_ENV]} (its key's passphrase) is "
                              "not set")
    setup = load_setup(str(nc[KEY]), str(nc[CONFIG]), passphrase)
    if ROLE in nc and str(nc[ROLE]) != setup.party.kind:
        raise ConfigError(f"securefl node: {ROLE}={nc[ROLE]} but its key is {setup.party}'s")
    return setup


def simulation_resolver(*folders: str | os.PathLike) -> Resolver:
    """A simulated node: partition-id p is the p-th party (see simulation_parties) of the federation in each folder
    (several folders: the node takes part in each federation, and answers each server with the matching one)."""
    paths = [str(f) for f in folders]
    if not paths:
        raise ConfigError("simulation_resolver needs the folder of at least one federation")

    def one(folder: str, p: int) -> NodeSetup:
        config_path = Path(folder) / CONFIG_FILE
        parties = simulation_parties(load_config(config_path))
        if not 0 <= p < len(parties):
            raise ConfigError(f"securefl simulation: partition-id {p} is not one of the federation's "
                              f"{len(parties)} parties (run the simulation with num_supernodes={len(parties)})")
        return load_setup(key_file(folder, parties[p]), config_path)

    def resolve(context: Context) -> NodeSetup | list[NodeSetup]:
        p = int(context.node_config.get("partition-id", -1))
        setups = [one(folder, p) for folder in paths]
        return setups[0] if len(setups) == 1 else setups

    return resolve


@lru_cache(maxsize=16)
def _config_cached(path: str, mtime: float) -> RoundConfig:
    return RoundConfig.load(path)


def load_config(path: str | os.PathLike) -> RoundConfig:
    """A RoundConfig from its JSON file (cached while the file is unchanged)."""
    try:
        return _config_cached(str(path), Path(path).stat().st_mtime)
    except FileNotFoundError:
        raise ConfigError(f"securefl: round configuration {path} does not exist") from None


def run_config_resolver(context: Context) -> NodeSetup:
    """A node of a simulation started with `flwr run` (Flower gives simulated nodes no config of their own): the
    party of its partition-id in the federation whose folder the run config `securefl-federation` names. That
    folder is chosen by whoever starts the run, so a deployment must never use this: its nodes name their own
    files (node_config_resolver)."""
    if FEDERATION not in context.run_config or not str(context.run_config[FEDERATION]):
        raise ConfigError(f"securefl simulation: set the run config {FEDERATION} to the folder of the federation")
    return simulation_resolver(str(context.run_config[FEDERATION]))(context)


def _category(message: Message) -> str:
    return message.metadata.message_type.split(".", 1)[0]


def secure_mod(resolver: Resolver | None = None, *, allow_plain_train: bool = False
               ) -> Callable[[Message, Context, Callable[[Message, Context], Message]], Message]:
    """The ClientApp mod that runs this node's securefl party (see the module docstring).

    resolver: where the node's identity and configuration come from (default: node_config_resolver, the
    SuperNode's own node config).
    allow_plain_train: let train messages that do not come through securefl reach the user's function
    (its model then leaves the node in the clear); off by default.
    """
    resolve = resolver or node_config_resolver

    def securefl_mod(msg: Message, context: Context, call_next: Callable[[Message, Context], Message]) -> Message:
        meta = meta_of(msg.content)
        setups = resolve(context)
        setups = [setups] if isinstance(setups, NodeSetup) else list(setups)
        if meta is None:
            setup = setups[0]
            if setup.party.role != Role.CLIENT:
                raise ProtocolError(f"{setup.party}: takes part in securefl rounds only, refusing a "
                                    f"{msg.metadata.message_type} message")
            if _category(msg) == "train" and not allow_plain_train:
                raise ProtocolError(f"{setup.party}: refusing a train message that does not come through securefl "
                                    "(its model would leave the node in the clear)")
            return call_next(msg, context)
        return _handle(msg, context, call_next, _matching(setups, meta), str(meta["stage"]), meta)

    return securefl_mod


def _matching(setups: list[NodeSetup], meta: ConfigRecord) -> NodeSetup:
    """The node's setup whose round configuration the server's message names."""
    fingerprint = bytes(meta.get("config", b""))
    for setup in setups:
        if setup.config.fingerprint == fingerprint:
            return setup
    raise ProtocolError(f"{setups[0].party}: the server runs round configuration {fingerprint.hex()[:16] or '(none)'}, "
                        f"this node holds {', '.join(s.config.fingerprint.hex()[:16] for s in setups)}; refusing")


def _handle(msg: Message, context: Context, call_next: Callable[[Message, Context], Message], setup: NodeSetup,
            stage: str, meta: ConfigRecord) -> Message:
    t0 = time.perf_counter()
    me = str(setup.party)
    data = payload_bytes(msg.content, me)
    if stage == hello.HELLO_STAGE:
        out = hello.answer(data, setup.config, setup.identity, msg.metadata.run_id, context.node_id)
        return Message(stage_content(stage, out), reply_to=msg)
    header = peek(data, f"{me}: {stage} message")
    party = setup.scheme.party(setup.config, setup.identity, _restore(context, setup, header.session, header.round))
    trained: dict[str, object] = {}

    def update() -> tuple[object, float]:
        if trained:
            raise ProtocolError(f"{me}: asked for its update twice in round {header.round}")
        instruction = user_records(msg.content)
        if not instruction.array_records:
            raise ProtocolError(f"{me}: asked for its update at stage {stage}, but the message carries no model")
        _, start = only_array_record(instruction, f"{me}: train instruction")
        weight_key = str(meta.get("weight-key", "num-examples"))
        msg.content = instruction  # the user's function sees the strategy's records only
        t1 = time.perf_counter()
        reply = call_next(msg, context)
        trained["seconds"] = time.perf_counter() - t1
        if reply.has_error():
            raise InputError(f"{me}: the train function failed: {reply.error.reason}")
        key, model = only_array_record(reply.content, f"{me}: train reply")
        weight = next((mr[weight_key] for mr in reply.content.metric_records.values() if weight_key in mr), None)
        if weight is None:
            raise InputError(f"{me}: the train reply has no metric {weight_key!r} (the strategy weighs by it)")
        trained["key"] = key
        trained["clear"] = RecordDict({k: v for k, v in reply.content.items() if k != key})
        return model_delta(model, start, setup.config.model.layout(), me), float(weight)

    out = party.handle(data, update if setup.party.role == Role.CLIENT else None)
    clipped = getattr(party, "clipped", 0)
    if trained and clipped:
        log.warning("%s: %d values of its update were clipped to [-%g, %g]", me, clipped, setup.config.clip,
                    setup.config.clip)
    _store(context, setup, header.session, header.round, party.state_dict())
    extra: dict[str, object] = {"seconds": time.perf_counter() - t0 - float(trained.get("seconds", 0.0))}
    if trained:
        extra |= {"arrays-key": str(trained["key"]), "train-seconds": float(trained["seconds"])}
    return Message(stage_content(stage, out, extra, trained.get("clear")), reply_to=msg)


def _restore(context: Context, setup: NodeSetup, session: bytes, round_: int) -> bytes | None:
    """The party's saved state, unless it belongs to another configuration or party; refuses a stale round."""
    rec = context.state.config_records.get(STATE)
    if rec is None:
        return None
    if bytes(rec["fingerprint"]) != setup.config.fingerprint or str(rec["party"]) != str(setup.party):
        log.info("%s: discarding saved securefl state of another configuration or party", setup.party)
        return None
    if bytes(rec["session"]) == session and round_ < int(rec["round"]):
        raise ProtocolError(f"{setup.party}: message of round {round_} after it took part in round {rec['round']} "
                            "of this session (stale or replayed)")
    return bytes(rec["blob"])


def _store(context: Context, setup: NodeSetup, session: bytes, round_: int, blob: bytes) -> None:
    context.state[STATE] = ConfigRecord({"party": str(setup.party), "fingerprint": setup.config.fingerprint,
                                         "session": bytes(session), "round": int(round_), "blob": bytes(blob)})
