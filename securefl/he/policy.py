"""What every party of an HE deployment derives from its own RoundConfig, never from a message: the `Policy`.

The pinned directory (client identities and the key holder's), min_clients (config.min_clients, 0:
max(2, ceil(n / 2))), the round codec and the scheme's public HE parameters, all of them bound into
the configuration's fingerprint, which every signature binds through RoundContext.digest with the
session and round; and the scheme's message kinds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from securefl.dp.accounting import Accountant
from securefl.encoding import RoundCodec
from securefl.errors import ConfigError, ProtocolError
from securefl.keys import Identity
from securefl.session import RoundConfig, RoundContext, resolve_min_clients
from securefl.wire import Kind, Reader, Role

DIGEST_BYTES = 32  # SHA-256: configuration fingerprints, digests


class Kinds(NamedTuple):
    """A scheme's message kinds (wire.Kind), in stage order."""

    open: Kind  # server -> key holder
    key: Kind  # key holder -> server: the signed round key (HE public key, sealing key)
    setup: Kind  # server -> client: the signed round key
    ready: Kind  # client -> server
    request: Kind  # server -> client: asks for the upload
    upload: Kind  # client -> server
    aggregate: Kind  # server -> key holder: the included sealed, signed uploads
    result: Kind  # key holder -> server: the signed ring vector of the sum


@dataclass(frozen=True)
class Policy:
    """What every party of an HE deployment derives from its own RoundConfig (see the module)."""

    scheme: str
    kinds: Kinds
    config: RoundConfig
    codec: RoundCodec
    min_clients: int
    params: Any  # the scheme's public HE parameters (ckks_params.Params, paillier.Packing): count, ciphertext_bytes

    @classmethod
    def of(cls, config: RoundConfig, scheme: str, kinds: Kinds, choose: Callable[[RoundConfig, RoundCodec], Any],
           accountant: Accountant | None = None) -> Policy:
        """The policy of `config` for `scheme`; `choose(config, codec)` picks the HE parameters (and checks the
        scheme's options). `accountant`: where the server charges released rounds (DP)."""
        if not isinstance(config, RoundConfig):
            raise ConfigError(f"{scheme}: a party needs a securefl.session.RoundConfig")
        if config.scheme != scheme:
            raise ConfigError(f"{scheme}: configuration of scheme {config.scheme!r}")
        if not config.directory.has_keyholder:
            raise ConfigError(f"{scheme}: the directory pins no key holder")
        need = resolve_min_clients(config.n, config.min_clients or None, scheme)
        codec = RoundCodec.of(config, need, accountant)
        return cls(scheme, kinds, config, codec, need, choose(config, codec))

    @property
    def n(self) -> int:
        return self.config.n

    @property
    def fingerprint(self) -> bytes:
        return self.config.fingerprint

    def context(self, session: bytes, round_: int) -> RoundContext:
        return self.config.context(session, round_)

    def identity(self, identity: Identity, role: Role) -> Identity:
        """`identity` if the directory pins it for a party of `role`; ConfigError otherwise."""
        party = getattr(identity, "party", None)
        if not isinstance(identity, Identity) or party.role != role:
            raise ConfigError(f"{self.scheme}: a {role.name.lower()} needs its own securefl.keys.Identity, got "
                              f"{party or type(identity).__name__}")
        if self.config.directory.get(party) != identity.public_key:
            name = "another key-holder identity" if role == Role.KEYHOLDER else f"another identity for {party}"
            raise ConfigError(f"{party}: the directory pins {name}")
        return identity

    def read_fingerprint(self, r: Reader) -> None:
        """A message's configuration fingerprint, which must be this party's own."""
        if r.raw(DIGEST_BYTES) != self.fingerprint:
            raise ProtocolError(f"{r.what}: made for a round configuration this party does not hold")
