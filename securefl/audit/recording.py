"""Recorded rounds for the audit: every message a simulated round routes, on a copy of the aggregator whose DP
budget stays untouched."""

from __future__ import annotations

import copy
from dataclasses import dataclass

from securefl import wire
from securefl.aggregator import Aggregator
from securefl.dp import Accountant, Mechanism
from securefl.errors import ProtocolError
from securefl.report import Result
from securefl.simulation import Simulation


@dataclass(frozen=True)
class Message:
    """One recorded message: who sent it to whom, its wire.Kind name ("unframed" without a securefl header), its
    bytes."""

    src: str
    dst: str
    kind: str
    payload: bytes

    @property
    def body(self) -> bytes:
        """The payload after its securefl header (all of it when it has none)."""
        try:
            return self.payload[wire.peek(self.payload).size:]
        except ProtocolError:
            return self.payload


class RecordingSimulation(Simulation):
    """A Simulation that also keeps every message it routes."""

    def __init__(self, *args: object, **kwargs: object):
        super().__init__(*args, **kwargs)
        self.transcript: list[Message] = []

    def send(self, src: str, dst: str, payload: bytes) -> bytes:
        try:
            kind = wire.Kind(wire.peek(payload).kind).name
        except ProtocolError:
            kind = "unframed"
        except ValueError:  # a securefl header with a kind outside the registry
            kind = "unregistered"
        self.transcript.append(Message(str(src), str(dst), kind, bytes(payload)))
        return super().send(src, dst, payload)


def fresh_copy(aggregator: Aggregator) -> Aggregator:
    """A copy of the aggregator whose mechanism charges a fresh accountant (the real budget stays untouched)."""
    agg = copy.deepcopy(aggregator)
    if agg.dp is not None:
        agg.dp = Mechanism.from_dict(aggregator.dp.to_dict(), accountant=Accountant())
    return agg


def record_round(aggregator: Aggregator, updates: list, weights: list | None = None,
                 dropped: object = None) -> tuple[Result, list[Message]]:
    """Run one round on a copy of the aggregator (its DP budget untouched) and return (result, transcript)."""
    agg = fresh_copy(aggregator)
    sims: list[RecordingSimulation] = []

    class _Recorder(RecordingSimulation):
        def __init__(self, *a: object, **k: object):
            super().__init__(*a, **k)
            sims.append(self)

    agg.simulation_class = _Recorder
    result = agg.aggregate(updates, weights=weights, dropped=dropped)
    return result, sims[-1].transcript
