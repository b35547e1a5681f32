"""In-process federation: routes bytes between real party objects, counts and times them.

A scheme's driver creates its party objects, moves every message through Simulation.send (so
every byte is counted for its sender and receiver), wraps each party's work in
Simulation.clock (seconds per phase and party kind), and asks Simulation.active whether a
client still takes part in a stage (the `dropped` option, applied stage by stage).
"""

from __future__ import annotations

import os
import time
import zlib
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import numpy as np

from securefl.errors import InputError, ProtocolError
from securefl.report import Report


def normalize_dropped(
    dropped: Mapping[int, str] | Sequence[int] | None,
    n_clients: int,
    stages: Sequence[str],
    input_stage: str,
) -> dict[int, str]:
    """Validate `dropped` into {client index: stage}; a plain list means `input_stage`."""
    if dropped is None:
        return {}
    if isinstance(dropped, Mapping):
        items = list(dropped.items())
    elif isinstance(dropped, (list, tuple, set, frozenset, range)):
        items = [(i, input_stage) for i in dropped]
    else:
        raise InputError(f"dropped must be a mapping index -> stage or a list of indices, got {type(dropped).__name__}")
    out: dict[int, str] = {}
    for i, stage in items:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < n_clients:
            raise InputError(f"dropped: client index {i!r} is not in [0, {n_clients})")
        if stage not in stages:
            raise InputError(f"dropped: client {i}: unknown stage {stage!r}; stages are {list(stages)}")
        if int(i) in out:
            raise InputError(f"dropped: client {i} listed twice")
        out[int(i)] = stage
    return out


class Simulation:
    """Byte router, stopwatch and dropout schedule of one simulated round."""

    def __init__(
        self,
        scheme: str,
        n_clients: int,
        stages: Sequence[str],
        input_stage: str,
        dropped: Mapping[int, str] | Sequence[int] | None = None,
        seed: int | None = None,
    ):
        self.scheme = scheme
        self.n_clients = n_clients
        self.stages = tuple(stages)
        self.dropped = normalize_dropped(dropped, n_clients, self.stages, input_stage)
        self.session = os.urandom(16)  # public session id; unique per round
        self.bytes_sent: dict[str, int] = defaultdict(int)
        self.bytes_received: dict[str, int] = defaultdict(int)
        self.seconds: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.party_seconds: dict[str, float] = defaultdict(float)
        self._entropy = np.random.SeedSequence(seed).entropy

    def rng(self, party: str) -> np.random.Generator:
        """Simulation randomness of one party (rounding, drop schedules): never key material or DP noise, which
        come from the OS CSPRNG (securefl.dp.sampler); the DP accounting assumes nothing of the rounding."""
        key = (zlib.crc32(party.encode()),)
        return np.random.default_rng(np.random.SeedSequence(self._entropy, spawn_key=key))

    def active(self, client: int, stage: str) -> bool:
        """Whether the client still sends in `stage` (it drops at its dropped stage and stays gone)."""
        d = self.dropped.get(client)
        return d is None or self.stages.index(stage) < self.stages.index(d)

    def send(self, src: str, dst: str, payload: bytes) -> bytes:
        """Deliver one message, counting its bytes for both ends."""
        if not isinstance(payload, (bytes, bytearray)):
            raise ProtocolError(f"{src} -> {dst}: parties exchange bytes, got {type(payload).__name__}")
        n = len(payload)
        self.bytes_sent[src] += n
        self.bytes_received[dst] += n
        return payload

    @contextmanager
    def clock(self, phase: str, party: str) -> Iterator[None]:
        """Time one party's work in one phase."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            dt = time.perf_counter() - t0
            self.seconds[phase][party.split("/")[0]] += dt
            self.party_seconds[party] += dt

    def report(self, survivors: Sequence[int], **extra: object) -> Report:
        return Report(
            scheme=self.scheme,
            clients=self.n_clients,
            survivors=sorted(int(i) for i in survivors),
            dropped=dict(sorted(self.dropped.items())),
            bytes_sent=dict(self.bytes_sent),
            bytes_received=dict(self.bytes_received),
            seconds={p: dict(k) for p, k in self.seconds.items()},
            party_seconds=dict(self.party_seconds),
            **extra,
        )
