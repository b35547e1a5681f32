"""AdditiveSharing deployments and rounds built by hand from party objects, for the party-level and attack tests."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable

import numpy as np
import torch

from securefl import crypto
from securefl.crypto.prg import Expander, stream_key
from securefl.keys import Directory, create_identities
from securefl.mpc.additive import AdditiveSharing, Leader
from securefl.mpc.additive.policy import (
    LABEL_PAIRWISE,
    LABEL_SEAL,
    LABEL_SHARE,
    MACED_ENVELOPE_BYTES,
    RoundKeys,
    mac,
)
from securefl.protocol import Totals
from securefl.session import ModelSpec, RoundConfig, new_session
from securefl.wire import LEADER, PARTY_HEADER_SIZE, Channel, Kind, PartyId, Reader

H1, H2 = PartyId.helper(1), PartyId.helper(2)


def with_parties(**kinds: type) -> type[AdditiveSharing]:
    """AdditiveSharing whose simulation builds the given party classes (client=..., helper=..., leader=...)."""

    class Scheme(AdditiveSharing):
        @classmethod
        def party(cls, config, identity, state=None):
            kind = kinds.get(identity.party.kind)
            return kind(config, identity, state) if kind else super().party(config, identity, state)

        @classmethod
        def coordinator(cls, config, session, round_, clients=None, accountant=None):
            return kinds.get("leader", Leader)(config, session, round_, clients, accountant)

    return Scheme


def client(i: int) -> PartyId:
    return PartyId.client(i)


class Deployment:
    """n clients and K-1 helpers with pinned identities, a RoundConfig and long-lived party objects."""

    def __init__(self, n: int = 3, k: int = 3, m: int = 5, min_clients: int = 0, frac_bits: int = 16,
                 identities: dict | None = None, **config: object):
        g = torch.Generator().manual_seed(n + k + m)
        self.ups = [torch.randn(m, generator=g) for _ in range(n)]
        self.ids = identities or create_identities(n, k - 1)
        self.config = RoundConfig("additive", Directory.of(self.ids.values()), ModelSpec.of(self.ups[0]),
                                  options={"num_aggregators": k}, min_clients=min_clients, frac_bits=frac_bits,
                                  **config)
        self.parties = {p: AdditiveSharing.party(self.config, i) for p, i in self.ids.items()}
        self.session, self.round, self.n, self.k = new_session(), 0, n, k

    def twin(self) -> Deployment:
        """The same deployment (identities, configuration, session) with fresh party objects (empty replay guards)."""
        other = copy.copy(self)
        other.parties = {p: AdditiveSharing.party(self.config, i) for p, i in self.ids.items()}
        return other

    @property
    def helpers(self) -> list[PartyId]:
        return [PartyId.helper(j) for j in range(1, self.k)]

    def begin(self, round_: int | None = None, session: bytes | None = None, clients=None,
              leader: type[Leader] = Leader) -> Round:
        """The next round (or round `round_` of `session`), its leader started."""
        self.round = self.round + 1 if round_ is None else round_
        session = session or self.session
        return Round(self, leader(self.config, session, self.round, clients), session, self.round)


class Round:
    """One round driven stage by stage: `sent[stage]` the leader's messages, `got[stage]` the replies."""

    def __init__(self, dep: Deployment, leader: Leader, session: bytes, round_: int):
        self.dep, self.leader, self.session, self.round = dep, leader, session, round_
        self.outbox = leader.start()
        self.sent: dict[str, dict[PartyId, bytes]] = {}
        self.got: dict[str, dict[PartyId, bytes]] = {}

    @property
    def stage(self) -> str:
        return self.leader.stage

    def deliver(self, outbox: dict[PartyId, bytes] | None = None, skip=()) -> dict[PartyId, bytes]:
        """Each addressed party's reply to its message (the current stage's by default; `skip` never answer)."""
        dep = self.dep
        return {p: dep.parties[p].handle(m, lambda i=p.index: (dep.ups[i], 1.0))
                for p, m in (self.outbox if outbox is None else outbox).items() if p not in skip}

    def step(self, replies: dict[PartyId, bytes] | None = None, skip=()) -> dict[PartyId, bytes]:
        """Deliver this stage's messages (unless `replies` are given) and let the leader take the replies."""
        stage = self.stage
        replies = self.deliver(skip=skip) if replies is None else replies
        self.sent[stage], self.got[stage] = self.outbox, replies
        self.outbox = self.leader.step(replies)
        return self.outbox

    def until(self, stage: str) -> Round:
        """Step until the leader's next messages are those of `stage`."""
        while self.stage != stage:
            self.step()
        return self

    def finish(self) -> Totals:
        while self.outbox:
            self.step()
        return self.leader.result()

    def channel(self, me: PartyId = LEADER, round_: int | None = None) -> Channel:
        """`me`'s channel in this round (or round `round_`): what anyone can write messages with."""
        return Channel(me, self.session, self.round if round_ is None else round_)

    def accept(self, ids, to: PartyId = H1) -> bytes:
        """An accepted-set announcement to helper `to`."""
        return self.channel().write(Kind.ADD_ACCEPT, to).array(np.array(ids, np.uint32)).finish()

    def bundle(self, *endorsements: bytes, to: PartyId = H1) -> bytes:
        """An endorsements message to `to` from helpers' ADD_ENDORSE replies, in the order given."""
        body = b"".join(e[PARTY_HEADER_SIZE:] for e in endorsements)
        return self.channel().write(Kind.ADD_ENDORSEMENTS, to).raw(body).finish()

    def forward(self, to: PartyId, envelopes: dict[int, bytes]) -> bytes:
        """A forward message to helper `to`: client -> MAC'd envelope."""
        ids = np.array(sorted(envelopes), np.uint32)
        return (self.channel().write(Kind.ADD_FORWARD, to).array(ids)
                .raw(b"".join(envelopes[c] for c in sorted(envelopes))).finish())

    def verdicts(self, reply: bytes, helper: PartyId, count: int) -> list[tuple[int, str]]:
        """(status, reason) per forwarded client, from a helper's ADD_VERDICTS."""
        r = self.channel().read(reply, Kind.ADD_VERDICTS, helper)
        statuses = r.array(np.uint8, count).tolist()
        out = [(s, r.blob(512).decode() if s else "") for s in statuses]
        r.end()
        return out


