"""The SecAgg client: a Party that answers the server's five requests of a round, in order.

Built by `SecAgg.party(config, identity, state)` from its own RoundConfig: n, k, t, the minimum
batch, the graph and the threat-model flags come from its Policy, its peers' identity keys from the
configuration's pinned directory; a message supplies only what the client checks against them. Its
update is asked for once, at masked_input (so training can run after the key setup), and encoded by
the round's RoundCodec (clipping and distributed DP noise, sized for t survivors) before masking.
"""

from __future__ import annotations

import os

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from securefl import crypto
from securefl.crypto import shamir
from securefl.crypto.prg import Expander
from securefl.crypto.primitives import check_x25519_public
from securefl.encoding import RoundCodec
from securefl.errors import ConfigError, ProtocolError
from securefl.keys import Identity
from securefl.mpc.secagg import messages as msg
from securefl.mpc.secagg.messages import DIGEST, KEY, KEYS, NONCE, SHARE_BYTES, SHARE_ENTRY, SIG, E
from securefl.mpc.secagg.params import REPLY, REQUEST, SETUP, SETUP_FIELDS, Policy, ShareKind, Stage
from securefl.mpc.secagg.state import ClientRound, decode_state, encode_state
from securefl.protocol import Party, UpdateSource
from securefl.session import ReplayGuard, RoundConfig
from securefl.wire import SERVER, Channel, Kind, PartyId, Reader, Role, Writer, peek


