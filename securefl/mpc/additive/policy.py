"""What every AdditiveSharing party takes from its own RoundConfig, and the bytes its signatures and MACs cover.

A `Policy` is derived by each party from its own configuration, never from a message: the pinned
directory (client and helper identities), K, the minimum batch every helper enforces, and the
round's codec (ring, vector length). `RoundKeys` binds one round (configuration fingerprint,
session, round number) into every signed or MAC'd message, sealed envelope and share key.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, hmac

from securefl import crypto
from securefl.crypto.prg import SEED_BYTES
from securefl.encoding import RoundCodec
from securefl.errors import ConfigError, ProtocolError
from securefl.keys import Identity
from securefl.session import RoundConfig, RoundContext, resolve_min_clients
from securefl.wire import PartyId, Role

if TYPE_CHECKING:
    from securefl.dp.accounting import Accountant

SCHEME = "additive"
LABEL_ROUND = b"securefl/additive/round"
LABEL_KEY = b"securefl/additive/helper-key"
LABEL_ENVELOPE = b"securefl/additive/envelope"
LABEL_ACCEPTED = b"securefl/additive/accepted"
LABEL_SHARE = b"securefl/additive/share"
LABEL_SEAL = b"securefl/additive/seed"
LABEL_PAIRWISE = b"securefl/additive/client-helper-mac"
FINGERPRINT_BYTES = 32
MAC_BYTES = 32
ENVELOPE_BYTES = crypto.SEAL_OVERHEAD + SEED_BYTES
MACED_ENVELOPE_BYTES = ENVELOPE_BYTES + MAC_BYTES
SIGNED_KEY_BYTES = crypto.PUBLIC_KEY_BYTES + crypto.SIGNATURE_BYTES
MAX_REASON = 512
OPENED, REJECTED = 0, 1


def _u32s(*ids: int) -> bytes:
    return struct.pack(f"<{len(ids)}I", *ids)


@dataclass(frozen=True)
class Policy:
    """One deployment's AdditiveSharing parameters, as a party derives them from its own RoundConfig."""

    config: RoundConfig
    k: int  # aggregators: the leader and k - 1 helpers
    min_batch: int
    codec: RoundCodec

    @classmethod
    def of(cls, config: RoundConfig, accountant: Accountant | None = None) -> Policy:
        """The policy of `config`; ConfigError when it is not a consistent AdditiveSharing configuration.
        `accountant`: where the leader charges released rounds under DP."""
        if not isinstance(config, RoundConfig):
            raise ConfigError("AdditiveSharing: a party needs a securefl.session.RoundConfig")
        if config.scheme != SCHEME:
            raise ConfigError(f"AdditiveSharing: configuration of scheme {config.scheme!r}, expected {SCHEME!r}")
        k = config.options.get("num_aggregators")
        if isinstance(k, bool) or not isinstance(k, int) or k < 2:
            raise ConfigError(f"AdditiveSharing: option num_aggregators must be an integer >= 2, got {k!r}")
        if config.directory.helpers != k - 1:
            raise ConfigError(f"AdditiveSharing: num_aggregators={k} needs helper/1 .. helper/{k - 1} in the "
                              f"directory, which lists {config.directory.helpers} helpers")
        min_batch = resolve_min_clients(config.n, config.min_clients or None, "AdditiveSharing")  # 0: the default
        return cls(config, k, min_batch, RoundCodec.of(config, min_batch, accountant))

    @property
    def n(self) -> int:
        return self.config.n

    @property
    def length(self) -> int:
        """Ring words per client (floats, ints, the weight slot)."""
        return self.codec.length

    @property
    def dtype(self) -> np.dtype:
        return self.codec.fixed.dtype

    @property
    def helpers(self) -> range:
        """Helper indices 1 .. K-1."""
        return range(1, self.k)

    def identity(self, identity: Identity, role: Role) -> Identity:
        """`identity` if the directory pins it for a party of `role`; ConfigError otherwise."""
        party = identity.party if isinstance(identity, Identity) else None
        if party is None or party.role != role:
            raise ConfigError(f"AdditiveSharing: a {role.name.lower()} needs its own securefl.keys.Identity, got "
                              f"{party or type(identity).__name__}")
        if self.config.directory.get(party) != identity.public_key:
            raise ConfigError(f"{party}: its identity key is not the one the directory pins for {party}")
        return identity

    def round(self, session: bytes, round_: int) -> RoundKeys:
        return RoundKeys(self.config.context(session, round_))


class RoundKeys:
    """What binds one round into every signature, MAC, sealed envelope and share key (RoundContext.digest)."""

    def __init__(self, ctx: RoundContext):
        self.ctx = ctx
        self.id = ctx.digest(LABEL_ROUND)  # the `session` argument of seal_to / stream_key

    def helper_key(self, helper: int, x25519_pub: bytes) -> bytes:
        """What helper j signs to vouch for its per-round X25519 key."""
        return self.ctx.digest(LABEL_KEY, _u32s(helper), x25519_pub)

    def envelope(self, client: int, helper: int, envelope: bytes) -> bytes:
        """What client c MACs (under its pairwise key with helper j) for its envelope to helper j."""
        return self.ctx.digest(LABEL_ENVELOPE, _u32s(client, helper), envelope)

    def accepted(self, helper: int, ids: np.ndarray) -> bytes:
        """What helper j signs to endorse the accepted set `ids`."""
        return self.ctx.digest(LABEL_ACCEPTED, _u32s(helper), np.asarray(ids, "<u4").tobytes())


def mac(key: bytes, message: bytes) -> bytes:
    """HMAC-SHA256 (32 bytes)."""
    h = hmac.HMAC(key, hashes.SHA256())
    h.update(message)
    return h.finalize()


def check_mac(key: bytes, message: bytes, tag: bytes, who: str) -> None:
    """Constant-time check of an HMAC-SHA256 tag; ProtocolError when it does not match."""
    h = hmac.HMAC(key, hashes.SHA256())
    h.update(message)
    try:
        h.verify(tag)
    except InvalidSignature:
        raise ProtocolError(f"{who}: invalid MAC") from None


class PairwiseKeys:
    """A party's MAC keys with its peers (static-static X25519 through Identity.pairwise_key), each derived once."""

    def __init__(self, identity: Identity, config: RoundConfig):
        self._identity, self._directory = identity, config.directory
        self._keys: dict[PartyId, bytes] = {}

    def __getitem__(self, peer: PartyId) -> bytes:
        key = self._keys.get(peer)
        if key is None:
            who = str(self._identity.party)
            key = self._identity.pairwise_key(peer, self._directory.agreement_key(peer, who), LABEL_PAIRWISE)
            self._keys[peer] = key
        return key
