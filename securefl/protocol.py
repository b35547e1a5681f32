"""The party protocol every scheme implements, and the one driver that runs it in-process.

A round is driven by one `Coordinator` (the server; AdditiveSharing's leader) and answered by
`Party` objects (clients, AdditiveSharing's helpers, the HE key holder). Every message is bytes:

    outbox = coordinator.start()                  # {party: message} of the first stage
    while outbox:
        replies = {p: parties[p].handle(m, update) for p, m in outbox.items()}   # over any transport
        outbox = coordinator.step(replies)         # a missing reply: that party dropped at this stage
    output = coordinator.result()

`coordinator.stage` names the stage whose messages `outbox` holds (a transport's per-stage
deadline; a client that misses it has dropped at that stage). A client calls `update()` exactly
once, at the stage that needs its model update, so training can run after the key setup. Every
party's state survives a process restart through `state_dict()` and its class's `from_state`.

`run_round` is the in-process transport: it routes every message through a `Simulation` (which
counts bytes and seconds per party and applies the `dropped` schedule) and is what
`Aggregator.aggregate` runs; the Flower integration runs the same objects over a Flower Grid.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from securefl.codec import Layout
from securefl.errors import AggregatorError, DropoutError, ProtocolError, SecureFLError
from securefl.simulation import Simulation
from securefl.wire import PartyId, Role

Update = tuple[object, float]  # one client's update (a tensor, a list/tuple of tensors, a state_dict) and its weight
UpdateSource = Callable[[], Update]


@dataclass
class Totals:
    """What the coordinator learns from a round, before it is rebuilt into the update's structure."""

    floats: np.ndarray  # sum over included clients of normalised weight x clipped update (DP noise included)
    ints: np.ndarray  # exact sum of integer tensors over included clients
    weight: float  # sum of normalised weights over included clients
    included: list[int]
    params: dict = field(default_factory=dict)  # the round's public parameters, for the report
    epsilon: float | None = None  # cumulative epsilon of the coordinator's accountant after this round


class Party(ABC):
    """A party that answers the coordinator: a client, an AdditiveSharing helper, the HE key holder."""

    id: PartyId

    @abstractmethod
    def handle(self, message: bytes, update: UpdateSource | None = None) -> bytes:
        """This party's reply to one message of the coordinator. Clients call `update()` once, at the
        stage that needs their input. Malformed, replayed or out-of-order messages raise ProtocolError."""

    @abstractmethod
    def state_dict(self) -> bytes:
        """This party's state between messages (its own secrets included), for its own storage only."""


class Coordinator(ABC):
    """The party that drives a round: sends each stage's messages and takes the replies."""

    id: PartyId
    stage: str  # the stage of the messages last returned by start() or step()
    input_stage: str  # the stage whose client messages ask for the update (a transport attaches the model to it)

    @abstractmethod
    def start(self) -> dict[PartyId, bytes]:
        """The first stage's messages."""

    @abstractmethod
    def step(self, replies: Mapping[PartyId, bytes]) -> dict[PartyId, bytes]:
        """Take the replies to the last messages (a party without a reply dropped); return the next
        stage's messages, or {} once the round is finished."""

    @abstractmethod
    def result(self) -> Totals:
        """What the round released to the coordinator (after the last step)."""


def rebuild(totals: Totals, layout: Layout, weight_bound: float) -> tuple[object, object]:
    """The weighted mean and the sum, in the update's structure, of what a coordinator released.

    Floats: the mean divides by the included weights, the sum multiplies back by the weight bound;
    integer tensors: exact sums, and their mean rounded half up. DropoutError when nothing was included.
    """
    if not totals.included:
        raise DropoutError("no client's input reached the aggregate")
    if totals.weight <= 0:
        raise DropoutError("the included clients' weights sum to 0; no mean exists")
    import torch

    k = len(totals.included)
    mean_ints = (2 * totals.ints + k) // (2 * k)  # exact round-half-up of sum / k
    mean = layout.unflatten(totals.floats / totals.weight, mean_ints)
    total = layout.unflatten(totals.floats * weight_bound, totals.ints, int_dtype=torch.int64)
    return mean, total


def run_round(
    coordinator: Coordinator,
    parties: Mapping[PartyId, Party],
    sim: Simulation,
    update_of: Callable[[int], Update],
) -> Totals:
    """Run one round in-process: route every message through `sim`, drop clients on its schedule.

    A client dropped at a stage receives that stage's message and never answers again. A failure of
    a non-client party (helper, key holder) or of the coordinator ends the round with
    AggregatorError; a client's ProtocolError propagates (it names the client).
    """
    me = str(coordinator.id)
    with sim.clock(_phase(coordinator), me):
        outbox = _act(me, coordinator.start)
    while outbox:
        stage = coordinator.stage
        replies: dict[PartyId, bytes] = {}
        for pid, message in outbox.items():
            name = str(pid)
            sim.send(me, name, message)
            if pid.role == Role.CLIENT and not sim.active(pid.index, stage):
                continue
            party = parties.get(pid)
            if party is None:
                raise AggregatorError(f"{me} addressed {name}, which is not part of this round")
            with sim.clock(stage, name):
                if pid.role == Role.CLIENT:
                    reply = party.handle(message, lambda i=pid.index: update_of(i))
                else:
                    reply = _act(name, party.handle, message)
            replies[pid] = sim.send(name, me, reply)
        with sim.clock(stage, me):
            outbox = _act(me, coordinator.step, replies)
    with sim.clock("decode", me):
        return _act(me, coordinator.result)


def _phase(coordinator: Coordinator) -> str:
    return getattr(coordinator, "stage", "setup") or "setup"


def _act(who: str, fn: Callable, *args: object) -> object:
    """Run an aggregating party's step; anything but a securefl error becomes AggregatorError naming it."""
    try:
        return fn(*args)
    except (SecureFLError, ProtocolError):
        raise
    except Exception as e:  # a bug or library failure inside an aggregating party: the round has no result
        raise AggregatorError(f"{who} failed: {type(e).__name__}: {e}") from e
