"""The SecAgg server: the Coordinator that routes keys and committed, encrypted shares, adds the masked
inputs, and unmasks their sum.

It derives the same Policy as every client from its own RoundConfig (it chooses none of n, k, t,
the graph or the minimum batch) and runs the stages of `Policy.stages` in order; `ServerState`
names what it has learnt so far. Fewer than t live holders for a client whose secret is needed, or
fewer inputs than the minimum batch, raises DropoutError; a reply that is malformed, from a client
that was not asked, or that reveals a share it must not, raises ProtocolError naming the client.
Key records and survivor-list signatures are checked by the clients they are relayed to, which
name their signer; the server relays them unchecked (their checks would cost it 10% more).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from securefl.crypto import shamir
from securefl.crypto.prg import Expander
from securefl.encoding import RoundCodec
from securefl.errors import DropoutError, InputError, ProtocolError
from securefl.mpc.secagg import messages as msg
from securefl.mpc.secagg.messages import REVEAL_ROW, SHARE_BYTES, SHARE_ENTRY, SIG, E
from securefl.mpc.secagg.params import INPUT_STAGE, REPLY, REQUEST, SETUP, Policy, ShareKind, Stage, colluders_needed
from securefl.mpc.secagg.unmask import Revealed, recover, strip_masks
from securefl.protocol import Coordinator, Totals
from securefl.session import RoundConfig
from securefl.wire import SERVER, Channel, PartyId, Reader, Role, Writer

if TYPE_CHECKING:
    from securefl.dp.accounting import Accountant


@dataclass
class ServerState:
    """What the server holds during one round (boolean masks are indexed by client)."""

    asked: np.ndarray  # clients sent the current stage's request
    records: np.ndarray | None = None  # (n, record bytes): each client's advertised key record, as received
    keyed: np.ndarray | None = None  # clients whose keys were relayed (t live holders after advertise_keys)
    shared: np.ndarray | None = None  # clients whose shares were forwarded (t live holders after share_keys)
    edges: np.ndarray | None = None  # holder * n + dealer of every forwarded share, sorted
    commitments: np.ndarray | None = None  # (edges, SHARE_ENTRY): commitments and ciphertext of each, for blame
    survivors: np.ndarray | None = None  # clients whose masked input is in the sum
    gone: np.ndarray | None = None  # clients that dropped after sharing, with a surviving neighbour: keys needed
    bitmap: bytes = b""  # the survivor bitmap
    total: np.ndarray | None = None  # the sum of the masked inputs
    unmasked: np.ndarray | None = None  # that sum with every mask removed: the round's ring sum
    included: list[int] = field(default_factory=list)

    @property
    def needed(self) -> np.ndarray:
        """Clients one of whose secrets must be recovered: b of every survivor, the key of every `gone` one."""
        return self.survivors | self.gone


class Server(Coordinator):
    """The SecAgg server of one round: start() sends the setup, each step() takes one stage's replies."""

    id = SERVER
    input_stage = INPUT_STAGE.label

    def __init__(self, config: RoundConfig, session: bytes, round_: int, clients: Sequence[int] | None = None,
                 accountant: Accountant | None = None):
        self.config = config
        self.policy = p = Policy.from_config(config)
        self.codec = RoundCodec.of(config, p.min_batch, accountant)
        self.session, self.round = bytes(session), int(round_)
        self._ch = Channel(SERVER, self.session, self.round)
        asked = np.zeros(p.n, bool)
        chosen = range(p.n) if clients is None else [int(c) for c in clients]
        if any(not 0 <= c < p.n for c in chosen):
            raise InputError(f"server: clients must be indices in [0, {p.n}), got {sorted(chosen)}")
        asked[list(chosen)] = True
        self.state = ServerState(asked)
        self.digest = p.setup_digest(self.session, self.round, self.codec.fixed.ring_bits, self.codec.length)
        self._stage: Stage | None = Stage.ADVERTISE_KEYS
        self.stage = Stage.ADVERTISE_KEYS.label
        self._released: Totals | None = None

    # ------------------------------------------------------------------ the Coordinator protocol

    def start(self) -> dict[PartyId, bytes]:
        """The setup every client checks against its own view: the policy's parameters and the setup digest."""
        fields = SETUP.pack(*self.policy.setup_fields(self.codec.fixed.ring_bits, self.codec.length))
        return self._send(Stage.ADVERTISE_KEYS, self.state.asked, lambda w, u: w.raw(fields).raw(self.digest))

    def step(self, replies: Mapping[PartyId, bytes]) -> dict[PartyId, bytes]:
        stage = self._stage
        if stage is None:
            raise ProtocolError("server: replies after the round finished")
        readers = self._readers(replies, stage)
        outbox = {
            Stage.ADVERTISE_KEYS: self._advertise_keys,
            Stage.SHARE_KEYS: self._share_keys,
            Stage.MASKED_INPUT: self._masked_input,
            Stage.CONSISTENCY_CHECK: self._consistency_check,
            Stage.UNMASKING: self._unmasking,
        }[stage](readers)
        self._stage = self.policy.next_stage(stage) if outbox else None
        if self._stage is not None:
            self.stage = self._stage.label
        return outbox

    def result(self) -> Totals:
        """The round's release, made once: central DP noise added to the unmasked ring sum, which is then
        decoded (the one place the server decodes), and the round charged to the accountant."""
        if self._released is None:
            if self.state.unmasked is None:
                raise ProtocolError("server: the round has not finished")
            total = self.state.unmasked.copy()
            self.codec.release(total)
            floats, ints, weight = self.codec.decode(total)
            k = len(self.state.included)  # every included client's input carries its distributed DP noise
            self._released = Totals(floats, ints, weight, list(self.state.included),
                                    self.params() | self.codec.dp_params(k), self.codec.charge(k))
        return self._released

    def params(self) -> dict:
        """The round's public parameters, for the report."""
        p = self.policy
        return {"graph": "complete" if p.graph.complete else "harary", "neighbors": p.k, "threshold": p.t,
                "share_holders": p.k + 1, "colluders_needed": colluders_needed(p.k + 1, p.t), "min_batch": p.min_batch,
                "consistency_check": p.consistency_check, "signed_keys": p.signed_keys,
                "ring_bits": self.codec.fixed.ring_bits, "field": "GF(2^61 - 1)", "prg": "AES-128-CTR"}

    # ------------------------------------------------------------------ helpers

    def _send(self, stage: Stage, to: np.ndarray, body: Callable[[Writer, int], Writer]) -> dict[PartyId, bytes]:
        """The request of `stage` to every client in the mask `to`, its body written by body(writer, client)."""
        kind = REQUEST[stage]
        self.state.asked = to.copy()
        out = {}
        for u in np.flatnonzero(to).tolist():
            pid = PartyId.client(u)
            out[pid] = body(self._ch.write(kind, pid), u).finish()
        return out

    def _readers(self, replies: Mapping[PartyId, bytes], stage: Stage) -> list[tuple[int, Reader]]:
        """(client, reader) of each reply, sorted by client; ProtocolError for a reply nobody asked for."""
        out = []
        for pid, data in replies.items():
            if not isinstance(pid, PartyId) or pid.role != Role.CLIENT or pid.index >= self.policy.n or \
                    not self.state.asked[pid.index]:
                raise ProtocolError(f"server: {stage.label} reply from unexpected sender {pid}, which was not asked")
            out.append((pid.index, self._ch.read(data, REPLY[stage], pid, f"server: {stage.label} reply from {pid}")))
        return sorted(out, key=lambda x: x[0])

    def _live_holders(self, alive: np.ndarray) -> np.ndarray:
        """Per client: how many of its share holders (itself included) are alive."""
        if self.policy.graph.complete:
            return np.full(self.policy.n, int(alive.sum()))
        return alive[self.policy.graph.nbrs].sum(axis=1) + alive

    def _prune(self, alive: np.ndarray, stage: Stage) -> np.ndarray:
        """Drop clients with fewer than t live holders (their secrets could not be recovered) until stable."""
        alive = alive.copy()
        while True:
            weak = alive & (self._live_holders(alive) < self.policy.t)
            if not weak.any():
                break
            alive &= ~weak
        if not alive.any():
            raise DropoutError(f"secagg: fewer than t={self.policy.t} clients left at {stage.label}")
        return alive

    def _require(self, alive: np.ndarray, stage: Stage) -> None:
        """DropoutError unless every client whose secret is needed still has t live holders."""
        short = self.state.needed & (self._live_holders(alive) < self.policy.t)
        if short.any():
            u = int(np.flatnonzero(short)[0])
            raise DropoutError(f"secagg: client {u} has fewer than t={self.policy.t} live share holders at "
                               f"{stage.label}")

    def _replied(self, readers: list[tuple[int, Reader]]) -> np.ndarray:
        mask = np.zeros(self.policy.n, bool)
        mask[[u for u, _ in readers]] = True
        return mask

    # ------------------------------------------------------------------ the stages

    def _advertise_keys(self, readers: list[tuple[int, Reader]]) -> dict[PartyId, bytes]:
        """Collect (signed) keys; send each client its live neighbours' keys (each checks their signatures)."""
        s, size = self.state, self.policy.record_bytes
        s.records = np.zeros((self.policy.n, size), np.uint8)
        for u, r in readers:
            s.records[u] = np.frombuffer(r.raw(size), np.uint8)  # its signature: checked by its peers
            r.end()
        s.keyed = keyed = self._prune(self._replied(readers), Stage.ADVERTISE_KEYS)

        def body(w: Writer, u: int) -> Writer:
            peers = self.policy.graph.neighbors(u)
            peers = peers[keyed[peers]]
            return w.array(msg.ids(peers)).raw(s.records[peers].tobytes())

        return self._send(Stage.SHARE_KEYS, keyed, body)

    def _share_keys(self, readers: list[tuple[int, Reader]]) -> dict[PartyId, bytes]:
        """Collect committed, encrypted shares; keep the commitments; forward each live client its shares."""
        s, n = self.state, self.policy.n
        src, dst, entries = [], [], []
        for u, r in readers:
            to = msg.read_ids(r, n)
            expect = self.policy.graph.neighbors(u)
            if not np.array_equal(to, expect[s.keyed[expect]]):
                raise ProtocolError(f"server: client/{u} sent shares to clients other than its neighbours")
            entries.append(np.frombuffer(r.raw(to.size * SHARE_ENTRY), np.uint8).reshape(to.size, SHARE_ENTRY))
            r.end()
            src.append(np.full(to.size, u))
            dst.append(to)
        s.shared = shared = self._prune(self._replied(readers), Stage.SHARE_KEYS)
        src_a, dst_a = np.concatenate(src or [np.zeros(0, int)]), np.concatenate(dst or [np.zeros(0, int)])
        ent_a = np.concatenate(entries or [np.zeros((0, SHARE_ENTRY), np.uint8)])
        keep = shared[src_a] & shared[dst_a]
        src_a, dst_a, ent_a = src_a[keep], dst_a[keep], ent_a[keep]
        order = np.lexsort((src_a, dst_a))
        src_a, dst_a, s.commitments = src_a[order], dst_a[order], ent_a[order]
        s.edges = dst_a * n + src_a
        live = np.flatnonzero(shared)
        bounds = dict(zip(live.tolist(), zip(np.searchsorted(dst_a, live), np.searchsorted(dst_a, live, "right"),
                                             strict=True), strict=True))

        def body(w: Writer, u: int) -> Writer:
            lo, hi = bounds[u]
            return w.array(msg.ids(src_a[lo:hi])).raw(s.commitments[lo:hi].tobytes())

        return self._send(Stage.MASKED_INPUT, shared, body)

    def _masked_input(self, readers: list[tuple[int, Reader]]) -> dict[PartyId, bytes]:
        """Add the masked inputs; announce who survived (or ask for shares when the check is off)."""
        s, p = self.state, self.policy
        s.total = np.zeros(self.codec.length, self.codec.fixed.dtype)
        for _, r in readers:
            y = r.array(self.codec.fixed.dtype, self.codec.length)
            r.end()
            s.total += y
        s.survivors = self._replied(readers)
        if s.survivors.sum() < p.min_batch:
            raise DropoutError(f"secagg: {s.survivors.sum()} masked inputs arrived, fewer than the minimum batch of "
                               f"{p.min_batch}")
        gone = s.shared & ~s.survivors
        s.gone = gone & (s.survivors[p.graph.nbrs].any(axis=1) if not p.graph.complete else True)
        self._require(s.survivors, Stage.MASKED_INPUT)
        s.bitmap = msg.bitmap(s.survivors)
        if not p.consistency_check:
            return self._requests(s.survivors, {})
        return self._send(Stage.CONSISTENCY_CHECK, s.survivors, lambda w, u: w.raw(s.bitmap))

    def _consistency_check(self, readers: list[tuple[int, Reader]]) -> dict[PartyId, bytes]:
        """Collect signatures of the survivor list; send each signer its holders' signatures and its request."""
        sigs = {}
        for u, r in readers:
            sigs[u] = r.raw(SIG)
            r.end()
        signed = self._replied(readers)
        self._require(signed, Stage.CONSISTENCY_CHECK)
        return self._requests(signed, sigs)

    def _requests(self, responders: np.ndarray, sigs: dict[int, bytes]) -> dict[PartyId, bytes]:
        s, p = self.state, self.policy

        def body(w: Writer, u: int) -> Writer:
            hold = np.append(p.graph.neighbors(u), u)
            # t signatures of one list suffice (2t > holders: no other list can also have t); send just t
            signers = np.sort(hold[responders[hold]])[: p.t] if sigs else np.zeros(0, np.int64)
            nb = p.graph.neighbors(u)
            return (w.raw(s.bitmap).array(msg.ids(signers)).raw(b"".join(sigs[v] for v in signers.tolist()))
                    .array(msg.ids(nb[s.gone[nb]])))

        return self._send(Stage.UNMASKING, responders, body)

    def _unmasking(self, readers: list[tuple[int, Reader]]) -> dict[PartyId, bytes]:
        """Take the revealed shares; recover b of every survivor and the key of every `gone` client (each checked
        against its owner's record); strip every mask from the sum. Returns no further messages."""
        s, n = self.state, self.policy.n
        rev = Revealed()
        for w, r in readers:
            for kind in ShareKind:
                ids = msg.read_ids(r, n)
                block = np.frombuffer(r.raw(ids.size * REVEAL_ROW), np.uint8).reshape(ids.size, REVEAL_ROW)
                elems = shamir.decode_shares(block[:, :SHARE_BYTES].tobytes(), ids.size * E,
                                             f"server: client/{w}'s revealed shares").reshape(ids.size, E)
                rev.add(ids, kind, w, elems, block)
            r.end()
        self._require(self._replied(readers), Stage.UNMASKING)
        rev = rev.joined()
        # b-shares only of surviving holders' peers, key shares only of dropped ones, never of non-neighbours
        ok = np.where(rev.kinds == ShareKind.SELF_MASK, s.survivors[rev.owners],
                      s.gone[rev.owners] & (rev.holders != rev.owners))
        ok &= (rev.holders == rev.owners) | self.policy.graph.adjacent(rev.holders, rev.owners)
        if not ok.all():
            w = int(rev.holders[np.argmin(ok)])
            raise ProtocolError(f"server: client/{w} revealed a share it must not (wrong kind or not its neighbour)")
        secrets = recover(self.policy, s, self.digest, self.session, rev)
        s.unmasked = strip_masks(self.policy, s, self.session, secrets,
                                 Expander(self.codec.length, self.codec.fixed.dtype))
        s.included = np.flatnonzero(s.survivors).tolist()
        return {}

