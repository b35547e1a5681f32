"""Plaintext: the FedAvg baseline, through the same parties, messages and codec as the secure schemes.

The server asks each client of the round for its input; each client encodes its update with the
round's codec and sends the ring vector in the clear; the server adds them. The server learns
every individual update. Its cost is what every secure scheme is measured against.

Stages (for `dropped`): "upload" (a client dropped here never sends its vector).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from securefl.aggregator import Aggregator, Floor, RoleView
from securefl.encoding import RoundCodec
from securefl.errors import DropoutError, ProtocolError
from securefl.keys import Identity
from securefl.protocol import Coordinator, Party, Totals, UpdateSource
from securefl.session import ReplayGuard, RoundConfig
from securefl.wire import SERVER, Channel, Kind, PartyId, Role, peek

if TYPE_CHECKING:
    from securefl.dp.accounting import Accountant

STAGES = ("upload",)


def _load_guard(state: bytes, who: PartyId) -> ReplayGuard:
    try:
        data = json.loads(state)
    except (TypeError, ValueError, UnicodeDecodeError):
        raise ProtocolError(f"{who}: saved state is not this client's JSON state") from None
    return ReplayGuard.from_dict(data)


class Client(Party):
    """Encodes its own update and sends it in the clear when the server asks."""

    def __init__(self, config: RoundConfig, identity: Identity, state: bytes | None = None):
        self.id, self.config = identity.party, config
        if self.id.role != Role.CLIENT or self.id.index >= config.n:
            raise ProtocolError(f"{self.id}: not a client of this configuration's directory")
        self._codec = RoundCodec.of(config, config.n)
        self._guard = _load_guard(state, self.id) if state else ReplayGuard()
        self.clipped = 0

    def handle(self, message: bytes, update: UpdateSource | None = None) -> bytes:
        h = peek(message, f"{self.id}: request")
        self._guard.admit(h.session, h.round, str(self.id))
        ch = Channel(self.id, h.session, h.round)
        r = ch.read(message, Kind.PLAIN_REQUEST, SERVER)
        if r.raw(32) != self.config.fingerprint:
            raise ProtocolError(f"{self.id}: request under another round configuration")
        r.end()
        if update is None:
            raise ProtocolError(f"{self.id}: asked for its input, but no update was supplied")
        vec, self.clipped = self._codec.encode(self.id.index, *update())
        return ch.write(Kind.PLAIN_UPLOAD, SERVER).array(vec).finish()

    def state_dict(self) -> bytes:
        return json.dumps(self._guard.to_dict()).encode()


class Server(Coordinator):
    """Asks the round's clients for their vectors and adds them."""

    id = SERVER

    def __init__(self, config: RoundConfig, session: bytes, round_: int, clients: Sequence[int] | None = None,
                 accountant: Accountant | None = None):
        self.config = config
        self._codec = RoundCodec.of(config, config.n, accountant)
        self._ch = Channel(SERVER, session, round_)
        self._clients = sorted(range(config.n) if clients is None else {int(c) for c in clients})
        self._acc = np.zeros(self._codec.length, self._codec.fixed.dtype)
        self._included: list[int] = []
        self.stage = self.input_stage = STAGES[0]
        self._done = False

    def start(self) -> dict[PartyId, bytes]:
        return {PartyId.client(i): self._ch.write(Kind.PLAIN_REQUEST, PartyId.client(i)).raw(self.config.fingerprint)
                .finish() for i in self._clients}

    def step(self, replies: Mapping[PartyId, bytes]) -> dict[PartyId, bytes]:
        if self._done:
            raise ProtocolError("server: replies after the round finished")
        for pid, data in sorted(replies.items()):
            if pid.role != Role.CLIENT or pid.index not in self._clients:
                raise ProtocolError(f"server: reply from {pid}, which was not asked")
            r = self._ch.read(data, Kind.PLAIN_UPLOAD, pid)
            vec = r.array(self._codec.fixed.dtype, self._codec.length)
            r.end()
            self._acc += vec
            self._included.append(pid.index)
        self._done = True
        return {}

    def result(self) -> Totals:
        if not self._included:
            raise DropoutError("plaintext: no client's input reached the server")
        self._codec.release(self._acc)  # central DP: the server is the decoding party
        floats, ints, weight = self._codec.decode(self._acc)
        k = len(self._included)
        return Totals(floats, ints, weight, list(self._included),
                      {"ring_bits": self._codec.fixed.ring_bits, **self._codec.dp_params(k)}, self._codec.charge(k))


class Plaintext(Aggregator):
    """No protection: the server sees each update. The baseline for cost comparisons."""

    scheme = "plaintext"
    stages = STAGES
    input_stage = "upload"
    threat_model = "the server (it sees every update in the clear)"

    def roles_view(self, params: Mapping[str, object]) -> dict[str, RoleView]:
        return {"server": RoleView("every client's update in the clear", "nobody: it sees each one alone", "updates"),
                "client": RoleView("its own update only", "the server, alone", "nothing")}

    @classmethod
    def floor(cls, n: int, m: int, survivors: int, params: Mapping[str, Any],
              traffic: Mapping[str, tuple[float, float]]) -> dict[str, Floor]:
        """A client writes its encoding; the server adds the survivors' vectors."""
        vec = cls.ring_vector_bytes(m, params)
        return {"client": (0.0, vec, "write the encoding"), "server": (0.0, survivors * vec, "add")}

    @classmethod
    def party(cls, config: RoundConfig, identity: Identity, state: bytes | None = None) -> Party:
        return Client(config, identity, state)

    @classmethod
    def coordinator(cls, config: RoundConfig, session: bytes, round_: int, clients: Sequence[int] | None = None,
                    accountant: Accountant | None = None) -> Coordinator:
        return Server(config, session, round_, clients, accountant)
