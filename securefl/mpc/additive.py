"""AdditiveSharing: each client splits its encoded update into K additive shares, one per aggregator.

A client encodes its weighted update (weight slot included) into Z_{2^b}, draws K-1 fresh
32-byte seeds and expands each through the AES-CTR PRG into a full-length helper share. The
Leader gets ``x - sum(helper shares)``; helper j gets only its seed, sealed to its X25519 public
key (ephemeral X25519 + HKDF + AES-256-GCM, session, round, client and helper ids in the
associated data) and forwarded by the Leader, which cannot open it. Each Helper answers every
envelope with a verdict; the Leader accepts a client only when all Helpers could open its
envelopes, announces the accepted set, and each Helper returns the sum of the accepted clients'
share expansions. The Leader adds those partial sums to the masked vectors it accepted and
decodes the aggregate. Any K-1 aggregators see only uniformly random ring words.

Messages (wire kinds 10-15; the Leader is sender 0, helper j is sender j, client i is sender i):
KEY helper -> client (X25519 public key, session setup), UPLOAD client -> leader (masked vector
and K-1 envelopes), FORWARD leader -> helper (one envelope), VERDICT helper -> leader (opened or
rejected, with the reason), ACCEPTED leader -> helper (sorted client ids), PARTIAL helper ->
leader (the helper's share sum).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from securefl import crypto, wire
from securefl.aggregator import Aggregator, Batch, Totals
from securefl.codec import FixedPoint, Flat, Layout
from securefl.crypto.prg import SEED_BYTES, Expander, stream_key
from securefl.errors import AggregatorError, ConfigError, ProtocolError
from securefl.simulation import Simulation

KIND_KEY = 10
KIND_UPLOAD = 11
KIND_FORWARD = 12
KIND_VERDICT = 13
KIND_ACCEPTED = 14
KIND_PARTIAL = 15

LEADER = 0
LABEL_SHARE = b"securefl/additive/share"
LABEL_SEAL = b"securefl/additive/seed"
ENVELOPE_BYTES = crypto.SEAL_OVERHEAD + SEED_BYTES
MAX_REASON = 512
OPENED, REJECTED = 0, 1

T = TypeVar("T")


class Client:
    """Holds one update; sends the Leader its masked ring vector and one sealed seed per Helper."""

    def __init__(self, index: int, flat: Flat, weight: float, fixed: FixedPoint, layout: Layout,
                 num_aggregators: int, session: bytes, rng: np.random.Generator, round_: int = 0):
        self.index, self.name = index, f"client/{index}"
        self._flat, self._weight, self._fixed, self._layout = flat, weight, fixed, layout
        self._k, self._session, self._round, self._rng = num_aggregators, session, round_, rng
        self._helper_keys: dict[int, bytes] = {}
        self.clipped = 0

    def receive_key(self, payload: bytes) -> None:
        """Store a Helper's X25519 public key (from the session setup)."""
        r = wire.Reader(payload, KIND_KEY, self._session, self._round, what=f"{self.name}: helper key")
        pub = r.raw(crypto.PUBLIC_KEY_BYTES)
        r.end()
        if not 1 <= r.sender < self._k or r.sender in self._helper_keys:
            raise ProtocolError(f"{self.name}: unexpected or repeated key from helper/{r.sender}")
        self._helper_keys[r.sender] = pub

    def upload(self) -> bytes:
        """Encode, subtract the K-1 seed-derived shares in place, seal each seed to its Helper."""
        missing = [j for j in range(1, self._k) if j not in self._helper_keys]
        if missing:
            raise ProtocolError(f"{self.name}: no public key from helper/{missing[0]}")
        vec, self.clipped = self._fixed.encode(self._flat, self._weight, self._rng, self._layout, self.index)
        expander = Expander(vec.size, vec.dtype)
        envelopes = []
        for j in range(1, self._k):
            ids = (self._round, self.index, j)
            seed = os.urandom(SEED_BYTES)
            expander.sub(vec, stream_key(seed, LABEL_SHARE, self._session, *ids))
            envelopes.append(crypto.seal_to(self._helper_keys[j], seed, LABEL_SEAL, self._session, *ids))
        w = wire.Writer(KIND_UPLOAD, self._session, self._round, self.index)
        return w.array(vec).raw(b"".join(envelopes)).finish()