def upload_parts(upload: bytes, length: int, dtype=np.uint32) -> tuple[np.ndarray, list[bytes]]:
    """A client's ADD_UPLOAD split into its masked vector and its MAC'd envelopes (helper 1 first)."""
    r = Reader(upload, Kind.ADD_UPLOAD, upload[4:20], int.from_bytes(upload[20:24], "little"))
    vec = r.array(dtype, length).copy()
    rest = upload[PARTY_HEADER_SIZE + 9 + vec.nbytes :]
    return vec, [rest[i : i + MACED_ENVELOPE_BYTES] for i in range(0, len(rest), MACED_ENVELOPE_BYTES)]


def with_header(msg: bytes, *, session: bytes | None = None, round_: int | None = None,
                sender: PartyId | None = None, receiver: PartyId | None = None) -> bytes:
    """A v2 message with header fields rewritten (what anyone on the path can do)."""
    out = bytearray(msg)
    if session is not None:
        out[4:20] = session
    if round_ is not None:
        out[20:24] = round_.to_bytes(4, "little")
    if sender is not None:
        out[24], out[25:29] = sender.role, sender.index.to_bytes(4, "little")
    if receiver is not None:
        out[29], out[30:34] = receiver.role, receiver.index.to_bytes(4, "little")
    return bytes(out)


def helper_pubs(request: bytes) -> dict[int, bytes]:
    """The helpers' per-round X25519 keys listed in a client's ADD_REQUEST (helper 1 first)."""
    body = request[PARTY_HEADER_SIZE + 32 :]
    return {j + 1: body[j * 96 : j * 96 + 32] for j in range(len(body) // 96)}


def forge_upload(rnd: Round, c: int, mac_key: Callable[[int], bytes], keys: RoundKeys | None = None,
                 x: np.ndarray | None = None) -> bytes:
    """An ADD_UPLOAD "from client c": ring vector x (default zeros) minus shares of fresh seeds sealed to the
    helper keys of rnd's requests, each envelope MAC'd with mac_key(j) under `keys` (default: rnd's round)."""
    pol = rnd.leader.policy
    keys = keys or pol.round(rnd.session, rnd.round)
    requests = rnd.sent.get("upload") or rnd.outbox
    pubs = helper_pubs(next(iter(requests.values())))
    vec = np.zeros(pol.length, pol.dtype) if x is None else x.astype(pol.dtype)
    parts = []
    for j, pub in pubs.items():
        seed = os.urandom(32)
        Expander(pol.length, pol.dtype).sub(vec, stream_key(seed, LABEL_SHARE, keys.id, c, j))
        env = crypto.seal_to(pub, seed, LABEL_SEAL, keys.id, c, j)
        parts += [env, mac(mac_key(j), keys.envelope(c, j, env))]
    return rnd.channel(client(c)).write(Kind.ADD_UPLOAD, LEADER).array(vec).raw(b"".join(parts)).finish()


def pairwise(dep: Deployment, me: PartyId, peer: PartyId) -> bytes:
    """The MAC key `me` shares with `peer` (what `me`, honest or not, can compute)."""
    return dep.ids[me].pairwise_key(peer, dep.config.directory.agreement_key(peer), LABEL_PAIRWISE)
