"""Plaintext: the FedAvg baseline, through the same parties, messages and codec as the secure schemes.

Clients send their encoded ring vectors in the clear; the server adds them. The server learns
every individual update. Its cost is what every secure scheme is measured against.
"""

from __future__ import annotations

import numpy as np

from securefl import wire
from securefl.aggregator import Aggregator, Batch, Totals
from securefl.codec import FixedPoint, Flat, Layout
from securefl.errors import ProtocolError
from securefl.simulation import Simulation

KIND_UPLOAD = 1


class Client:
    """Encodes its own update and sends it in the clear."""

    def __init__(self, index: int, flat: Flat, weight: float, fixed: FixedPoint, layout: Layout,
                 session: bytes, rng: np.random.Generator, round_: int = 0):
        self.index, self.name = index, f"client/{index}"
        self._flat, self._weight, self._fixed, self._layout = flat, weight, fixed, layout
        self._session, self._round, self._rng = session, round_, rng
        self.clipped = 0

    def upload(self) -> bytes:
        vec, self.clipped = self._fixed.encode(self._flat, self._weight, self._rng, self._layout, self.index)
        return wire.Writer(KIND_UPLOAD, self._session, self._round, self.index).array(vec).finish()


class Server:
    """Adds the clients' ring vectors."""

    def __init__(self, fixed: FixedPoint, length: int, n_clients: int, session: bytes, round_: int = 0):
        self._fixed, self._n, self._session, self._round = fixed, n_clients, session, round_
        self._acc = np.zeros(length, fixed.dtype)
        self.included: list[int] = []

    def receive(self, payload: bytes) -> None:
        r = wire.Reader(payload, KIND_UPLOAD, self._session, self._round, what="plaintext upload")
        if not 0 <= r.sender < self._n or r.sender in self.included:
            raise ProtocolError(f"plaintext upload: unexpected or repeated sender client/{r.sender}")
        vec = r.array(self._fixed.dtype, self._acc.size)
        r.end()
        self._acc += vec
        self.included.append(r.sender)

    def total(self) -> np.ndarray:
        return self._acc


class Plaintext(Aggregator):
    """No protection: the server sees each update. The baseline for cost comparisons."""

    scheme = "plaintext"
    stages = ("upload",)
    input_stage = "upload"
    threat_model = "the server (it sees every update in the clear)"

    def _run(self, batch: Batch, sim: Simulation) -> tuple[Totals, dict]:
        fixed = self.fixed_point(batch.n)
        server = Server(fixed, fixed.length(batch.layout), batch.n, sim.session)
        clipped = 0
        for i, flat in enumerate(batch.flats):
            if not sim.active(i, "upload"):
                continue
            client = Client(i, flat, batch.weights[i], fixed, batch.layout, sim.session, sim.rng(f"client/{i}"))
            with sim.clock("upload", client.name):
                msg = client.upload()
            clipped += client.clipped
            sim.send(client.name, "server", msg)
            with sim.clock("upload", "server"):
                server.receive(msg)
        with sim.clock("decode", "server"):
            floats, ints, weight = fixed.decode(server.total(), batch.layout)
        return Totals(floats, ints, weight, list(server.included), clipped), {"ring_bits": fixed.ring_bits}