class Helper:
    """Aggregator j >= 1: opens its sealed seeds and returns the sum of the accepted clients' shares."""

    def __init__(self, index: int, n_clients: int, length: int, dtype: np.dtype, session: bytes, round_: int = 0):
        self.index, self.name = index, f"helper/{index}"
        self._n, self._length, self._dtype = n_clients, length, np.dtype(dtype)
        self._session, self._round = session, round_
        self._sk, self._pub = crypto.x25519_keypair()
        self._keys: dict[int, bytes] = {}  # client -> stream key of its share
        self._seen: set[int] = set()
        self._done = False

    def announce_key(self) -> bytes:
        """This Helper's X25519 public key, for the session setup."""
        return wire.Writer(KIND_KEY, self._session, self._round, self.index).raw(self._pub).finish()

    def receive_envelope(self, payload: bytes) -> bytes:
        """Open one client's forwarded seed; answer the Leader with a verdict (opened or rejected, and why)."""
        r = wire.Reader(payload, KIND_FORWARD, self._session, self._round, what=f"{self.name}: forwarded envelope")
        client = r.u32()
        envelope = r.raw(ENVELOPE_BYTES)
        r.end()
        if r.sender != LEADER or self._done:
            raise ProtocolError(f"{self.name}: envelope from sender {r.sender} after the sum or not from the leader")
        if client >= self._n or client in self._seen:
            raise ProtocolError(f"{self.name}: unexpected or repeated envelope of client {client}")
        self._seen.add(client)
        ids = (self._round, client, self.index)
        try:
            seed = crypto.open_from(self._sk, envelope, LABEL_SEAL, self._session, *ids,
                                    who=f"{self.name}: client {client}: envelope")
        except ProtocolError as e:
            status, reason = REJECTED, str(e).encode()[:MAX_REASON]
        else:
            self._keys[client] = stream_key(seed, LABEL_SHARE, self._session, *ids)
            status, reason = OPENED, b""
        w = wire.Writer(KIND_VERDICT, self._session, self._round, self.index)
        return w.u32(client).u8(status).blob(reason).finish()

    def receive_accepted(self, payload: bytes) -> bytes:
        """Sum the share expansions of exactly the announced clients; return the partial sum."""
        r = wire.Reader(payload, KIND_ACCEPTED, self._session, self._round, what=f"{self.name}: accepted set")
        ids = r.array(np.uint32)
        r.end()
        if r.sender != LEADER or self._done:
            raise ProtocolError(f"{self.name}: accepted set from sender {r.sender} or announced twice")
        if ids.size > 1 and not (np.diff(ids.astype(np.int64)) > 0).all():
            raise ProtocolError(f"{self.name}: accepted set is not strictly increasing (a client listed twice)")
        unknown = [int(c) for c in ids if int(c) not in self._keys]
        if unknown:
            raise ProtocolError(f"{self.name}: accepted set names client {unknown[0]}, for which it holds no envelope")
        self._done = True
        acc = np.zeros(self._length, self._dtype)
        expander = Expander(self._length, self._dtype)
        for c in ids:
            expander.add(acc, self._keys[int(c)])
        self._keys.clear()
        return wire.Writer(KIND_PARTIAL, self._session, self._round, self.index).array(acc).finish()