class Client(Party):
    """One SecAgg client across rounds: its identity, replay guard and (inside a round) its keys and shares.

    handle() takes one server message and returns the reply; a message that is malformed, out of
    order, replayed, of an earlier round, or that would make the client reveal more than the protocol
    allows raises ProtocolError naming the client. A setup of a new round (one its replay guard
    admits) starts that round and forgets any unfinished one.
    """

    def __init__(self, config: RoundConfig, identity: Identity, state: bytes | None = None):
        self.id, self.config, self._identity = identity.party, config, identity
        self.policy = Policy.from_config(config)
        if self.id.role != Role.CLIENT or self.id.index >= self.policy.n:
            raise ConfigError(f"{self.id}: not a client of this configuration's directory")
        if config.directory.public_key(self.id, str(self.id)) != identity.public_key:
            raise ConfigError(f"{self.id}: its identity key is not the one the configuration's directory pins for it")
        self.index = self.id.index
        self.codec = RoundCodec.of(config, self.policy.min_batch)
        self._nbrs = self.policy.graph.neighbors(self.index)
        self._guard, self._round = (ReplayGuard(), None) if state is None else decode_state(state, self.id, self.policy)
        self.clipped = 0

    def state_dict(self) -> bytes:
        return encode_state(self.id, self.policy, self._guard, self._round)

    def handle(self, message: bytes, update: UpdateSource | None = None) -> bytes:
        me = str(self.id)
        h = peek(message, f"{me}: message")
        rnd = self._round
        current = rnd is not None and (h.session, h.round) == (rnd.session, rnd.round)
        if h.kind == Kind.SECAGG_SETUP and not current:
            return self._advertise_keys(message, h.session, h.round)
        if rnd is None:
            raise ProtocolError(f"{me}: {_kind(h.kind)} before any setup it accepted")
        if current and (rnd.stage is None or h.kind != REQUEST[rnd.stage]):
            at = "its round is finished" if rnd.stage is None else f"it answers {REQUEST[rnd.stage].name} next"
            raise ProtocolError(f"{me}: {_kind(h.kind)} out of order ({at})")
        if rnd.stage is None:
            raise ProtocolError(f"{me}: {_kind(h.kind)} outside a round it takes part in")
        ch = Channel(self.id, rnd.session, rnd.round)
        r = ch.read(message, REQUEST[rnd.stage], SERVER, f"{me}: {rnd.stage.label} request")
        stage = rnd.stage
        if stage == Stage.MASKED_INPUT:
            w = self._masked_input(r, rnd, ch, update)
        else:
            w = {Stage.SHARE_KEYS: self._share_keys, Stage.CONSISTENCY_CHECK: self._consistency_check,
                 Stage.UNMASKING: self._unmasking}[stage](r, rnd, ch)
        rnd.stage = self.policy.next_stage(stage)
        if rnd.stage is None:
            rnd.finish()
        return w.finish()

    def _digest(self, rnd: ClientRound) -> bytes:
        return self.policy.setup_digest(rnd.session, rnd.round, self.codec.fixed.ring_bits, self.codec.length)

    def _advertise_keys(self, message: bytes, session: bytes, round_: int) -> bytes:
        """Check the server's setup against this client's own view; answer with (signed) keys and b's commitment."""
        me = str(self.id)
        ch = Channel(self.id, session, round_)
        r = ch.read(message, Kind.SECAGG_SETUP, SERVER, f"{me}: setup")
        got = SETUP.unpack(r.raw(SETUP.size))
        digest = r.raw(DIGEST)
        r.end()
        mine = self.policy.setup_fields(self.codec.fixed.ring_bits, self.codec.length)
        diff = [f"{name} (server {g}, this client {m})" for name, g, m in zip(SETUP_FIELDS, got, mine, strict=True)
                if g != m]
        if diff:
            raise ProtocolError(f"{me}: the server's setup differs from this client's configuration in "
                                f"{', '.join(diff)}; refused (a client's parameters come from its own configuration)")
        if digest != self.policy.setup_digest(session, round_, self.codec.fixed.ring_bits, self.codec.length):
            raise ProtocolError(f"{me}: the server's setup digest differs from this client's (graph seed, pinned "
                                "directory, configuration, session or round); refused")
        self._guard.admit(session, round_, me)
        c_sk, c_pk = crypto.x25519_keypair()
        s_sk, s_pk = crypto.x25519_keypair()
        b = os.urandom(shamir.SECRET_BYTES)
        record = c_pk + s_pk + msg.self_mask_commitment(b, session, self.index)
        w = ch.write(REPLY[Stage.ADVERTISE_KEYS], SERVER).raw(record)
        if self.policy.signed_keys:
            w.raw(self._identity.sign(msg.record_message(digest, self.index, record)))
        self._round = ClientRound(session, round_, self.policy.next_stage(Stage.ADVERTISE_KEYS),
                                  msg.record_hash(record), c_sk=c_sk.private_bytes_raw(), s_sk=s_sk.private_bytes_raw(),
                                  s_pk=s_pk, b=b)
        return w.finish()

    def _share_keys(self, r: Reader, rnd: ClientRound, ch: Channel) -> Writer:
        """Verify the neighbours' signed keys (if signed); send each neighbour its committed, encrypted shares."""
        me, p, u = str(self.id), self.policy, self.index
        peers = msg.read_ids(r, p.n)
        rec_len = p.record_bytes
        block = r.raw(peers.size * rec_len)
        r.end()
        if not msg.members(peers, self._nbrs).all():
            raise ProtocolError(f"{me}: key list names clients that are not its neighbours")
        if peers.size + 1 < p.t:
            raise ProtocolError(f"{me}: key list has {peers.size + 1} holders, fewer than t={p.t}")
        digest = self._digest(rnd)
        c_sk = X25519PrivateKey.from_private_bytes(rnd.c_sk)
        enc_keys, peer_s_pk, hashes = [], [], []  # per peer, in id order
        seen = {rnd.s_pk}
        for j, v in enumerate(peers.tolist()):
            rec = block[j * rec_len : (j + 1) * rec_len]
            c_pk, s_pk = rec[:KEY], rec[KEY : 2 * KEY]
            if p.signed_keys:
                self.config.directory.verify(PartyId.client(v), rec[KEYS:], msg.record_message(digest, v, rec[:KEYS]),
                                             f"{me}: key record of client {v} as relayed by the server")
                hashes.append(msg.record_hash(rec[:KEYS]))
            check_x25519_public(c_pk, f"{me}: encryption key of client/{v} as relayed by the server")
            check_x25519_public(s_pk, f"{me}: masking key of client/{v} as relayed by the server")
            if c_pk == s_pk or s_pk in seen:
                raise ProtocolError(f"{me}: client {v} reuses a public key")
            seen.add(s_pk)
            peer_s_pk.append(s_pk)
            shared = crypto.agree(c_sk, c_pk, f"{me}: encryption key with client {v}")
            enc_keys.append(msg.share_key(shared, rnd.session, u, v))
        key_of = dict(zip(peers.tolist(), enc_keys, strict=True))
        holders = np.sort(np.append(peers, u))
        shares = shamir.split_secrets([rnd.b, rnd.s_sk], p.t, holders)
        mine = int(np.searchsorted(holders, u))
        prefix = msg.commit_prefix(digest)
        encoded, row = shamir.encode_shares(shares), 2 * SHARE_BYTES  # holder j's shares: bytes j*row .. (j+1)*row
        entries, nonces = [], os.urandom(2 * NONCE * holders.size)
        for j, v in enumerate(holders.tolist()):
            if v == u:
                continue
            b_share, k_share = encoded[j * row : j * row + SHARE_BYTES], encoded[j * row + SHARE_BYTES : (j + 1) * row]
            nb, nk = nonces[2 * NONCE * j : 2 * NONCE * j + NONCE], nonces[2 * NONCE * j + NONCE : 2 * NONCE * (j + 1)]
            commitments = (msg.share_commitment(prefix, u, v, ShareKind.SELF_MASK, b_share, nb)
                           + msg.share_commitment(prefix, u, v, ShareKind.MASKING_KEY, k_share, nk))
            pt = msg.PAIR_IDS.pack(u, v) + b_share + k_share + nb + nk
            entries.append(commitments + crypto.seal(key_of[v], pt, msg.share_aad(digest, u, v, commitments)))
        rnd.c_sk, rnd.s_pk, rnd.peers = None, None, peers
        rnd.enc_keys, rnd.peer_s_pk = _rows(enc_keys, KEY), _rows(peer_s_pk, KEY)
        rnd.peer_hashes = _rows(hashes, DIGEST) if p.signed_keys else None
        rnd.own_share = encoded[mine * row : (mine + 1) * row]
        return ch.write(REPLY[Stage.SHARE_KEYS], SERVER).array(msg.ids(peers)).raw(b"".join(entries))

    def _masked_input(self, r: Reader, rnd: ClientRound, ch: Channel, update: UpdateSource | None) -> Writer:
        """Open and check the shares sent to this client; upload y_u = x_u + PRG(b_u) +/- the pairwise masks with
        every sender whose shares are sound, and name the others.

        A sender whose entry does not open (altered on the way, or sealed so by its dealer), names other parties,
        fails its commitments or leaves the field is left out -- no mask with it, no share of it kept -- and
        reported after y_u: the server then leaves that dealer out of the sum (it cannot end the round for
        everyone). This is what a server could already do by not forwarding the entry, and the same checks hold:
        t holders with sound shares, at most one share revealed per peer, none of a reported one."""
        me, p, u = str(self.id), self.policy, self.index
        senders = msg.read_ids(r, p.n)
        block = r.raw(senders.size * SHARE_ENTRY)
        r.end()
        if not msg.members(senders, rnd.peers).all():
            raise ProtocolError(f"{me}: share bundle holds shares from clients whose keys it never got")
        if update is None:
            raise ProtocolError(f"{me}: asked for its input, but no update was supplied")
        digest = self._digest(rnd)
        prefix = msg.commit_prefix(digest)
        at = np.searchsorted(rnd.peers, senders)
        opened = [self._open_shares(rnd.enc_keys[at[j]].tobytes(), digest, prefix, v,
                                    block[j * SHARE_ENTRY : (j + 1) * SHARE_ENTRY])
                  for j, v in enumerate(senders.tolist())]
        empty = bytes(2 * SHARE_BYTES + 2 * NONCE)  # in place of an entry that failed, until it is dropped below
        table = np.frombuffer(b"".join(o or empty for o in opened), np.uint8).reshape(senders.size, len(empty))
        rows = table[:, : 2 * SHARE_BYTES].copy().view("<u8").astype(np.uint64)  # its share of b, then of its key
        sound = np.array([o is not None for o in opened], bool).reshape(-1) & (rows < np.uint64(shamir.P)).all(axis=1)
        if sound.sum() + 1 < p.t:
            bad = "".join(f", client/{v}'s failed its checks" for v in senders[~sound].tolist())
            raise ProtocolError(f"{me}: only {sound.sum() + 1} share holders, fewer than t={p.t} "
                                f"({senders.size} senders{bad})")
        rows, nonces = rows[sound], table[sound, 2 * SHARE_BYTES :].reshape(-1, 2, NONCE)
        reported, senders, at = senders[~sound], senders[sound], at[sound]
        vec, self.clipped = self.codec.encode(u, *update())
        s_sk = X25519PrivateKey.from_private_bytes(rnd.s_sk)
        add, sub = [msg.self_mask_key(rnd.b, rnd.session, u)], []
        for j, v in enumerate(senders.tolist()):
            key = msg.pair_key(s_sk, rnd.peer_s_pk[at[j]].tobytes(), rnd.session, u, v, f"{me}: mask with client {v}")
            (add if u < v else sub).append(key)
        Expander(vec.size, vec.dtype).apply(vec, add, sub)
        rnd.s_sk = rnd.b = rnd.enc_keys = rnd.peer_s_pk = None
        rnd.senders, rnd.rows, rnd.nonces = senders, rows, nonces
        return ch.write(REPLY[Stage.MASKED_INPUT], SERVER).array(vec).array(msg.ids(reported))

    def _open_shares(self, key: bytes, digest: bytes, prefix: bytes, v: int, entry: bytes) -> bytes | None:
        """The shares client v dealt this client and their nonces (b-share, key share, their two nonces), or None
        when its entry does not open, names other parties or fails its commitments."""
        u = self.index
        commitments, ct = entry[: 2 * DIGEST], entry[2 * DIGEST :]
        try:
            pt = crypto.open_sealed(key, ct, msg.share_aad(digest, v, u, commitments), f"share from client/{v}")
        except ProtocolError:
            return None
        body = pt[8:]
        b_share, k_share = body[:SHARE_BYTES], body[SHARE_BYTES : 2 * SHARE_BYTES]
        nb, nk = body[2 * SHARE_BYTES : 2 * SHARE_BYTES + NONCE], body[2 * SHARE_BYTES + NONCE :]
        if (pt[:8] != msg.PAIR_IDS.pack(v, u)
                or msg.share_commitment(prefix, v, u, ShareKind.SELF_MASK, b_share, nb) != commitments[:DIGEST]
                or msg.share_commitment(prefix, v, u, ShareKind.MASKING_KEY, k_share, nk) != commitments[DIGEST:]):
            return None
        return body

    def _check_survivors(self, rnd: ClientRound, alive: np.ndarray, what: str) -> None:
        me, p = str(self.id), self.policy
        if not alive[self.index]:
            raise ProtocolError(f"{me}: {what} omits this client, which sent its input")
        nb_alive = self._nbrs[alive[self._nbrs]]
        if not msg.members(nb_alive, rnd.senders).all():
            raise ProtocolError(f"{me}: {what} names a survivor that never sent it sound shares")
        if nb_alive.size + 1 < p.t:
            raise ProtocolError(f"{me}: {what} leaves {nb_alive.size + 1} holders, fewer than t={p.t}")
        if alive.sum() < p.min_batch:
            raise ProtocolError(f"{me}: {what} names {alive.sum()} survivors, fewer than the minimum batch of "
                                f"{p.min_batch}")

    def _consistency_check(self, r: Reader, rnd: ClientRound, ch: Channel) -> Writer:
        """Sign the survivor set the server announces (t holders must sign the same one)."""
        raw, alive = msg.read_bitmap(r, self.policy.n)
        r.end()
        self._check_survivors(rnd, alive, "survivor list")
        rnd.signed_list = raw
        sig = self._identity.sign(msg.survivor_message(self._digest(rnd), self.index, rnd.record_hash, raw))
        return ch.write(REPLY[Stage.CONSISTENCY_CHECK], SERVER).raw(sig)

    def _unmasking(self, r: Reader, rnd: ClientRound, ch: Channel) -> Writer:
        """Reveal b-shares of surviving peers and key-shares of dropped ones, never both for one peer."""
        me, p, u = str(self.id), self.policy, self.index
        raw, alive = msg.read_bitmap(r, p.n)
        signers = msg.read_ids(r, p.n)
        sigs = r.raw(signers.size * SIG)
        dropped = msg.read_ids(r, p.n)
        r.end()
        if p.consistency_check:
            self._check_signatures(rnd, raw, alive, signers, sigs)
        else:
            if signers.size:
                raise ProtocolError(f"{me}: survivor signatures, but the consistency check is off")
            self._check_survivors(rnd, alive, "survivor list")
        both = dropped[alive[dropped]]
        if both.size:
            raise ProtocolError(f"{me}: server asks for both shares of client {both[0]}, which survived")
        if not msg.members(dropped, rnd.senders).all():
            raise ProtocolError(f"{me}: server asks for key shares this client does not hold (of a client that sent "
                                "it none, or none that were sound)")
        own = np.frombuffer(rnd.own_share, "<u8")
        b_sel = alive[rnd.senders]
        b_ids = np.append(rnd.senders[b_sel], u)
        b_rows = np.vstack([rnd.rows[b_sel, :E], own[None, :E]])
        b_nonces = np.vstack([rnd.nonces[b_sel, ShareKind.SELF_MASK], np.zeros((1, NONCE), np.uint8)])  # own: none
        order = np.argsort(b_ids)
        k_at = np.searchsorted(rnd.senders, dropped)
        k_rows = msg.reveal_rows(rnd.rows[k_at, E:], rnd.nonces[k_at, ShareKind.MASKING_KEY])
        return (ch.write(REPLY[Stage.UNMASKING], SERVER).array(msg.ids(b_ids[order]))
                .raw(msg.reveal_rows(b_rows[order], b_nonces[order])).array(msg.ids(dropped)).raw(k_rows))

    def _check_signatures(self, rnd: ClientRound, raw: bytes, alive: np.ndarray, signers: np.ndarray,
                          sigs: bytes) -> None:
        """The survivor list is the one this client signed, and t of its surviving holders signed it too."""
        me, p = str(self.id), self.policy
        if raw != rnd.signed_list:
            raise ProtocolError(f"{me}: survivor list differs from the one it signed")
        in_holders = msg.members(signers, self._nbrs) | (signers == self.index)
        if not in_holders.all() or not alive[signers].all():
            raise ProtocolError(f"{me}: signatures from clients that are not surviving holders")
        if signers.size < p.t:
            raise ProtocolError(f"{me}: {signers.size} holders signed the survivor list, fewer than t={p.t}")
        digest = self._digest(rnd)
        for j, v in enumerate(signers.tolist()):
            if v == self.index:
                h = rnd.record_hash
            else:
                at = int(np.searchsorted(rnd.peers, v))
                if at == rnd.peers.size or rnd.peers[at] != v:
                    raise ProtocolError(f"{me}: survivor list signed by client {v}, whose keys it never got")
                h = rnd.peer_hashes[at].tobytes()
            self.config.directory.verify(PartyId.client(v), sigs[j * SIG : (j + 1) * SIG],
                                         msg.survivor_message(digest, v, h, raw),
                                         f"{me}: survivor list signature of client {v}")


def _rows(items: list[bytes], width: int) -> np.ndarray:
    """Equal-length byte strings as the rows of one uint8 array."""
    return np.frombuffer(b"".join(items), np.uint8).reshape(-1, width)


def _kind(code: int) -> str:
    try:
        return Kind(code).name
    except ValueError:
        return f"message kind {code}"
