"""A Flower Grid that runs ClientApps in this process: the securefl Flower tests without Ray or SuperNodes.

Every message and every node Context is serialised through Flower's own protobuf serde on the way
in and out, as the real engines do, so a node keeps nothing between messages but its Context, and a
mod that changes a message cannot change the sender's copy. A ClientApp that raises answers with an
error reply (as Flower's engines do); `silent` nodes never answer (a timeout); `hooks` let a test
make one node fail at one securefl stage.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common import serde
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

RUN_ID = 7
SERVER_NODE = 1


def enter_run(run_id: int = RUN_ID) -> None:
    """Let this process build Messages as the ServerApp of run `run_id` (Flower's engines do this for a ServerApp)."""
    TaskIdentity.run_id = run_id
    TaskIdentity.task_id = 1
    TaskIdentity.node_id = SERVER_NODE


def _copy(message: Message) -> Message:
    return serde.message_from_proto(serde.message_to_proto(message))


class LocalGrid(Grid):
    """Nodes 101, 102, ... running `app`, each with node config {"partition-id": i, "num-partitions": n} (+ extra)."""

    def __init__(self, app: ClientApp, num_nodes: int, node_config: Callable[[int], dict] | None = None,
                 run_config: dict | None = None):
        self.app = app
        self._run = Run.create_empty(RUN_ID)
        self.contexts: dict[int, bytes] = {}
        for i in range(num_nodes):
            nc = {"partition-id": i, "num-partitions": num_nodes, **(node_config(i) if node_config else {})}
            ctx = Context(run_id=RUN_ID, node_id=101 + i, node_config=nc, state=RecordDict(),
                          run_config=dict(run_config or {}))
            self.contexts[101 + i] = serde.context_to_proto(ctx).SerializeToString()
        self.silent: set[int] = set()  # nodes that never answer
        self.gone: set[int] = set()  # nodes no longer listed
        self.hooks: list[Callable[[int, Message], None]] = []  # called before a node runs a message; may raise
        self.delivered: list[tuple[int, Message]] = []  # (node, message as the node received it)
        self._replies: dict[str, Message] = {}

    def node(self, partition: int) -> int:
        return 101 + partition

    def context(self, node: int) -> Context:
        from flwr.proto.message_pb2 import Context as ProtoContext

        proto = ProtoContext()
        proto.ParseFromString(self.contexts[node])
        return serde.context_from_proto(proto)

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return Message(content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id, ttl=ttl)

    def get_node_ids(self) -> Iterable[int]:
        return [n for n in self.contexts if n not in self.gone]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for m in messages:
            m.metadata.__dict__["_message_id"] = uuid.uuid4().hex  # as InMemoryGrid does
            ids.append(m.metadata.message_id)
            node = m.metadata.dst_node_id
            if node in self.silent or node in self.gone or node not in self.contexts:
                continue
            received = _copy(m)
            self.delivered.append((node, _copy(m)))
            ctx = self.context(node)
            try:
                for hook in self.hooks:
                    hook(node, received)
                if node in self.silent:  # a hook silenced it
                    continue
                reply = self.app(received, ctx)
            except Exception as e:  # Flower's engines turn a raising ClientApp into an error reply
                reply = Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, f"{type(e).__name__}: {e}"),
                                reply_to=received)
            else:
                self.contexts[node] = serde.context_to_proto(ctx).SerializeToString()
            self._replies[m.metadata.message_id] = _copy(reply)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))