class Leader:
    """Aggregator 0: collects masked vectors, forwards envelopes, fixes the accepted set, learns the sum."""

    name = "leader"

    def __init__(self, n_clients: int, num_aggregators: int, length: int, dtype: np.dtype, session: bytes,
                 round_: int = 0):
        self._n, self._k, self._length, self._dtype = n_clients, num_aggregators, length, np.dtype(dtype)
        self._session, self._round = session, round_
        self._acc = np.zeros(length, self._dtype)
        self._pending: dict[int, np.ndarray] = {}  # masked vectors waiting for the Helpers' verdicts
        self._votes: dict[int, set[int]] = {}
        self._partials: set[int] = set()
        self._announced = False
        self.included: list[int] = []
        self.rejected: dict[int, str] = {}

    def receive_upload(self, payload: bytes) -> list[bytes]:
        """Take a client's masked vector; return one FORWARD message per Helper (index j - 1)."""
        r = wire.Reader(payload, KIND_UPLOAD, self._session, self._round, what="leader: client upload")
        masked = r.array(self._dtype, self._length)
        envelopes = r.raw((self._k - 1) * ENVELOPE_BYTES)
        r.end()
        c = r.sender
        if self._announced or c >= self._n or c in self._votes:
            raise ProtocolError(f"leader: unexpected, late or repeated upload from client/{c}")
        self._pending[c], self._votes[c] = masked, set()
        out = []
        for j in range(1, self._k):
            env = envelopes[(j - 1) * ENVELOPE_BYTES : j * ENVELOPE_BYTES]
            out.append(wire.Writer(KIND_FORWARD, self._session, self._round, LEADER).u32(c).raw(env).finish())
        return out

    def receive_verdict(self, payload: bytes) -> None:
        """Record one Helper's verdict; a client is added once every Helper opened its envelope."""
        r = wire.Reader(payload, KIND_VERDICT, self._session, self._round, what="leader: helper verdict")
        c, status, reason = r.u32(), r.u8(), r.blob(MAX_REASON)
        r.end()
        j = r.sender
        if not 1 <= j < self._k or c not in self._pending or j in self._votes[c]:
            raise ProtocolError(f"leader: unexpected or repeated verdict from helper/{j} on client {c}")
        if status not in (OPENED, REJECTED) or (status == OPENED) == bool(reason):
            raise ProtocolError(f"leader: malformed verdict from helper/{j} on client {c}")
        self._votes[c].add(j)
        if status == REJECTED and c not in self.rejected:
            self.rejected[c] = reason.decode(errors="replace")
        if len(self._votes[c]) == self._k - 1:
            masked = self._pending.pop(c)
            if c not in self.rejected:
                np.add(self._acc, masked, out=self._acc)
                self.included.append(c)

    def announce(self) -> bytes:
        """The accepted set (sorted client ids) that every Helper must sum."""
        if self._pending:
            raise AggregatorError(f"leader: no verdict from every helper on clients {sorted(self._pending)[:5]}")
        self._announced = True
        ids = np.array(sorted(self.included), np.uint32)
        return wire.Writer(KIND_ACCEPTED, self._session, self._round, LEADER).array(ids).finish()

    def receive_partial(self, payload: bytes) -> None:
        """Add one Helper's partial sum."""
        r = wire.Reader(payload, KIND_PARTIAL, self._session, self._round, what="leader: helper partial sum")
        partial = r.array(self._dtype, self._length)
        r.end()
        j = r.sender
        if not self._announced or not 1 <= j < self._k or j in self._partials:
            raise ProtocolError(f"leader: unexpected or repeated partial sum from helper/{j}")
        np.add(self._acc, partial, out=self._acc)
        self._partials.add(j)

    def total(self) -> np.ndarray:
        """The ring sum over the accepted clients; only once every Helper's partial sum is in."""
        missing = [f"helper/{j}" for j in range(1, self._k) if j not in self._partials]
        if missing:
            raise AggregatorError(f"leader: no partial sum from {', '.join(missing)}; the round has no result")
        return self._acc


