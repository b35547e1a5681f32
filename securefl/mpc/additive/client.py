"""AdditiveSharing's client: one message per round, answered with its masked vector and sealed, MAC'd seeds."""

from __future__ import annotations

import os

from securefl import crypto
from securefl.crypto.prg import SEED_BYTES, Expander, stream_key
from securefl.errors import ProtocolError
from securefl.keys import Identity
from securefl.mpc.additive import state
from securefl.mpc.additive.policy import (
    FINGERPRINT_BYTES,
    LABEL_SEAL,
    LABEL_SHARE,
    SIGNED_KEY_BYTES,
    PairwiseKeys,
    Policy,
    mac,
)
from securefl.protocol import Party, UpdateSource
from securefl.session import ReplayGuard, RoundConfig
from securefl.wire import LEADER, Channel, Kind, PartyId, Role, peek


class Client(Party):
    """Client i. On the leader's request (ADD_REQUEST: the helpers' per-round keys) it checks each key's
    signature against that helper's pinned identity for this round and configuration, takes part in the
    round only if its number is past every round of the session it took part in, calls `update()`, encodes
    it with the round's codec, subtracts K-1 share expansions of fresh seeds (os.urandom) and answers
    ADD_UPLOAD: the masked vector and, per helper, the seed sealed to that helper's per-round key with a MAC
    under the client-helper pairwise key (so no one else can make up an envelope in its name).
    """

    def __init__(self, config: RoundConfig, identity: Identity, saved: bytes | None = None):
        self.policy = Policy.of(config)
        self._identity = self.policy.identity(identity, Role.CLIENT)
        self.id = identity.party
        self._pairwise = PairwiseKeys(identity, config)
        self._guard = state.load(saved, self.id, config.fingerprint)[0] if saved else ReplayGuard()
        self.clipped = 0

    def handle(self, message: bytes, update: UpdateSource | None = None) -> bytes:
        pol, me = self.policy, self.id
        h = peek(message, f"{me}: request")
        ch = Channel(me, h.session, h.round)
        r = ch.read(message, Kind.ADD_REQUEST, LEADER)
        fingerprint, signed = r.raw(FINGERPRINT_BYTES), r.raw((pol.k - 1) * SIGNED_KEY_BYTES)
        r.end()
        if fingerprint != pol.config.fingerprint:
            raise ProtocolError(f"{me}: request under another round configuration")
        keys = pol.round(h.session, h.round)
        helper_keys = {}
        for j in pol.helpers:
            part = signed[(j - 1) * SIGNED_KEY_BYTES : j * SIGNED_KEY_BYTES]
            pub, sig = part[: crypto.PUBLIC_KEY_BYTES], part[crypto.PUBLIC_KEY_BYTES :]
            pol.config.directory.verify(PartyId.helper(j), sig, keys.helper_key(j, pub),
                                        who=f"{me}: key of helper/{j} (not signed by its pinned identity for this "
                                            "session, round and configuration)")
            helper_keys[j] = pub
        if update is None:
            raise ProtocolError(f"{me}: asked for its input, but no update was supplied")
        self._guard.admit(h.session, h.round, str(me))
        vec, self.clipped = pol.codec.encode(me.index, *update())
        seeds = {j: os.urandom(SEED_BYTES) for j in pol.helpers}
        ids = {j: (me.index, j) for j in pol.helpers}
        Expander(vec.size, vec.dtype).apply(vec, sub=[stream_key(seeds[j], LABEL_SHARE, keys.id, *ids[j])
                                                      for j in pol.helpers])
        parts = []
        for j in pol.helpers:
            env = crypto.seal_to(helper_keys[j], seeds[j], LABEL_SEAL, keys.id, *ids[j])
            parts += [env, mac(self._pairwise[PartyId.helper(j)], keys.envelope(me.index, j, env))]
        return ch.write(Kind.ADD_UPLOAD, LEADER).array(vec).raw(b"".join(parts)).finish()

    def state_dict(self) -> bytes:
        """The replay guard (a client keeps nothing else between rounds; its pairwise keys are re-derived)."""
        return state.dump(self.id, self.policy.config.fingerprint, self._guard)
