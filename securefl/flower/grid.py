"""The server side: any securefl scheme's round run through a Flower Grid, under the strategy that sends it.

Flower's strategies (the Message API's `Strategy.start` and the legacy `DefaultWorkflow`) send a
training round through one call, `grid.send_and_receive(train messages)`, and hand the replies to
their own aggregation. `SecureGrid` wraps the Grid and catches that call: it runs the scheme's
coordinator stage by stage over the real Grid (each stage with its deadline from the round
configuration's `timeouts`; a node that misses it, or answers with an error, dropped at that stage)
and returns one reply per survivor holding the secure mean applied to the global model, with that
client's own clear metrics and weight. The strategy then averages n copies of the same model and
goes on unchanged: its sampling, configuration, metric aggregation and server optimiser (FedAdam,
FedYogi, FedAvgM, ...); securefl.flower.strategy wraps strategies around it.

Before a round the grid learns which node is which party (`securefl.flower.hello`) and offers only
registered client nodes to the strategy's sampling; helpers and the key holder are addressed only by
the coordinator. A round that cannot finish (too many dropouts, a missing helper or key holder, a
protocol failure) returns no replies, so the strategy keeps its model, as the in-process loop does;
`SecureGrid.rounds` holds every round's outcome and securefl Report (bytes per party, survivors,
dropouts, seconds, epsilon under DP).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from flwr.app import ArrayRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from securefl.aggregator import Aggregator
from securefl.deploy import aggregator_of
from securefl.errors import ConfigError, InputError, ProtocolError, SecureFLError
from securefl.flower import hello
from securefl.flower.records import (
    apply_mean,
    meta_of,
    only_array_record,
    payload_bytes,
    record_structure,
    stage_content,
    user_records,
)
from securefl.protocol import Coordinator, Totals
from securefl.report import Report
from securefl.report import Result as SecureResult
from securefl.schemes import scheme_class
from securefl.session import RoundConfig, new_session
from securefl.simulation import Simulation
from securefl.wire import PartyId, Role, peek

log = logging.getLogger(__name__)

DEFAULT_STAGE_TIMEOUT = 120.0  # seconds, for a stage the configuration gives no deadline (and no "default")
DEFAULT_INPUT_TIMEOUT = 3600.0  # the input stage (training) when neither the configuration nor the strategy sets one
HELLO_TIMEOUT = 120.0
POLL = 0.05  # seconds between pulls (Flower's own send_and_receive waits 3 s between pulls in a deployment)

StageHook = Callable[[int, str, list[str]], None]


@dataclass
class RoundRecord:
    """One secure round over Flower: its outcome and what it cost."""

    round: int
    clients: list[int]  # client indices the strategy sampled
    report: Report | None  # None when the round failed
    error: str | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)  # wall seconds per stage, Flower transport included
    train_seconds: dict[str, float] = field(default_factory=dict)  # client -> its train function's seconds (its word)
    failures: dict[str, str] = field(default_factory=dict)  # party -> why its reply was missing or refused

    def to_dict(self) -> dict:
        return {"round": self.round, "clients": self.clients, "error": self.error, "stage_seconds": self.stage_seconds,
                "train_seconds": self.train_seconds, "failures": self.failures,
                "report": None if self.report is None else self.report.to_dict()}


class SecureGrid(Grid):
    """A Grid whose train rounds run a securefl scheme (see the module docstring).

    config: the server's own copy of the round configuration (the scheme, the pinned directory, the
    model, the timeouts). aggregator: the scheme object whose DP accountant the rounds are charged to
    (the coordinator adds the noise) and that releases each round's mean and report; default: rebuilt
    from the configuration. weight_key: the metric the
    strategy weighs replies by (the legacy API's num_examples is recognised by itself). on_stage:
    called as on_stage(round, stage, parties) before each stage's messages go out (progress, tests).
    """

    def __init__(self, grid: Grid, config: RoundConfig, *, aggregator: Aggregator | None = None,
                 session: bytes | None = None, weight_key: str = "num-examples", poll: float = POLL,
                 on_stage: StageHook | None = None):
        self._grid = grid
        self.weight_key = weight_key
        self.on_stage = on_stage
        self.config = config
        self.scheme = scheme_class(config.scheme)
        self.aggregator = aggregator if aggregator is not None else aggregator_of(config)
        if self.aggregator.scheme != config.scheme or (self.aggregator.dp is None) != (config.dp is None):
            raise ConfigError(f"aggregator {self.aggregator.scheme} (dp {self.aggregator.dp}) does not match the round "
                              f"configuration's scheme {config.scheme} (dp {config.dp})")
        self.session = session if session is not None else new_session()
        self.poll = poll
        self.round = 0
        self._meta = {"config": config.fingerprint}  # every message names the configuration it runs under
        self.nodes: dict[PartyId, int] = {}  # party -> the node that proved to hold its key
        self._refused: set[int] = set()
        self.rounds: list[RoundRecord] = []

    # ---------------------------------------------------------------- the Grid interface

    def set_run(self, run) -> None:  # noqa: ANN001 (flwr.common.typing.Run)
        self._grid.set_run(run)

    @property
    def run(self):  # noqa: ANN201
        return self._grid.run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return self._grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self._grid.pull_messages(message_ids)

    def get_node_ids(self) -> Iterable[int]:
        """The connected nodes registered as clients: what a strategy samples from (never a helper or key holder)."""
        live = set(self._grid.get_node_ids())
        if live - set(self.nodes.values()) - self._refused:
            self.register(live)
        return [n for p, n in sorted(self.nodes.items()) if p.role == Role.CLIENT and n in live]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """A train round runs the secure protocol; any other messages (evaluate, query) pass through."""
        msgs = list(messages)
        if not msgs or any(m.metadata.message_type.split(".", 1)[0] != MessageType.TRAIN for m in msgs):
            return self._grid.send_and_receive(msgs, timeout=timeout)
        return self._secure_round(msgs, timeout)

    # ---------------------------------------------------------------- registration

    def register(self, nodes: Iterable[int] | None = None, *, wait: bool = False) -> dict[PartyId, int]:
        """Send a hello to every connected node not yet registered or refused; with wait, keep going (up to the
        hello timeout) until every helper and the key holder of the directory has registered."""
        deadline = time.monotonic() + self.config.timeouts.get(hello.HELLO_STAGE, HELLO_TIMEOUT)
        needed = {p for p in self.config.directory if p.role != Role.CLIENT}
        while True:
            live = set(self._grid.get_node_ids()) if nodes is None else set(nodes)
            new = sorted(live - set(self.nodes.values()) - self._refused)
            if new:
                self._hello(new, max(deadline - time.monotonic(), 1.0))
            nodes = None
            if not wait or needed <= set(self.nodes) or time.monotonic() >= deadline:
                break
            time.sleep(min(1.0, max(deadline - time.monotonic(), 0.0)))
        missing = sorted(str(p) for p in needed - set(self.nodes))
        if wait and missing:
            log.warning("%s did not register within the hello timeout", ", ".join(missing))
        return dict(self.nodes)

    def _hello(self, node_ids: list[int], timeout: float) -> None:
        run_id = self._grid.run.run_id
        sent = {}
        for node in node_ids:
            nonce = os.urandom(hello.NONCE_BYTES)
            data = hello.request(self.config, self.session, nonce, run_id, node)
            sent[node] = (nonce, Message(stage_content(hello.HELLO_STAGE, data, self._meta), dst_node_id=node,
                                         message_type=MessageType.TRAIN, group_id="securefl-hello", ttl=timeout))
        got = self._exchange([m for _, m in sent.values()], timeout)
        for node, (nonce, m) in sent.items():
            r = got.get(m.metadata.message_id)
            if r is None:
                continue  # retried the next time the strategy looks for nodes
            try:
                if r.has_error():
                    raise ProtocolError(f"node {node} refused the hello: {r.error.reason}")
                party = hello.verify(payload_bytes(r.content, f"server: hello of node {node}"), self.config,
                                     self.session, nonce, run_id, node)
            except ProtocolError as e:
                log.warning("%s", e)
                self._refused.add(node)
                continue
            old = self.nodes.get(party)
            if old is not None and old != node:
                log.info("%s moved from node %d to node %d", party, old, node)
            self.nodes[party] = node
            log.debug("node %d is %s", node, party)

    # ---------------------------------------------------------------- transport

    def _exchange(self, messages: list[Message], timeout: float) -> dict[str, Message]:
        """Push, then pull until every reply is in or the deadline passes; replies keyed by the instruction's id
        (an error reply made by the SuperLink comes from the SuperLink, not the node)."""
        ids = [i for i in self._grid.push_messages(messages) if i]
        pending, got = set(ids), {}
        deadline = time.monotonic() + timeout
        while pending:
            for r in self._grid.pull_messages(list(pending)):
                rid = r.metadata.reply_to_message_id
                if rid in pending:
                    got[rid] = r
                    pending.discard(rid)
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(self.poll)
        return got

    def _deadline(self, stage: str, input_stage: bool, strategy_timeout: float | None) -> float:
        t = self.config.timeouts
        if stage in t:
            return t[stage]
        if input_stage:
            return strategy_timeout if strategy_timeout is not None else DEFAULT_INPUT_TIMEOUT
        return t.get("default", DEFAULT_STAGE_TIMEOUT)

    # ---------------------------------------------------------------- one secure round

    def _secure_round(self, msgs: list[Message], timeout: float | None) -> list[Message]:
        self.round += 1
        party_of = {n: p for p, n in self.nodes.items()}
        instructions: dict[PartyId, Message] = {}
        for m in msgs:
            party = party_of.get(m.metadata.dst_node_id)
            if party is None or party.role != Role.CLIENT:
                log.warning("the strategy addressed node %d, which is not a registered client; skipped",
                            m.metadata.dst_node_id)
                continue
            instructions[party] = m
        record = RoundRecord(self.round, sorted(p.index for p in instructions), None)
        self.rounds.append(record)
        if not instructions:
            record.error = "no registered client was sampled"
            return []
        try:
            return self._run_round(instructions, timeout, record)
        except SecureFLError as e:
            record.error = f"{type(e).__name__}: {e}"
        except Exception as e:  # a bug or library failure in the coordinator: the round has no result
            record.error = f"{type(e).__name__}: {e}"
            log.exception("round %d failed", self.round)
        log.warning("round %d failed, the model stays as it was: %s", self.round, record.error)
        return []

    def _global_model(self, instructions: dict[PartyId, Message]) -> tuple[str, ArrayRecord, str]:
        """The global model every instruction carries (checked to be one model), its key, and the weight key."""
        first = next(iter(instructions.values()))
        key, start = only_array_record(first.content, "the strategy's train instruction")
        blobs = [a.data for a in start.values()]
        for p, m in instructions.items():
            k, rec = only_array_record(m.content, "the strategy's train instruction")
            if rec is not start and (k != key or [a.data for a in rec.values()] != blobs):
                raise InputError(f"the strategy sent {p} another model than the other clients; securefl averages "
                                 "updates against one global model")
        layout = self.config.model.layout()
        try:
            layout.check(record_structure(start, layout, "the global model"), 0)
        except InputError as e:
            raise ConfigError(f"the strategy's model does not match the round configuration's: {e}") from None
        legacy = any(k.startswith("fitins.") for k in first.content.keys())
        return key, start, "num_examples" if legacy else self.weight_key

    def _run_round(self, instructions: dict[PartyId, Message], timeout: float | None,
                   record: RoundRecord) -> list[Message]:
        _, start, weight_key = self._global_model(instructions)
        rnd = self.round
        clients = sorted(p.index for p in instructions)
        dp = self.aggregator.dp
        coordinator: Coordinator = self.scheme.coordinator(self.config, self.session, rnd, clients,
                                                           accountant=None if dp is None else dp.accountant)
        me = str(coordinator.id)
        sim = Simulation(self.config.scheme, len(clients), self.scheme.stages, self.scheme.input_stage)
        message_type = next(iter(instructions.values())).metadata.message_type
        clear: dict[PartyId, tuple[RecordDict, str]] = {}
        dropped: dict[int, str] = {}
        with sim.clock(getattr(coordinator, "stage", None) or "setup", me):
            outbox = coordinator.start()
        while outbox:
            stage = coordinator.stage
            is_input = stage == coordinator.input_stage
            deadline = self._deadline(stage, is_input, timeout)
            if self.on_stage is not None:
                self.on_stage(rnd, stage, [str(p) for p in outbox])
            sent: dict[PartyId, Message] = {}
            for pid, data in outbox.items():
                sim.send(me, str(pid), data)
                node = self.nodes.get(pid)
                if node is None:
                    record.failures.setdefault(str(pid), f"not registered (at {stage})")
                    continue
                base = instructions[pid].content if is_input and pid in instructions else None
                extra = self._meta | ({"weight-key": weight_key} if base is not None else {})
                sent[pid] = Message(stage_content(stage, data, extra, base), dst_node_id=node,
                                    message_type=message_type, group_id=f"securefl-{rnd}", ttl=deadline)
            t0 = time.perf_counter()
            got = self._exchange(list(sent.values()), deadline)
            record.stage_seconds[stage] = time.perf_counter() - t0
            replies: dict[PartyId, bytes] = {}
            for pid, m in sent.items():
                try:
                    data, meta = _reply(got.get(m.metadata.message_id), pid, coordinator.id, stage, deadline)
                except ProtocolError as e:
                    record.failures.setdefault(str(pid), str(e))
                    continue
                replies[pid] = sim.send(str(pid), me, data)
                _charge(sim, stage, str(pid), meta)
                if isinstance(meta.get("train-seconds"), float):
                    record.train_seconds[str(pid)] = float(meta["train-seconds"])
                if is_input and "arrays-key" in meta:
                    clear[pid] = _clear_reply(got[m.metadata.message_id], str(meta["arrays-key"]))
            for pid in outbox:
                if pid.role == Role.CLIENT and pid not in replies:
                    dropped.setdefault(pid.index, stage)
            with sim.clock(stage, me):
                outbox = coordinator.step(replies)
        with sim.clock("decode", me):
            totals = coordinator.result()
        sim.dropped = dict(sorted(dropped.items()))
        result = _release(self.aggregator, self.config, sim, totals, rnd)
        record.report = result.report
        new = apply_mean(start, result.mean, self.config.model.layout())
        out = []
        for i in totals.included:
            pid = PartyId.client(i)
            if pid not in clear:
                raise ProtocolError(f"{me}: {pid}'s input is in the sum, but its input-stage reply carried no metrics")
            rd, key = clear[pid]
            rd[key] = ArrayRecord(dict(new.items()))  # one record per reply: the legacy workflow empties what it reads
            out.append(Message(rd, reply_to=instructions[pid]))
        log.debug("round %d: %d of %d clients in the aggregate%s", rnd, len(out), len(clients),
                 f", dropped {sim.dropped}" if sim.dropped else "")
        return out


def _reply(r: Message | None, pid: PartyId, coordinator: PartyId, stage: str, deadline: float
           ) -> tuple[bytes, dict]:
    """A node's reply to a stage message; ProtocolError (the party drops at this stage) when missing or wrong."""
    if r is None:
        raise ProtocolError(f"no reply within {deadline:g} s at {stage}")
    if r.has_error():
        reason = " ".join(str(r.error.reason).split())
        raise ProtocolError(f"error reply at {stage}: {reason if len(reason) <= 300 else '...' + reason[-300:]}")
    meta = meta_of(r.content)
    if meta is None or str(meta.get("stage")) != stage:
        raise ProtocolError(f"reply at {stage} is not a securefl reply to that stage")
    data = payload_bytes(r.content, f"server: reply of {pid}")
    h = peek(data, f"server: reply of {pid}")
    if h.sender is not None and (h.sender != pid or h.receiver != coordinator):
        raise ProtocolError(f"reply at {stage} claims to be from {h.sender} to {h.receiver}")
    return data, dict(meta)


def _charge(sim: Simulation, stage: str, party: str, meta: dict) -> None:
    """A party's own seconds at a stage, as it reported them (its training excluded), into the report."""
    seconds = meta.get("seconds")
    if isinstance(seconds, float) and 0 <= seconds < 1e6:
        sim.seconds[stage][party.split("/")[0]] += seconds
        sim.party_seconds[party] += seconds


def _clear_reply(r: Message, arrays_key: str) -> tuple[RecordDict, str]:
    """A client's clear records (its metrics and weight) from its input-stage reply, and its model's record key."""
    rd = user_records(r.content)
    if arrays_key in rd or arrays_key.startswith("securefl."):
        raise ProtocolError(f"input reply names record {arrays_key!r} for its model, which is taken")
    return rd, arrays_key


def _release(aggregator: Aggregator, config: RoundConfig, sim: Simulation, totals: Totals, round_: int
             ) -> SecureResult:
    """The coordinator's totals (DP noise and accounting done by the coordinator) as the in-process driver releases
    them (Aggregator.aggregate): the mean in the model's structure, and the report."""
    params = {"clip": config.clip, "frac_bits": config.frac_bits, "weight_bound": config.weight_bound, "round": round_,
              **totals.params}
    return aggregator.release(config.model.layout(), config.weight_bound, sim, totals, 0, params)
