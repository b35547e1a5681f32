"""The SecAgg server: the Coordinator that routes keys and committed, encrypted shares, adds the masked
inputs, and unmasks their sum.

It derives the same Policy as every client from its own RoundConfig (it chooses none of n, k, t,
the graph or the minimum batch) and runs the stages of `Policy.stages` in order; `ServerState`
names what it has learnt so far. Fewer than t live holders for a client whose secret is needed, or
fewer inputs than the minimum batch, raises DropoutError; a reply that is malformed, from a client
that was not asked, or that reveals a share it must not, raises ProtocolError naming the client.
Key records and survivor-list signatures are checked by the clients they are relayed to, which
name their signer; the server relays them unchecked (their checks would cost it 10% more).

A cheating client is left out and named (ServerState.rejected, report params "rejected"), so that
it cannot end a round for everyone: at advertise_keys, a client whose record has a small-order
X25519 key or repeats a key (byte comparisons: crypto.primitives.check_x25519_public; its peers
would all refuse it); at masked_input, one end of every report a holder makes of a dealer (its
shares did not open or did not match their commitments, and the holder left it out of its masks;
see `_settle` for which end). A left-out client is treated as dropped after share_keys: its input
is not in the sum, and its masking key is recovered from the holders that did not report it, when
any of them masked with it (fewer than t such holders: DropoutError naming it). A report changes
only what the server asks for, within what a client already refuses (see
securefl.mpc.secagg.client), so it gives a server nothing it could not get by dropping a client.
A lying holder, alone, can get one honest dealer left out of a round (as a cheating dealer is), no more.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from securefl.crypto import shamir
from securefl.crypto.prg import Expander
from securefl.crypto.primitives import check_x25519_public
from securefl.encoding import RoundCodec
from securefl.errors import DropoutError, InputError, ProtocolError
from securefl.mpc.secagg import messages as msg
from securefl.mpc.secagg.messages import KEY, REVEAL_ROW, SHARE_BYTES, SHARE_ENTRY, SIG, E
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
    gone: np.ndarray | None = None  # clients that dropped after sharing, with a surviving neighbour that masked with
    # them: keys needed
    reports: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))  # (holder, dealer) per report
    rejected: dict[int, str] = field(default_factory=dict)  # clients excluded for cheating, and why
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
                "ring_bits": self.codec.fixed.ring_bits, "field": "GF(2^61 - 1)", "prg": "AES-128-CTR",
                "rejected": dict(sorted(self.state.rejected.items()))}

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
        """Per client: how many of its share holders (itself included) are alive and did not report it (a holder
        that reported a dealer holds no share of it, and left it out of its masks)."""
        if self.policy.graph.complete:
            live = np.full(self.policy.n, int(alive.sum()))
        else:
            live = alive[self.policy.graph.nbrs].sum(axis=1) + alive
        rep = self.state.reports
        if rep.size:
            live = live - np.bincount(rep[alive[rep[:, 0]], 1], minlength=self.policy.n)
        return live

    def _named(self) -> str:
        """The clients excluded for cheating, for an error message ('' when none)."""
        r = self.state.rejected
        return "".join(f"; client/{u} was excluded: {why}" for u, why in sorted(r.items()))

    def _prune(self, alive: np.ndarray, stage: Stage) -> np.ndarray:
        """Drop clients with fewer than t live holders (their secrets could not be recovered) until stable."""
        alive = alive.copy()
        while True:
            weak = alive & (self._live_holders(alive) < self.policy.t)
            if not weak.any():
                break
            alive &= ~weak
        if not alive.any():
            raise DropoutError(f"secagg: fewer than t={self.policy.t} clients left at {stage.label}{self._named()}")
        return alive

    def _require(self, alive: np.ndarray, stage: Stage) -> None:
        """DropoutError unless every client whose secret is needed still has t live holders."""
        short = self.state.needed & (self._live_holders(alive) < self.policy.t)
        if short.any():
            u = int(np.flatnonzero(short)[0])
            raise DropoutError(f"secagg: client {u} has fewer than t={self.policy.t} live share holders at "
                               f"{stage.label}{self._named()}")

    def _replied(self, readers: list[tuple[int, Reader]]) -> np.ndarray:
        mask = np.zeros(self.policy.n, bool)
        mask[[u for u, _ in readers]] = True
        return mask

    # ------------------------------------------------------------------ the stages

    def _advertise_keys(self, readers: list[tuple[int, Reader]]) -> dict[PartyId, bytes]:
        """Collect (signed) keys; send each client its live neighbours' keys (each checks their signatures)."""
        s, size = self.state, self.policy.record_bytes
        s.records = np.zeros((self.policy.n, size), np.uint8)
        owner: dict[bytes, int] = {}  # masking key -> the client that advertised it
        for u, r in readers:
            record = r.raw(size)  # its signature: checked by its peers
            r.end()
            s.records[u] = np.frombuffer(record, np.uint8)
            c_pk, s_pk = record[:KEY], record[KEY : 2 * KEY]
            try:
                check_x25519_public(c_pk, "encryption key")
                check_x25519_public(s_pk, "masking key")
            except ProtocolError as e:
                s.rejected[u] = f"advertise_keys: {e}"
            if c_pk == s_pk:
                s.rejected[u] = "advertise_keys: one key for encryption and masking"
            other = owner.setdefault(s_pk, u)
            if other != u:
                s.rejected[u] = s.rejected[other] = f"advertise_keys: client/{other} and client/{u} share a masking key"
        replied = self._replied(readers)
        replied[list(s.rejected)] = False
        s.keyed = keyed = self._prune(replied, Stage.ADVERTISE_KEYS)

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
        """Take the masked inputs and the dealers each holder reports; add the inputs of the clients nobody reported;
        announce who survived (or ask for shares when the check is off)."""
        s, p = self.state, self.policy
        inputs, reports = [], []
        for u, r in readers:
            inputs.append((u, r.array(self.codec.fixed.dtype, self.codec.length)))
            reported = msg.read_ids(r, p.n)
            r.end()
            if reported.size:
                codes = u * p.n + reported
                at = np.minimum(np.searchsorted(s.edges, codes), max(s.edges.size - 1, 0))
                if not s.edges.size or (s.edges[at] != codes).any():
                    raise ProtocolError(f"server: client/{u} reports clients whose shares were never forwarded to it")
                reports.append(np.stack([np.full(reported.size, u), reported], axis=1))
        s.survivors = self._replied(readers)
        if reports:
            s.reports = np.concatenate(reports)
            s.survivors &= ~self._settle(s.reports)
        s.total = np.zeros(self.codec.length, self.codec.fixed.dtype)
        for u, y in inputs:
            if s.survivors[u]:
                s.total += y
        if s.survivors.sum() < p.min_batch:
            raise DropoutError(f"secagg: {s.survivors.sum()} masked inputs arrived, fewer than the minimum batch of "
                               f"{p.min_batch}{self._named()}")
        # a client gone after sharing whose masks some survivor added (a holder that reported it added none)
        s.gone = s.shared & ~s.survivors & (self._live_holders(s.survivors) > 0)
        self._require(s.survivors, Stage.MASKED_INPUT)
        s.bitmap = msg.bitmap(s.survivors)
        if not p.consistency_check:
            return self._requests(s.survivors, None)
        return self._send(Stage.CONSISTENCY_CHECK, s.survivors, lambda w, u: w.raw(s.bitmap))

    def _settle(self, reports: np.ndarray) -> np.ndarray:
        """The clients to leave out for the reports (holder, dealer) of masked_input, named in `rejected`: one end of
        every report at least (a report says that the dealer or the holder cheats, and the server cannot tell which),
        chosen greedily, the client in the most open reports first and a dealer before a holder on a tie. A dealer that
        cheats several holders is left out alone, and so is a holder that reports several dealers: a lying client,
        alone, gets at most one other left out of a round."""
        n, out, left = self.policy.n, np.zeros(self.policy.n, bool), reports
        while left.size:
            dealt = np.bincount(left[:, 1], minlength=n)
            x = int(np.argmax((dealt + np.bincount(left[:, 0], minlength=n)) * (n + 1) + dealt))
            out[x] = True
            left = left[(left[:, 0] != x) & (left[:, 1] != x)]
        for x in np.flatnonzero(out).tolist():
            by, of = (", ".join(f"client/{v}" for v in reports[reports[:, 1 - i] == x, i].tolist()) for i in (0, 1))
            why = [f"its shares to {by} did not open or did not match their commitments (reported by those holders)"
                   ] if by else []
            why += [f"it reported {of} for shares that did not open or match (one end of every report is left out, "
                    "the client in the most reports first)"] if of else []
            self.state.rejected[x] = "masked_input: " + "; ".join(why)
        return out

    def _consistency_check(self, readers: list[tuple[int, Reader]]) -> dict[PartyId, bytes]:
        """Collect signatures of the survivor list; send each signer its holders' signatures and its request."""
        sigs = np.zeros((self.policy.n, SIG), np.uint8)  # row u: client u's signature (readers: sorted, distinct)
        for u, r in readers:
            sigs[u] = np.frombuffer(r.raw(SIG), np.uint8)
            r.end()
        signed = self._replied(readers)
        self._require(signed, Stage.CONSISTENCY_CHECK)
        return self._requests(signed, sigs)

    def _requests(self, responders: np.ndarray, sigs: np.ndarray | None) -> dict[PartyId, bytes]:
        """Each responder's unmasking request: the survivor bitmap, t of its holders' signatures of it (none
        without the consistency check) and the neighbours whose key shares it must reveal."""
        s, p = self.state, self.policy

        def body(w: Writer, u: int) -> Writer:
            nb = p.graph.neighbors(u)
            # t signatures of one list suffice (2t > holders: no other list can also have t); send just t
            hold = np.append(nb, u)
            signers = np.sort(hold[responders[hold]])[: p.t] if sigs is not None else np.zeros(0, np.int64)
            gone = nb[s.gone[nb]]
            if s.reports.size:  # no key share of a dealer u reported: it holds none
                gone = gone[~np.isin(gone, s.reports[s.reports[:, 0] == u, 1])]
            sig_bytes = sigs[signers].tobytes() if sigs is not None else b""
            return w.raw(s.bitmap).array(msg.ids(signers)).raw(sig_bytes).array(msg.ids(gone))

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
        if s.reports.size:  # nor a share of a dealer it reported
            ok &= ~np.isin(rev.holders * n + rev.owners, s.reports[:, 0] * n + s.reports[:, 1])
        if not ok.all():
            w = int(rev.holders[np.argmin(ok)])
            raise ProtocolError(f"server: client/{w} revealed a share it must not (wrong kind, not its neighbour, "
                                "or a dealer it reported)")
        secrets = recover(self.policy, s, self.digest, self.session, rev)
        s.unmasked = strip_masks(self.policy, s, self.session, secrets,
                                 Expander(self.codec.length, self.codec.fixed.dtype))
        s.included = np.flatnonzero(s.survivors).tolist()
        return {}

