"""SecAgg (Bonawitz et al., CCS 2017) and SecAgg+ (Bell et al., CCS 2020): masking that survives dropouts.

Each client u masks its fixed-point vector x_u as y_u = x_u + PRG(b_u) + sum_v +/-PRG(s_uv) mod 2^b,
where s_uv comes from X25519 between u's and v's masking keys and b_u is a fresh self-mask seed.
u Shamir-shares b_u and its masking private key among its share holders (itself and its graph
neighbours: everyone for SecAgg, k random ring neighbours for SecAgg+), so that once inputs are
in, any t live holders let the server remove b_v for every client v whose y_v arrived, and the
pairwise masks of every client that vanished after sharing. Honest clients reveal at most one of
the two shares of any peer, and (with the consistency check) only for a survivor set that t of
their holders signed, so the server learns the sum and nothing else unless t holders collude.

Stages (each client drops at one of them and sends nothing from there on):

  advertise_keys     server -> setup (n, k, t, graph seed, flags); client -> two X25519 keys, b_u commitment, signed
  share_keys         server -> neighbours' signed keys; client -> AES-GCM-encrypted shares, one per neighbour
  masked_input       server -> the shares addressed to u; client -> y_u
  consistency_check  server -> survivor bitmap; client -> its Ed25519 signature of the bitmap
  unmasking          server -> bitmap, holders' signatures, peers to unmask; client -> b- or key-shares

The client-server channel is assumed authenticated (TLS), as in Bonawitz et al.; everything else
(keys, shares, survivor lists) is authenticated end to end. With signed_keys=False (Bonawitz's
honest-but-curious variant, the threat model of Flower's SecAgg+) keys are neither signed nor
verified and there is no consistency check; see SecAgg for what that gives up.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Sequence

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from securefl import crypto, wire
from securefl.aggregator import Aggregator, Batch, Totals
from securefl.codec import FixedPoint, Flat, Layout
from securefl.crypto import shamir
from securefl.crypto.prg import Expander, stream_key
from securefl.errors import ConfigError, DropoutError, ProtocolError
from securefl.mpc.graph import Graph, choose_parameters
from securefl.simulation import Simulation

KIND_SETUP, KIND_ADVERTISE, KIND_KEYS, KIND_SHARES, KIND_BUNDLE = 20, 21, 22, 23, 24
KIND_MASKED, KIND_SURVIVORS, KIND_SIGNATURE, KIND_REQUEST, KIND_REVEAL = 25, 26, 27, 28, 29
SERVER_ID = 0xFFFFFFFF
STAGES = ("advertise_keys", "share_keys", "masked_input", "consistency_check", "unmasking")

L_ADVERTISE = b"securefl/secagg/advertise"
L_COMMIT = b"securefl/secagg/self-mask-commitment"
L_SHARE_KEY = b"securefl/secagg/share-key"
L_SHARE = b"securefl/secagg/share"
L_PAIR = b"securefl/secagg/pairwise-mask"
L_SELF = b"securefl/secagg/self-mask"
L_SURVIVORS = b"securefl/secagg/survivors"

KEY = crypto.PUBLIC_KEY_BYTES
SIG = crypto.SIGNATURE_BYTES
KEYS = 3 * KEY  # c_pk, s_pk, commitment: an advertised record, followed by its signature when keys are signed
E = shamir.ELEMS
SHARE_PT = 8 + 2 * E * 8  # owner, holder, b-share and key-share elements
SHARE_CT = crypto.NONCE_BYTES + SHARE_PT + crypto.TAG_BYTES
_PAIR_IDS = struct.Struct("<II")


def resolve_parameters(
    n: int,
    threshold: int | float | None,
    neighbors: int | str | None,
    dropout_rate: float = 0.1,
    corrupt_fraction: float = 0.1,
) -> tuple[int, int]:
    """(k, t) for n clients: k neighbours (n - 1: complete graph) and t of the k + 1 share holders.

    threshold None: 2/3 of the holders (or the finder's t for neighbors="auto"); a float in (0, 1]:
    that fraction of the holders, rounded up; an int: t itself. 2t must exceed the holder count, so
    no two disjoint groups of t holders exist to be shown different survivor lists.
    """
    if neighbors == "auto":
        k, t_auto = choose_parameters(n, dropout_rate, corrupt_fraction)
    elif neighbors is None:
        k, t_auto = n - 1, None
    elif isinstance(neighbors, (int, np.integer)) and not isinstance(neighbors, bool) and neighbors >= 2:
        k, t_auto = min(int(neighbors), n - 1), None
    else:
        raise ConfigError(f"neighbors must be None (complete graph), 'auto' or an integer >= 2, got {neighbors!r}")
    h = k + 1
    if threshold is None:
        t = t_auto if t_auto is not None else math.ceil(2 * h / 3)
    elif isinstance(threshold, float):
        if not 0 < threshold <= 1:
            raise ConfigError(f"a fractional threshold must be in (0, 1], got {threshold}")
        t = math.ceil(threshold * h - 1e-9)
    elif isinstance(threshold, (int, np.integer)) and not isinstance(threshold, bool):
        t = int(threshold)
    else:
        raise ConfigError(f"threshold must be an int, a float in (0, 1] or None, got {threshold!r}")
    if not 1 <= t <= h or 2 * t <= h:
        raise ConfigError(f"threshold t={t} must satisfy {h} / 2 < t <= {h} (share holders: {h})")
    return k, t


def check_modes(signed_keys: bool, consistency_check: bool) -> None:
    """ConfigError for option values that are not booleans, or a consistency check without signed keys."""
    if not isinstance(signed_keys, bool) or not isinstance(consistency_check, bool):
        raise ConfigError(f"signed_keys and consistency_check must be booleans, got {signed_keys!r}, "
                          f"{consistency_check!r}")
    if consistency_check and not signed_keys:
        raise ConfigError("consistency_check needs signed_keys: a server free to substitute unsigned keys "
                          "defeats the signed survivor list anyway")


def _ids(r: wire.Reader, n: int) -> np.ndarray:
    """A strictly increasing array of client ids < n."""
    a = r.array(np.uint32).astype(np.int64)
    if a.size and (a[-1] >= n or (a.size > 1 and (np.diff(a) <= 0).any())):
        raise ProtocolError(f"{r.what}: client ids out of range, repeated or unsorted")
    return a


def _bitmap(mask: np.ndarray) -> bytes:
    return np.packbits(mask, bitorder="little").tobytes()


def _read_bitmap(r: wire.Reader, n: int) -> tuple[bytes, np.ndarray]:
    raw = r.raw((n + 7) // 8)
    bits = np.unpackbits(np.frombuffer(raw, np.uint8), bitorder="little")
    if bits[n:].any():
        raise ProtocolError(f"{r.what}: survivor bitmap has bits set beyond client {n - 1}")
    return raw, bits[:n].astype(bool)


def _signed_keys(session: bytes, round_: int, u: int, c_pk: bytes, s_pk: bytes, commit: bytes) -> bytes:
    return crypto.context(L_ADVERTISE, session, round_, u) + c_pk + s_pk + commit


def _pair_key(sk: X25519PrivateKey, peer_pk: bytes | X25519PublicKey, session: bytes, u: int, v: int,
              who: str) -> bytes:
    """AES-CTR key of the pairwise mask between u and v (the same for both)."""
    return stream_key(crypto.agree(sk, peer_pk, who), L_PAIR, session, min(u, v), max(u, v))


def _commitment(b: bytes, session: bytes, u: int) -> bytes:
    return crypto.hkdf(b, L_COMMIT, session, u)


class Client:
    """One SecAgg client: its identity key, masking and encryption keys, self-mask seed and shares.

    Each stage method takes the server's message and returns this client's reply; a message that
    is malformed, out of order, or would make the client reveal more than the protocol allows
    raises ProtocolError.
    """

    def __init__(
        self,
        index: int,
        identity: Ed25519PrivateKey,
        directory: Sequence[bytes],
        flat: Flat,
        weight: float,
        fixed: FixedPoint,
        layout: Layout,
        session: bytes,
        rng: np.random.Generator,
        round_: int = 0,
        consistency_check: bool = True,
        signed_keys: bool = True,
    ):
        check_modes(signed_keys, consistency_check)
        self.index, self.name = index, f"client/{index}"
        self._id_sk, self._dir, self._n = identity, list(directory), len(directory)
        self._flat, self._weight, self._fixed, self._layout, self._rng = flat, weight, fixed, layout, rng
        self._session, self._round, self._consistency = session, round_, consistency_check
        self._signed, self._record = signed_keys, KEYS + (SIG if signed_keys else 0)
        self._stage = 0
        self.clipped = self.prg_bytes = 0
        self.pk_ops = {"x25519": 0, "ed25519_sign": 0, "ed25519_verify": 0}  # counted for the cost floor

    def _read(self, data: bytes, kind: int, stage: int, what: str) -> wire.Reader:
        """Header, sender (the server), recipient (this client; everyone for the setup) and stage order."""
        if self._stage != stage:
            raise ProtocolError(f"{self.name}: {what} out of order (protocol stage {self._stage}, expected {stage})")
        r = wire.Reader(data, kind, self._session, self._round, what=f"{self.name}: {what}")
        if r.sender != SERVER_ID or r.u32() != (SERVER_ID if kind == KIND_SETUP else self.index):
            raise ProtocolError(f"{self.name}: {what} not from the server or addressed to another client")
        return r

    def _write(self, kind: int) -> wire.Writer:
        return wire.Writer(kind, self._session, self._round, self.index)

    def advertise_keys(self, setup: bytes) -> bytes:
        """Check the round's public parameters; answer with (signed) public keys and the b_u commitment."""
        r = self._read(setup, KIND_SETUP, 0, "setup")
        n, k, t = r.u32(), r.u32(), r.u32()
        seed, ring_bits, length, consistency, signed = r.raw(32), r.u8(), r.u64(), r.u8(), r.u8()
        r.end()
        if n != self._n or ring_bits != self._fixed.ring_bits or length != self._fixed.length(self._layout):
            raise ProtocolError(f"{self.name}: setup does not match the federation (n, ring or vector length)")
        if (consistency, signed) != (int(self._consistency), int(self._signed)):
            raise ProtocolError(
                f"{self.name}: setup asks for consistency_check={consistency}, signed_keys={signed}; this client "
                f"runs consistency_check={int(self._consistency)}, signed_keys={int(self._signed)}"
            )
        try:
            self._graph = Graph(n, k, seed, self._session)
        except ConfigError as e:
            raise ProtocolError(f"{self.name}: setup has an invalid graph: {e}") from None
        h = self._graph.k + 1
        if not (2 * t > h and t <= h):
            raise ProtocolError(f"{self.name}: setup threshold t={t} is unsafe for {h} share holders")
        self._t, self._length = t, length
        self._nbrs = self._graph.neighbors(self.index)
        self._c_sk, c_pk = crypto.x25519_keypair()
        self._s_sk, self._s_pk = crypto.x25519_keypair()
        self._b = os.urandom(shamir.SECRET_BYTES)
        commit = _commitment(self._b, self._session, self.index)
        w = self._write(KIND_ADVERTISE).raw(c_pk).raw(self._s_pk).raw(commit)
        if self._signed:
            w.raw(self._id_sk.sign(_signed_keys(self._session, self._round, self.index, c_pk, self._s_pk, commit)))
            self.pk_ops["ed25519_sign"] += 1
        self._stage = 1
        return w.finish()

    def share_keys(self, keys: bytes) -> bytes:
        """Verify the neighbours' signed keys (if signed); send each neighbour its encrypted shares of b_u and s_u."""
        r = self._read(keys, KIND_KEYS, 1, "key list")
        peers = _ids(r, self._n)
        rec_len = self._record
        block = r.raw(peers.size * rec_len)
        r.end()
        if not np.isin(peers, self._nbrs).all():
            raise ProtocolError(f"{self.name}: key list names clients that are not its neighbours")
        if peers.size + 1 < self._t:
            raise ProtocolError(f"{self.name}: key list has {peers.size + 1} holders, fewer than t={self._t}")
        self._peer_s_pk, self._enc_keys = {}, {}
        seen = {self._s_pk}
        for j, v in enumerate(peers.tolist()):
            rec = block[j * rec_len : (j + 1) * rec_len]
            c_pk, s_pk = rec[:KEY], rec[KEY : 2 * KEY]
            if self._signed:
                crypto.verify(self._dir[v], rec[KEYS:], _signed_keys(self._session, self._round, v, c_pk, s_pk,
                              rec[2 * KEY : KEYS]), f"{self.name}: keys of client {v}")
            if c_pk == s_pk or s_pk in seen:
                raise ProtocolError(f"{self.name}: client {v} reuses a public key")
            seen.add(s_pk)
            self._peer_s_pk[v] = s_pk
            shared = crypto.agree(self._c_sk, c_pk, f"{self.name}: encryption key with client {v}")
            self._enc_keys[v] = crypto.hkdf(shared, L_SHARE_KEY, self._session, min(self.index, v), max(self.index, v))
        self._peers = peers
        self.pk_ops["x25519"] += peers.size
        self.pk_ops["ed25519_verify"] += peers.size if self._signed else 0
        holders = np.sort(np.append(peers, self.index))
        shares = shamir.split_secrets([self._b, self._s_sk.private_bytes_raw()], self._t, holders)
        me = int(np.searchsorted(holders, self.index))
        self._own_share = shares[me].copy()
        cts = []
        for j, v in enumerate(holders.tolist()):
            if v == self.index:
                continue
            pt = _PAIR_IDS.pack(self.index, v) + shamir.encode_shares(shares[j])
            aad = crypto.context(L_SHARE, self._session, self._round, self.index, v)
            cts.append(crypto.seal(self._enc_keys[v], pt, aad))
        self._stage = 2
        return self._write(KIND_SHARES).array(peers.astype(np.uint32)).raw(b"".join(cts)).finish()

    def masked_input(self, bundle: bytes) -> bytes:
        """Decrypt the shares sent to this client; upload y_u = x_u + PRG(b_u) +/- pairwise masks."""
        r = self._read(bundle, KIND_BUNDLE, 2, "share bundle")
        senders = _ids(r, self._n)
        block = r.raw(senders.size * SHARE_CT)
        r.end()
        if not np.isin(senders, self._peers).all():
            raise ProtocolError(f"{self.name}: share bundle holds shares from clients whose keys it never got")
        if senders.size + 1 < self._t:
            raise ProtocolError(f"{self.name}: only {senders.size + 1} share holders, fewer than t={self._t}")
        rows = np.empty((senders.size, 2 * E), np.uint64)
        for j, v in enumerate(senders.tolist()):
            aad = crypto.context(L_SHARE, self._session, self._round, v, self.index)
            pt = crypto.open_sealed(self._enc_keys[v], block[j * SHARE_CT : (j + 1) * SHARE_CT], aad,
                                    f"{self.name}: share from client {v}")
            if pt[:8] != _PAIR_IDS.pack(v, self.index):
                raise ProtocolError(f"{self.name}: share from client {v} names other parties")
            rows[j] = shamir.decode_shares(pt[8:], 2 * E, f"{self.name}: share from client {v}")
        self._senders, self._rows = senders, rows
        vec, self.clipped = self._fixed.encode(self._flat, self._weight, self._rng, self._layout, self.index)
        add, sub = [stream_key(self._b, L_SELF, self._session, self.index)], []
        for v in senders.tolist():
            key = _pair_key(self._s_sk, self._peer_s_pk[v], self._session, self.index, v,
                            f"{self.name}: mask with client {v}")
            (add if self.index < v else sub).append(key)
        exp = Expander(vec.size, vec.dtype)
        exp.apply(vec, add, sub)
        self.prg_bytes = exp.bytes_expanded
        self.pk_ops["x25519"] += senders.size
        self._stage = 3
        return self._write(KIND_MASKED).array(vec).finish()

    def _check_survivors(self, alive: np.ndarray, what: str) -> None:
        if not alive[self.index]:
            raise ProtocolError(f"{self.name}: {what} omits this client, which sent its input")
        nb_alive = self._nbrs[alive[self._nbrs]]
        if not np.isin(nb_alive, self._senders).all():
            raise ProtocolError(f"{self.name}: {what} names a survivor that never sent it shares")
        if nb_alive.size + 1 < self._t:
            raise ProtocolError(f"{self.name}: {what} leaves {nb_alive.size + 1} holders, fewer than t={self._t}")

    def consistency_check(self, survivors: bytes) -> bytes:
        """Sign the survivor set the server announces (all holders must sign the same one)."""
        r = self._read(survivors, KIND_SURVIVORS, 3, "survivor list")
        if not self._consistency:
            raise ProtocolError(f"{self.name}: survivor list to sign, but the consistency check is off")
        raw, alive = _read_bitmap(r, self._n)
        r.end()
        self._check_survivors(alive, "survivor list")
        self._signed = raw
        sig = self._id_sk.sign(crypto.context(L_SURVIVORS, self._session, self._round) + raw)
        self.pk_ops["ed25519_sign"] += 1
        self._stage = 4
        return self._write(KIND_SIGNATURE).raw(sig).finish()

    def unmasking(self, request: bytes) -> bytes:
        """Reveal b-shares of surviving peers and key-shares of dropped ones, never both for one peer."""
        r = self._read(request, KIND_REQUEST, 4 if self._consistency else 3, "unmasking request")
        raw, alive = _read_bitmap(r, self._n)
        signers = _ids(r, self._n)
        sigs = r.raw(signers.size * SIG)
        dropped = _ids(r, self._n)
        r.end()
        if self._consistency:
            if raw != self._signed:
                raise ProtocolError(f"{self.name}: survivor list differs from the one it signed")
            in_holders = np.isin(signers, self._nbrs) | (signers == self.index)
            if not in_holders.all() or not alive[signers].all():
                raise ProtocolError(f"{self.name}: signatures from clients that are not surviving holders")
            if signers.size < self._t:
                raise ProtocolError(f"{self.name}: {signers.size} holders signed the survivor list, fewer than t")
            msg = crypto.context(L_SURVIVORS, self._session, self._round) + raw
            for j, v in enumerate(signers.tolist()):
                crypto.verify(self._dir[v], sigs[j * SIG : (j + 1) * SIG], msg,
                              f"{self.name}: survivor list signature of client {v}")
            self.pk_ops["ed25519_verify"] += signers.size
        else:
            self._check_survivors(alive, "survivor list")
        both = dropped[alive[dropped]]
        if both.size:
            raise ProtocolError(f"{self.name}: server asks for both shares of client {both[0]}, which survived")
        if not np.isin(dropped, self._senders).all():
            raise ProtocolError(f"{self.name}: server asks for key shares this client does not hold")
        b_sel = alive[self._senders]
        b_ids = np.append(self._senders[b_sel], self.index)
        b_rows = np.vstack([self._rows[b_sel, :E], self._own_share[None, :E]])
        order = np.argsort(b_ids)
        k_rows = self._rows[np.searchsorted(self._senders, dropped), E:]
        self._rows, self._stage = None, len(STAGES) + 1  # answered once; any later request is refused
        return (self._write(KIND_REVEAL).array(b_ids[order].astype(np.uint32))
                .raw(shamir.encode_shares(b_rows[order])).array(dropped.astype(np.uint32))
                .raw(shamir.encode_shares(k_rows)).finish())


class Server:
    """The SecAgg server: routes keys and encrypted shares, collects y_u, unmasks the sum.

    Each stage method takes the clients' replies of that stage and returns its next message per
    client. Fewer than t live holders for any client whose secret is needed raises DropoutError.
    """

    def __init__(self, n: int, k: int, t: int, fixed: FixedPoint, length: int, session: bytes,
                 round_: int = 0, consistency_check: bool = True, signed_keys: bool = True):
        check_modes(signed_keys, consistency_check)
        self._n, self._t, self._fixed, self._length = n, t, fixed, length
        self._session, self._round, self._consistency = session, round_, consistency_check
        self._signed, self._record = signed_keys, KEYS + (SIG if signed_keys else 0)
        self._seed = os.urandom(shamir.SECRET_BYTES)
        self.graph = Graph(n, k, self._seed, session)
        self._exp = Expander(length, fixed.dtype)
        self.included: list[int] = []
        self.prg_bytes = 0
        self.pk_ops = {"x25519": 0}  # key agreements while unmasking, counted for the cost floor

    def _write(self, kind: int, to: int) -> wire.Writer:
        return wire.Writer(kind, self._session, self._round, SERVER_ID).u32(to)

    def _readers(self, msgs: Sequence[bytes], kind: int, expected: np.ndarray, what: str) -> list[wire.Reader]:
        out, seen = [], set()
        for m in msgs:
            r = wire.Reader(m, kind, self._session, self._round, what=f"server: {what}")
            if r.sender >= self._n or not expected[r.sender] or r.sender in seen:
                raise ProtocolError(f"server: {what} from unexpected or repeated sender client/{r.sender}")
            seen.add(r.sender)
            out.append(r)
        return sorted(out, key=lambda r: r.sender)

    def _live_holders(self, alive: np.ndarray) -> np.ndarray:
        """Per client: how many of its share holders (itself included) are alive."""
        if self.graph.complete:
            return np.full(self._n, int(alive.sum()))
        return alive[self.graph.nbrs].sum(axis=1) + alive

    def _prune(self, alive: np.ndarray, stage: str) -> np.ndarray:
        """Drop clients with fewer than t live holders (their secrets could not be recovered) until stable."""
        alive = alive.copy()
        while True:
            weak = alive & (self._live_holders(alive) < self._t)
            if not weak.any():
                break
            alive &= ~weak
        if not alive.any():
            raise DropoutError(f"secagg: fewer than t={self._t} clients left at {stage}")
        return alive

    def _require(self, needed: np.ndarray, alive: np.ndarray, stage: str) -> None:
        """DropoutError unless every needed client still has t live holders."""
        short = needed & (self._live_holders(alive) < self._t)
        if short.any():
            u = int(np.flatnonzero(short)[0])
            raise DropoutError(f"secagg: client {u} has fewer than t={self._t} live share holders at {stage}")

    def setup(self) -> bytes:
        """The round's public parameters, the same for every client."""
        return (wire.Writer(KIND_SETUP, self._session, self._round, SERVER_ID).u32(SERVER_ID)
                .u32(self._n).u32(self.graph.k).u32(self._t).raw(self._seed).u8(self._fixed.ring_bits)
                .u64(self._length).u8(int(self._consistency)).u8(int(self._signed)).finish())

    def advertise_keys(self, msgs: Sequence[bytes]) -> dict[int, bytes]:
        """Collect (signed) keys; send each client its live neighbours' keys."""
        self._records = np.zeros((self._n, self._record), np.uint8)  # row u: client u's advertised record
        u1 = np.zeros(self._n, bool)
        for r in self._readers(msgs, KIND_ADVERTISE, np.ones(self._n, bool), "advertised keys"):
            self._records[r.sender] = np.frombuffer(r.raw(self._record), np.uint8)
            r.end()
            u1[r.sender] = True
        self._a1 = self._prune(u1, "advertise_keys")
        out = {}
        for u in np.flatnonzero(self._a1).tolist():
            peers = self.graph.neighbors(u)
            peers = peers[self._a1[peers]]
            out[u] = (self._write(KIND_KEYS, u).array(peers.astype(np.uint32))
                      .raw(self._records[peers].tobytes()).finish())
        return out

    def share_keys(self, msgs: Sequence[bytes]) -> dict[int, bytes]:
        """Collect encrypted shares; forward each live client the shares addressed to it."""
        src, dst, cts = [], [], []
        u2 = np.zeros(self._n, bool)
        for r in self._readers(msgs, KIND_SHARES, self._a1, "shares"):
            to = _ids(r, self._n)
            expect = self.graph.neighbors(r.sender)
            if not np.array_equal(to, expect[self._a1[expect]]):
                raise ProtocolError(f"server: client/{r.sender} sent shares to clients other than its neighbours")
            cts.append(np.frombuffer(r.raw(to.size * SHARE_CT), np.uint8).reshape(to.size, SHARE_CT))
            r.end()
            src.append(np.full(to.size, r.sender))
            dst.append(to)
            u2[r.sender] = True
        self._a2 = a2 = self._prune(u2, "share_keys")
        src_a, dst_a = np.concatenate(src or [np.zeros(0, int)]), np.concatenate(dst or [np.zeros(0, int)])
        ct_a = np.concatenate(cts or [np.zeros((0, SHARE_CT), np.uint8)])
        keep = a2[src_a] & a2[dst_a]
        src_a, dst_a, ct_a = src_a[keep], dst_a[keep], ct_a[keep]
        order = np.lexsort((src_a, dst_a))
        src_a, dst_a, ct_a = src_a[order], dst_a[order], ct_a[order]
        live = np.flatnonzero(a2)
        bounds = np.searchsorted(dst_a, np.append(live, self._n))
        return {
            int(u): self._write(KIND_BUNDLE, int(u)).array(src_a[lo:hi].astype(np.uint32)).raw(ct_a[lo:hi].tobytes())
            .finish()
            for u, lo, hi in zip(live, bounds[:-1], bounds[1:], strict=True)
        }

    def masked_input(self, msgs: Sequence[bytes]) -> dict[int, bytes]:
        """Add the masked inputs; announce who survived (or ask for shares if the check is off)."""
        self._acc = np.zeros(self._length, self._fixed.dtype)
        self._u3 = np.zeros(self._n, bool)
        for r in self._readers(msgs, KIND_MASKED, self._a2, "masked input"):
            y = r.array(self._fixed.dtype, self._length)
            r.end()
            self._acc += y
            self._u3[r.sender] = True
        if not self._u3.any():
            raise DropoutError("secagg: no masked input arrived")
        # secrets the server will need: b of every survivor, the key of every dropped client with a surviving neighbour
        gone = self._a2 & ~self._u3
        self._gone = gone & (self._u3[self.graph.nbrs].any(axis=1) if not self.graph.complete else True)
        self._needed = self._u3 | self._gone
        self._require(self._needed, self._u3, "masked_input")
        self._bitmap = _bitmap(self._u3)
        if not self._consistency:
            return self._requests(self._u3, {})
        return {u: self._write(KIND_SURVIVORS, u).raw(self._bitmap).finish() for u in np.flatnonzero(self._u3).tolist()}

    def consistency_check(self, msgs: Sequence[bytes]) -> dict[int, bytes]:
        """Collect signatures of the survivor list; send each signer its holders' signatures and its request."""
        u4, sigs = np.zeros(self._n, bool), {}
        for r in self._readers(msgs, KIND_SIGNATURE, self._u3, "survivor signature"):
            sigs[r.sender] = r.raw(SIG)
            r.end()
            u4[r.sender] = True
        self._require(self._needed, u4, "consistency_check")
        return self._requests(u4, sigs)

    def _requests(self, responders: np.ndarray, sigs: dict[int, bytes]) -> dict[int, bytes]:
        self._u4 = responders
        out = {}
        for w in np.flatnonzero(responders).tolist():
            hold = np.append(self.graph.neighbors(w), w)
            # t signatures of one list suffice (2t > holders: no other list can also have t); send just t
            signers = np.sort(hold[responders[hold]])[: self._t] if sigs else np.zeros(0, np.int64)
            nb = self.graph.neighbors(w)
            dropped = nb[self._gone[nb]]
            out[w] = (self._write(KIND_REQUEST, w).raw(self._bitmap).array(signers.astype(np.uint32))
                      .raw(b"".join(sigs[v] for v in signers.tolist())).array(dropped.astype(np.uint32)).finish())
        return out

    def unmasking(self, msgs: Sequence[bytes]) -> np.ndarray:
        """Reconstruct b_v of survivors and the keys of dropped clients; strip every mask; return the ring sum."""
        owners, kinds, holders, rows = [], [], [], []
        u5 = np.zeros(self._n, bool)
        for r in self._readers(msgs, KIND_REVEAL, self._u4, "revealed shares"):
            w = r.sender
            for kind in (0, 1):
                ids = _ids(r, self._n)
                block = shamir.decode_shares(r.raw(ids.size * E * 8), ids.size * E, f"server: client/{w}")
                owners.append(ids)
                kinds.append(np.full(ids.size, kind))
                holders.append(np.full(ids.size, w))
                rows.append(block.reshape(ids.size, E))
            r.end()
            u5[w] = True
        self._require(self._needed, u5, "unmasking")
        owners, kinds, holders, rows = (np.concatenate(x) for x in (owners, kinds, holders, rows))
        # b-shares only of surviving holders' peers, key shares only of dropped ones, never of non-neighbours
        ok = np.where(kinds == 0, self._u3[owners], self._gone[owners] & (holders != owners))
        ok &= (holders == owners) | self.graph.adjacent(holders, owners)
        if not ok.all():
            w = int(holders[np.argmin(ok)])
            raise ProtocolError(f"server: client/{w} revealed a share it must not (wrong kind or not its neighbour)")
        secrets = self._reconstruct(owners, kinds, holders, rows)
        self._acc = self._strip(secrets)
        self.included = np.flatnonzero(self._u3).tolist()
        return self._acc

    def _reconstruct(self, owners, kinds, holders, rows) -> dict[tuple[int, int], bytes]:
        """One batched interpolation from the first t shares of each needed secret."""
        need_key = np.concatenate([np.flatnonzero(self._u3), np.flatnonzero(self._gone)])
        need_kind = np.concatenate([np.zeros(self._u3.sum(), int), np.ones(self._gone.sum(), int)])
        group = kinds * self._n + owners
        order = np.lexsort((holders, group))
        group, holders, rows = group[order], holders[order], rows[order]
        want = need_kind * self._n + need_key
        starts = np.searchsorted(group, want)
        counts = np.searchsorted(group, want, side="right") - starts
        if (counts < self._t).any():
            j = int(np.flatnonzero(counts < self._t)[0])
            what = "self-mask seed" if need_kind[j] == 0 else "masking key"
            raise DropoutError(f"secagg: only {counts[j]} shares of client {need_key[j]}'s {what}, t={self._t}")
        idx = starts[:, None] + np.arange(self._t)[None, :]
        elems = shamir.reconstruct(holders[idx], rows[idx])
        values = shamir.elements_to_secrets(elems, "server")
        return {(int(kd), int(u)): s for kd, u, s in zip(need_kind, need_key, values, strict=True)}

    def _strip(self, secrets: dict[tuple[int, int], bytes]) -> np.ndarray:
        """Check each secret against its commitment or public key; remove every mask in one pass over the sum."""
        acc, add, sub = self._acc.copy(), [], []
        loaded: dict[int, X25519PublicKey] = {}  # survivors' masking keys, each loaded once
        for (kind, u), s in secrets.items():
            s_pk, commit = self._records[u, KEY : 2 * KEY].tobytes(), self._records[u, 2 * KEY : KEYS].tobytes()
            if kind == 0:
                if _commitment(s, self._session, u) != commit:
                    raise ProtocolError(f"server: reconstructed self-mask seed of client {u} fails its commitment")
                sub.append(stream_key(s, L_SELF, self._session, u))
                continue
            sk = X25519PrivateKey.from_private_bytes(s)
            if sk.public_key().public_bytes_raw() != s_pk:
                raise ProtocolError(f"server: reconstructed masking key of client {u} does not match its public key")
            nb = self.graph.neighbors(u)
            live = nb[self._u3[nb]].tolist()
            self.pk_ops["x25519"] += 1 + len(live)  # public key check + pairs
            for v in live:
                if v not in loaded:
                    loaded[v] = crypto.load_x25519_public(self._records[v, KEY : 2 * KEY].tobytes(),
                                                          f"server: key of {v}")
                key = _pair_key(sk, loaded[v], self._session, u, v, f"server: mask of {u}")
                (sub if v < u else add).append(key)  # v added +PRG when v < u
        self._exp.apply(acc, add, sub)
        self.prg_bytes = self._exp.bytes_expanded
        return acc


class SecAgg(Aggregator):
    """Shamir-based secure aggregation that survives dropouts: complete graph, or SecAgg+ with k neighbours.

    threshold: t as an int, a fraction of the share holders (the k + 1 of SecAgg+, or all n), or
    None (2/3 of them). neighbors: None (complete graph, Bonawitz et al.), an int k (random
    k-regular Harary graph, Bell et al.), or "auto" (k and t from graph.choose_parameters with
    dropout_rate and corrupt_fraction).

    signed_keys (default True) and consistency_check (default: the value of signed_keys) select
    the threat model. The defaults are Bonawitz's actively secure variant: every advertised key is
    signed with the client's Ed25519 identity key and checked by its neighbours, and the survivor
    list is signed by t holders, so even a malicious server learns only the sum unless t clients
    collude with it. signed_keys=False is Bonawitz's honest-but-curious variant (the threat model
    of Flower's SecAgg+), with no Ed25519 operation and no consistency check (which needs signed
    keys). It is private only against a server that follows the protocol; it gives up:
      * key substitution: the server relays the public keys, so a malicious one can swap a peer's
        keys for its own, open the shares encrypted to that "peer" and agree the pairwise masks
        itself; with t such shares of b_u and of s_u it unmasks client u's input alone;
      * honest dropout reports: the server can tell some holders that u dropped (to collect shares
        of u's masking key) and others that it survived (shares of b_u), and unmask x_u.
    Kept in both modes: shares AES-256-GCM-encrypted between the pair with ids and round in the
    associated data, keys bound to the session and ids through HKDF, the commitment to b_u and the
    public-key check of reconstructed keys (a wrong reconstruction raises, never a wrong sum), and
    each client's refusal to reveal both shares of one peer or to accept fewer than t holders.
    """

    scheme = "secagg"
    stages = STAGES
    input_stage = "masked_input"
    threat_model = "only the server together with >= t colluding clients (t = threshold)"

    def __init__(self, threshold: int | float | None = None, neighbors: int | str | None = None,
                 consistency_check: bool | None = None, dropout_rate: float = 0.1, corrupt_fraction: float = 0.1,
                 signed_keys: bool = True, **kwargs):
        super().__init__(**kwargs)
        consistency_check = signed_keys if consistency_check is None else consistency_check
        check_modes(signed_keys, consistency_check)
        self.signed_keys, self.consistency_check = signed_keys, consistency_check
        if not signed_keys:
            self.threat_model = ("an honest-but-curious server together with >= t colluding clients (t = threshold); "
                                 "a malicious server alone (signed_keys=False)")
        self.threshold, self.neighbors = threshold, neighbors
        self.dropout_rate, self.corrupt_fraction = dropout_rate, corrupt_fraction
        if neighbors == "auto":
            if not (0 <= dropout_rate < 1 and 0 <= corrupt_fraction < 1 and dropout_rate + corrupt_fraction < 1):
                raise ConfigError("dropout_rate and corrupt_fraction must be in [0, 1) with a sum below 1")
        else:  # check option types and ranges now; t against the holder count once n is known
            resolve_parameters(1 << 20, None, neighbors)
        if threshold is not None:
            if isinstance(threshold, float):
                resolve_parameters(1, threshold, None)
            elif isinstance(threshold, bool) or not isinstance(threshold, (int, np.integer)) or threshold < 1:
                raise ConfigError(f"threshold must be an int >= 1, a float in (0, 1] or None, got {threshold!r}")

    def min_survivors(self, n_clients: int) -> int:
        """A round that finishes holds the inputs of at least t clients (distributed DP noise is scaled for t)."""
        return resolve_parameters(
            n_clients, self.threshold, self.neighbors, self.dropout_rate, self.corrupt_fraction
        )[1]

    def _run(self, batch: Batch, sim: Simulation) -> tuple[Totals, dict]:
        n = batch.n
        k, t = resolve_parameters(n, self.threshold, self.neighbors, self.dropout_rate, self.corrupt_fraction)
        fixed = self.fixed_point(n)
        length = fixed.length(batch.layout)
        identities = [crypto.ed25519_keypair() for _ in range(n)]  # long-term keys from a PKI
        directory = [pk for _, pk in identities]
        with sim.clock("advertise_keys", "server"):
            server = Server(n, k, t, fixed, length, sim.session, consistency_check=self.consistency_check,
                            signed_keys=self.signed_keys)
            setup = server.setup()
        clients = [
            Client(i, identities[i][0], directory, batch.flats[i], float(batch.weights[i]), fixed, batch.layout,
                   sim.session, sim.rng(f"client/{i}"), consistency_check=self.consistency_check,
                   signed_keys=self.signed_keys)
            for i in range(n)
        ]
        inbox = {i: setup for i in range(n)}
        stages = [s for s in STAGES if self.consistency_check or s != "consistency_check"]
        for stage in stages:
            replies = []
            for i, msg in inbox.items():
                sim.send("server", f"client/{i}", msg)
                if sim.active(i, stage):
                    with sim.clock(stage, f"client/{i}"):
                        out = getattr(clients[i], stage)(msg)
                    replies.append(sim.send(f"client/{i}", "server", out))
            with sim.clock(stage, "server"):
                result = getattr(server, stage)(replies)
            inbox = result if stage != "unmasking" else {}
        with sim.clock("decode", "server"):
            floats, ints, weight = fixed.decode(result, batch.layout)
        clipped = sum(clients[i].clipped for i in server.included)
        params = {
            "graph": "complete" if server.graph.complete else "harary",
            "neighbors": server.graph.k,
            "threshold": t,
            "share_holders": server.graph.k + 1,
            "consistency_check": self.consistency_check,
            "signed_keys": self.signed_keys,
            "ring_bits": fixed.ring_bits,
            "field": "GF(2^61 - 1)",
            "prg": "AES-128-CTR",
        }
        return Totals(floats, ints, weight, server.included, clipped), params
