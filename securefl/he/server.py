"""The HE server: the coordinator of a CKKS or Paillier round. It holds no key, never sees an HE ciphertext (every
upload is sealed to the key holder, securefl.he.sealing) and learns only the released sum.

Stages (`Server.stage`; the client stages are what `dropped` names):

* "setup": OPEN to the key holder, whose KEY (its round key: its HE public key and the round's
  sealing key, signed for this configuration, session and round) the server checks and relays to
  every client as SETUP; each client answers READY. A client dropped here never answers; fewer than
  min_clients ready clients end the round with DropoutError.
* "upload" (the input stage): REQUEST to every ready client, which calls `update()` and answers
  UPLOAD. The server checks each upload's header, its client's signature over the stated digest, the
  round key it is sealed for and the sealed section's length (it can neither open nor parse the
  ciphertexts, and does not hash them: the key holder does); an upload that fails a check is left out
  and named in the round's `rejected`. Fewer than min_clients accepted uploads end the round with
  DropoutError.
* "decrypt": AGGREGATE to the key holder with the accepted signed uploads; its RESULT (the sum's ring
  vector with the clients it summed, signed for this round) must cover exactly the forwarded clients.
  A client dropped here has uploaded and stays in the sum.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from securefl.errors import AggregatorError, DropoutError, ProtocolError
from securefl.he.base import SIGNATURE_BYTES, digest, open_upload, read_key, result_digest, write_key, write_uploads
from securefl.he.policy import Policy
from securefl.protocol import Coordinator, Totals
from securefl.wire import KEYHOLDER, SERVER, Channel, PartyId, Role


class Server(Coordinator):
    """Relays the round key, checks and forwards the sealed, signed uploads, checks the key holder's signed result."""

    id = SERVER
    input_stage = "upload"

    def __init__(self, policy: Policy, session: bytes, round_: int, clients: Sequence[int] | None = None):
        """`policy`: the server's own (its codec's DP mechanism charges released rounds to its accountant)."""
        self.policy = policy
        self._ch, self._ctx = Channel(SERVER, session, round_), policy.context(session, round_)
        asked = range(policy.n) if clients is None else sorted({int(c) for c in clients})
        if any(not 0 <= c < policy.n for c in asked):
            raise ProtocolError(f"server: clients {list(asked)} are not all in the directory of {policy.n}")
        self._clients = list(asked)
        self.stage = "setup"
        self._next = self._take_key
        self._key: bytes | None = None  # fingerprint of the round key
        self._ready: list[int] = []
        self._uploads: dict[int, bytes] = {}
        self.rejected: dict[int, str] = {}  # client index -> why its reply was left out
        self._ring: np.ndarray | None = None
        self._totals: Totals | None = None

    @property
    def included(self) -> list[int]:
        """The clients whose uploads it accepted, in the order received."""
        return list(self._uploads)

    def start(self) -> dict[PartyId, bytes]:
        return {KEYHOLDER: self._ch.write(self.policy.kinds.open, KEYHOLDER).raw(self.policy.fingerprint).finish()}

    def step(self, replies: Mapping[PartyId, bytes]) -> dict[PartyId, bytes]:
        if self._next is None:
            raise ProtocolError("server: replies after the round finished")
        return self._next(replies)

    def result(self) -> Totals:
        """The released sum (the key holder added any central DP noise), charged to the accountant once."""
        if self._ring is None:
            raise AggregatorError(f"server: the round stopped at stage {self.stage!r}; it has no result")
        if self._totals is None:
            codec, k = self.policy.codec, len(self._uploads)
            floats, ints, weight = codec.decode(self._ring)
            params = {**self.policy.params.describe(), "min_clients": self.policy.min_clients,
                      "rejected": dict(sorted(self.rejected.items())), **codec.dp_params(k)}
            self._totals = Totals(floats, ints, weight, self.included, params, codec.charge(k))
        return self._totals

    # --- one handler per stage's replies --------------------------------------------------------------

    def _keyholder_reply(self, replies: Mapping[PartyId, bytes], asked: str) -> bytes:
        extra = set(replies) - {KEYHOLDER}
        if extra:
            raise ProtocolError(f"server: replies from {sorted(map(str, extra))}, which were not asked")
        if KEYHOLDER not in replies:
            raise DropoutError(f"server: the key holder did not answer its {asked} request; the round has no result")
        return replies[KEYHOLDER]

    def _client_replies(self, replies: Mapping[PartyId, bytes], asked: Sequence[int]) -> list[tuple[int, bytes]]:
        if any(p.role != Role.CLIENT or p.index not in asked for p in replies):
            raise ProtocolError(f"server: replies from {sorted(map(str, replies))}, not all of them asked")
        return sorted((p.index, m) for p, m in replies.items())

    def _enough(self, count: int, what: str) -> None:
        if count < self.policy.min_clients:
            raise DropoutError(f"server: {count} {what}; the key holder decrypts sums of at least "
                               f"{self.policy.min_clients} clients")

    def _take_key(self, replies: Mapping[PartyId, bytes]) -> dict[PartyId, bytes]:
        k = self.policy.kinds
        r = self._ch.read(self._keyholder_reply(replies, "open"), k.key, KEYHOLDER, "server: key holder's key")
        public, signature = read_key(r, self.policy, self._ctx)
        self._key = digest(public)
        self._next = self._take_ready
        return {PartyId.client(i): write_key(self._ch.write(k.setup, PartyId.client(i)), self.policy, public, signature)
                for i in self._clients}

    def _take_ready(self, replies: Mapping[PartyId, bytes]) -> dict[PartyId, bytes]:
        for i, message in self._client_replies(replies, self._clients):
            try:
                self._ch.read(message, self.policy.kinds.ready, PartyId.client(i)).end()
            except ProtocolError as e:
                self.rejected[i] = str(e)
                continue
            self._ready.append(i)
        self._enough(len(self._ready), "clients are ready")
        self.stage, self._next = "upload", self._take_uploads
        return {PartyId.client(i): self._ch.write(self.policy.kinds.request, PartyId.client(i)).finish()
                for i in self._ready}

    def _take_uploads(self, replies: Mapping[PartyId, bytes]) -> dict[PartyId, bytes]:
        pol = self.policy
        for i, message in self._client_replies(replies, self._ready):
            try:
                open_upload(pol, self._ctx, message, self._key, self._uploads, f"server: {pol.scheme}",
                            PartyId.client(i))
            except ProtocolError as e:
                self.rejected[i] = str(e)
                continue
            self._uploads[i] = bytes(message)  # no copy of a bytes message
        self._enough(len(self._uploads), "uploads")
        request = write_uploads(self._ch.write(pol.kinds.aggregate, KEYHOLDER).raw(pol.fingerprint),
                                list(self._uploads.values()))
        self.stage, self._next = "decrypt", self._take_result
        return {KEYHOLDER: request}

    def _take_result(self, replies: Mapping[PartyId, bytes]) -> dict[PartyId, bytes]:
        pol = self.policy
        r = self._ch.read(self._keyholder_reply(replies, "decrypt"), pol.kinds.result, KEYHOLDER,
                          f"server: {pol.scheme} result")
        pol.read_fingerprint(r)
        included = r.array(np.uint32)
        ring = r.array(pol.codec.fixed.dtype, pol.codec.length)
        signature = r.raw(SIGNATURE_BYTES)
        r.end()
        pol.config.directory.verify(KEYHOLDER, signature, result_digest(self._ctx, included, ring), r.what)
        if included.tolist() != self.included:
            raise ProtocolError(f"{r.what}: the key holder's reply covers other clients than were forwarded")
        self._ring, self._next = ring, None
        return {}
