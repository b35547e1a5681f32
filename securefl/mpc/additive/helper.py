"""AdditiveSharing's helper j: opens its clients' seeds; releases one partial sum per round, only for an accepted
set of at least its own minimum batch that every other helper signed under the same round configuration."""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from securefl import crypto
from securefl.crypto.prg import Expander, stream_key
from securefl.errors import ProtocolError
from securefl.keys import Identity
from securefl.mpc.additive import state
from securefl.mpc.additive.policy import (
    ENVELOPE_BYTES,
    FINGERPRINT_BYTES,
    LABEL_SEAL,
    LABEL_SHARE,
    MACED_ENVELOPE_BYTES,
    MAX_REASON,
    REJECTED,
    PairwiseKeys,
    Policy,
    RoundKeys,
    check_mac,
)
from securefl.protocol import Party, UpdateSource
from securefl.session import ReplayGuard, RoundConfig
from securefl.wire import LEADER, Channel, Header, Kind, PartyId, Reader, Role, Writer, peek

KEY_BYTES = 32
# a helper's stage within a round: which leader message it takes next
STAGES = {"keyed": Kind.ADD_FORWARD, "opened": Kind.ADD_ACCEPT, "endorsed": Kind.ADD_ENDORSEMENTS, "done": None}


def _name(kind: int) -> str:
    try:
        return Kind(kind).name
    except ValueError:
        return str(kind)


def strictly_increasing(ids: np.ndarray, n: int, who: str) -> np.ndarray:
    """Client indices in [0, n), each once and in order; ProtocolError otherwise."""
    if ids.size and (int(ids[-1]) >= n or (ids.size > 1 and not (np.diff(ids.astype(np.int64)) > 0).all())):
        raise ProtocolError(f"{who}: client indices not strictly increasing in [0, {n}) (a client listed twice "
                            "or unknown)")
    return ids