def _act(sim: Simulation, phase: str, party: str, fn: Callable[..., T], *args: object) -> T:
    """Run one aggregator step under its clock; any failure ends the round with AggregatorError."""
    with sim.clock(phase, party):
        try:
            return fn(*args)
        except AggregatorError:
            raise
        except Exception as e:
            raise AggregatorError(f"{party} failed: {e}") from e


def _relay(sim: Simulation, phase: str, src: str, dst: str, payload: bytes, handler: Callable[[bytes], T]) -> T:
    """Send src -> dst and run dst's handler on it (dst is an aggregator)."""
    if not isinstance(payload, bytes):
        raise AggregatorError(f"{src} sent no message to {dst} (got {type(payload).__name__})")
    sim.send(src, dst, payload)
    return _act(sim, phase, dst, handler, payload)


class AdditiveSharing(Aggregator):
    """Additive secret sharing across K non-colluding aggregators (a Leader and K-1 Helpers).

    No coalition of K-1 aggregators learns anything about a client's update or weight; all K
    together learn only the aggregate, which the Leader decodes. Client stage (for `dropped`):
    "upload" (the client vanishes before sending its masked vector and sealed seeds). Clients
    whose envelope a Helper cannot open are excluded by every aggregator and listed in
    report.params["rejected"]; a failing aggregator ends the round with AggregatorError.
    """

    scheme = "additive"
    stages = ("upload",)
    input_stage = "upload"
    threat_model = "only all K aggregators together (any K-1 of them see uniformly random shares)"
    output_party = "leader"

    def __init__(self, num_aggregators: int = 2, **kwargs: object):
        if isinstance(num_aggregators, bool) or not isinstance(num_aggregators, (int, np.integer)):
            raise ConfigError(f"num_aggregators must be an integer >= 2, got {num_aggregators!r}")
        if num_aggregators < 2:
            raise ConfigError(f"num_aggregators must be >= 2 (one party alone would see every update), "
                              f"got {num_aggregators}")
        super().__init__(**kwargs)
        self.num_aggregators = int(num_aggregators)

    def _run(self, batch: Batch, sim: Simulation) -> tuple[Totals, dict]:
        fixed, k, n = self.fixed_point(batch.n), self.num_aggregators, batch.n
        length = fixed.length(batch.layout)
        leader = Leader(n, k, length, fixed.dtype, sim.session)
        helpers = [Helper(j, n, length, fixed.dtype, sim.session) for j in range(1, k)]
        keys = [_act(sim, "setup", h.name, h.announce_key) for h in helpers]
        clipped = 0
        for i, flat in enumerate(batch.flats):
            if not sim.active(i, "upload"):
                continue
            client = Client(i, flat, batch.weights[i], fixed, batch.layout, k, sim.session, sim.rng(f"client/{i}"))
            for h, key in zip(helpers, keys, strict=True):
                with sim.clock("setup", client.name):
                    client.receive_key(sim.send(h.name, client.name, key))
            with sim.clock("upload", client.name):
                upload = client.upload()
            clipped += client.clipped
            forwards = _relay(sim, "upload", client.name, leader.name, upload, leader.receive_upload)
            for h, fwd in zip(helpers, forwards, strict=True):
                verdict = _relay(sim, "upload", leader.name, h.name, fwd, h.receive_envelope)
                _relay(sim, "upload", h.name, leader.name, verdict, leader.receive_verdict)
        accepted = _act(sim, "sum", leader.name, leader.announce)
        for h in helpers:
            partial = _relay(sim, "sum", leader.name, h.name, accepted, h.receive_accepted)
            _relay(sim, "sum", h.name, leader.name, partial, leader.receive_partial)
        total = _act(sim, "decode", leader.name, leader.total)
        with sim.clock("decode", leader.name):
            floats, ints, weight = fixed.decode(total, batch.layout)
        params = {"ring_bits": fixed.ring_bits, "num_aggregators": k, "rejected": dict(sorted(leader.rejected.items()))}
        return Totals(floats, ints, weight, sorted(leader.included), clipped), params