class Helper(Party):
    """Helper j (aggregator j >= 1). Per round, in the leader's order:

    ADD_SETUP -> ADD_KEY: a fresh X25519 key signed with its identity (the round must be past every round
    of the session it took part in). ADD_FORWARD -> ADD_VERDICTS: per client, the envelope's MAC under the
    client's pairwise key and the envelope itself are checked; opened, or rejected with the reason.
    ADD_ACCEPT -> ADD_ENDORSE: the accepted set, refused when smaller than its policy's minimum batch or
    naming a client it opened no envelope of; signed otherwise. ADD_ENDORSEMENTS -> ADD_PARTIAL: every
    other helper's signature over the same set is checked before it returns its sum of share expansions.
    """

    def __init__(self, config: RoundConfig, identity: Identity, saved: bytes | None = None):
        self.policy = Policy.of(config)
        self._identity = self.policy.identity(identity, Role.HELPER)
        self.id = identity.party
        self._pairwise = PairwiseKeys(identity, config)
        self._guard, self._ch, self._stage = ReplayGuard(), None, "idle"
        if saved:
            self._guard, current = state.load(saved, self.id, config.fingerprint)
            if current is not None:
                self._restore(current)

    # ------------------------------------------------------------------------------------------- messages

    def handle(self, message: bytes, update: UpdateSource | None = None) -> bytes:
        h = peek(message, f"{self.id}: message")
        if h.kind == Kind.ADD_SETUP:
            return self._setup(message, h)
        step = {Kind.ADD_FORWARD: self._open, Kind.ADD_ACCEPT: self._endorse, Kind.ADD_ENDORSEMENTS: self._release}
        expected = STAGES[self._stage] if self._ch is not None else None
        if h.kind not in step or h.kind != expected:
            raise ProtocolError(f"{self.id}: message kind {_name(h.kind)} at stage {self._stage!r}, expected "
                                f"{expected.name if expected else 'ADD_SETUP (a new round)'}")
        return step[h.kind](self._ch.read(message, Kind(h.kind), LEADER))

    def _setup(self, message: bytes, h: Header) -> bytes:
        ch = Channel(self.id, h.session, h.round)
        r = ch.read(message, Kind.ADD_SETUP, LEADER)
        fingerprint = r.raw(FINGERPRINT_BYTES)
        r.end()
        if fingerprint != self.policy.config.fingerprint:
            raise ProtocolError(f"{self.id}: setup under another round configuration")
        self._guard.admit(h.session, h.round, str(self.id))
        self._begin(ch, X25519PrivateKey.generate())
        pub = self._sk.public_key().public_bytes_raw()
        sig = self._identity.sign(self._round.helper_key(self.id.index, pub))
        return self._write(Kind.ADD_KEY).raw(pub).raw(sig).finish()

    def _open(self, r: Reader) -> bytes:
        pol, j = self.policy, self.id.index
        ids = strictly_increasing(r.array(np.uint32), pol.n, f"{self.id}: forwarded envelopes")
        body = r.raw(ids.size * MACED_ENVELOPE_BYTES)
        r.end()
        statuses, reasons = np.zeros(ids.size, np.uint8), []
        for pos, c in enumerate(ids.tolist()):
            part = body[pos * MACED_ENVELOPE_BYTES : (pos + 1) * MACED_ENVELOPE_BYTES]
            envelope, tag = part[:ENVELOPE_BYTES], part[ENVELOPE_BYTES:]
            who = f"{self.id}: client {c}: envelope"
            try:
                check_mac(self._pairwise[PartyId.client(c)], self._round.envelope(c, j, envelope), tag,
                          who=f"{who} MAC (not client/{c}'s pairwise key for this round)")
                seed = crypto.open_from(self._sk, envelope, LABEL_SEAL, self._round.id, c, j, who=who)
            except ProtocolError as e:
                statuses[pos] = REJECTED
                reasons.append(str(e).encode()[:MAX_REASON])
            else:
                self._keys[c] = stream_key(seed, LABEL_SHARE, self._round.id, c, j)
        self._sk, self._stage = None, "opened"  # the seeds are open: the round's X25519 key is no longer kept
        w = self._write(Kind.ADD_VERDICTS).array(statuses)
        for reason in reasons:
            w.blob(reason)
        return w.finish()

    def _endorse(self, r: Reader) -> bytes:
        pol = self.policy
        ids = strictly_increasing(r.array(np.uint32), pol.n, f"{self.id}: accepted set")
        r.end()
        unknown = [c for c in ids.tolist() if c not in self._keys]
        if unknown:
            raise ProtocolError(f"{self.id}: accepted set names client {unknown[0]}, for which it holds no "
                                "opened envelope with a valid MAC")
        if ids.size < pol.min_batch:
            raise ProtocolError(f"{self.id}: the leader's accepted set holds {ids.size} clients, below the "
                                f"minimum batch of {pol.min_batch} this helper enforces")
        self._accepted, self._stage = ids.copy(), "endorsed"
        sig = self._identity.sign(self._round.accepted(self.id.index, self._accepted))
        return self._write(Kind.ADD_ENDORSE).raw(sig).finish()

    def _release(self, r: Reader) -> bytes:
        pol, size = self.policy, crypto.SIGNATURE_BYTES
        sigs = r.raw((pol.k - 1) * size)
        r.end()
        for j in pol.helpers:
            if j != self.id.index:
                pol.config.directory.verify(
                    PartyId.helper(j), sigs[(j - 1) * size : j * size], self._round.accepted(j, self._accepted),
                    who=f"{self.id}: helper/{j}'s endorsement does not cover the accepted set of "
                        f"{self._accepted.size} clients this helper was shown under this round configuration")
        acc = np.zeros(pol.length, pol.dtype)
        Expander(pol.length, pol.dtype).apply(acc, add=[self._keys[c] for c in self._accepted.tolist()])
        self._keys, self._stage = {}, "done"
        return self._write(Kind.ADD_PARTIAL).array(acc).finish()

    # ------------------------------------------------------------------------------------------- round state

    def _begin(self, ch: Channel, sk: X25519PrivateKey | None) -> None:
        self._ch, self._sk, self._round = ch, sk, RoundKeys(self.policy.config.context(ch.session, ch.round))
        self._keys: dict[int, bytes] = {}  # client -> stream key of its share
        self._accepted = np.zeros(0, np.uint32)
        self._stage = "keyed"

    def _write(self, kind: Kind) -> Writer:
        return self._ch.write(kind, LEADER)

    def state_dict(self) -> bytes:
        """The replay guard and, mid-round, the round's secrets: its X25519 key until the seeds are open, then the
        opened share keys."""
        current = None
        if self._ch is not None and self._stage != "done":
            current = {"session": self._ch.session.hex(), "round": self._ch.round, "stage": self._stage,
                       "x25519": None if self._sk is None else state.b64(self._sk.private_bytes_raw()),
                       "keys": {str(c): state.b64(k) for c, k in self._keys.items()},
                       "accepted": self._accepted.tolist()}
        return state.dump(self.id, self.policy.config.fingerprint, self._guard, current)

    def _restore(self, d: dict) -> None:
        who = f"{self.id}: saved state: malformed round state"
        try:
            session, round_, stage = bytes.fromhex(d["session"]), d["round"], d["stage"]
            keyed = stage == "keyed"
            sk = X25519PrivateKey.from_private_bytes(state.unb64(d["x25519"], KEY_BYTES, who)) if keyed else None
            if not keyed and d["x25519"] is not None:
                raise ValueError("an X25519 key after the seeds were opened")
            opened = {int(c): state.unb64(k, KEY_BYTES, who) for c, k in d["keys"].items()}
            accepted = np.array(d["accepted"], np.int64).reshape(-1)
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:
            raise ProtocolError(f"{who} ({type(e).__name__}: {e})") from None
        endorsed = stage == "endorsed"
        if (stage not in ("keyed", "opened", "endorsed") or isinstance(round_, bool) or not isinstance(round_, int)
                or self._guard.to_dict().get(session.hex()) != round_  # the round its own guard admitted last
                or not all(0 <= c < self.policy.n for c in opened) or (keyed and opened)
                or not set(accepted.tolist()) <= set(opened) or endorsed != (accepted.size >= self.policy.min_batch)
                or (not endorsed and accepted.size)):
            raise ProtocolError(f"{who} (stage, round, client indices or accepted set)")
        self._begin(Channel(self.id, session, round_), sk)
        self._keys, self._stage = opened, stage
        self._accepted = strictly_increasing(accepted.astype(np.uint32), self.policy.n, who)
