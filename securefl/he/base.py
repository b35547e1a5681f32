"""What CKKS and Paillier share: the policy each party derives from its own configuration, the signed digests,
and the client and key-holder state machines (the server, the coordinator, is securefl.he.server).

Every party builds a `Policy` from its own RoundConfig, never from a message: the pinned directory
(client identities and the key holder's), min_clients (config.min_clients, 0: max(2, ceil(n / 2))),
the round codec and the scheme's public HE parameters, all of them bound into the configuration's
fingerprint, which every signature binds through RoundContext.digest with the session and round.

* ``KeyHolder`` (PartyId KEYHOLDER, its own node): holds the HE secret key. On the server's OPEN
  it takes part in (session, round) only if that round is past every round of the session it took
  part in (its ReplayGuard, saved in its state), and signs its public key for that round. On the
  server's AGGREGATE, which carries the included clients' signed uploads themselves, it decrypts at
  most one sum per opened round, only if every upload is signed by a distinct client of its pinned
  directory for this configuration, session and round, hashes to the digest the client signed, is
  encrypted under its key, and there are at least min_clients of them. It re-adds the uploads
  itself, so the sum it decrypts is the sum of those uploads and nothing else. A request refused
  before decryption leaves the round open (the server may resend it without the client the refusal
  names); once it decrypts, the round is spent, even if the sum then fails its range check. With
  central DP it adds the mechanism's release noise to the sum before anyone sees it
  (RoundCodec.release, called by the decoding party of every scheme); the server charges the
  round to its accountant (RoundCodec.charge).
* ``Client`` (client/i): on SETUP it checks the key holder's signature on the public key (the key
  holder's identity is pinned) for this configuration, session and round, takes part in that round
  only if it is past every round of the session it took part in, loads the key and does its
  offline work (Paillier: its encryptions of zero); on REQUEST it calls `update()` once, encrypts,
  and signs SHA-256 of its upload with its Ed25519 identity, bound to the round and its index. Its
  round state (the key; Paillier's unused randomness) is part of its saved state and used once.

An upload is one fixed layout: header, the key's fingerprint, the ciphertext count, the scheme's
ciphertexts (count x `params.ciphertext_bytes`, one raw section), then SHA-256 of all that and the
client's signature. The SHA-256 digest is what its client signs, not an authenticator by itself: the
Ed25519 signature is the authentication; the server checks it over the stated digest and the layout
without hashing the ciphertexts, the key holder hashes them. Large sections are never copied to be
read: the client joins its message once, the server forwards uploads as byte arrays in one AGGREGATE,
and the key holder reads every upload and its section as views of that message.
"""

from __future__ import annotations

import hashlib
import math
import struct
from abc import ABC, abstractmethod
from collections.abc import Callable, Container
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np

from securefl import crypto
from securefl.dp.accounting import Accountant
from securefl.encoding import RoundCodec
from securefl.errors import ConfigError, ProtocolError
from securefl.he import state
from securefl.keys import Identity
from securefl.protocol import Party, UpdateSource
from securefl.session import ReplayGuard, RoundConfig, RoundContext
from securefl.wire import (
    KEYHOLDER,
    PARTY_HEADER_SIZE,
    SERVER,
    Channel,
    Header,
    Kind,
    PartyId,
    Reader,
    Role,
    Writer,
    peek,
)

STAGES = ("setup", "upload", "decrypt")
DIGEST_BYTES = 32
SIGNATURE_BYTES = crypto.SIGNATURE_BYTES
UPLOAD_TRAILER = DIGEST_BYTES + SIGNATURE_BYTES  # an upload ends with SHA-256(body) and its client's signature
UPLOAD_PREFIX = PARTY_HEADER_SIZE + DIGEST_BYTES + 4  # header, key fingerprint, u32 ciphertext count
MAX_PUBLIC_BYTES = 1 << 26
L_KEY = b"securefl/he/public-key"
L_UPLOAD = b"securefl/he/upload"
L_RESULT = b"securefl/he/result"


class Kinds(NamedTuple):
    """A scheme's message kinds (wire.Kind), in stage order."""

    open: Kind  # server -> key holder
    key: Kind  # key holder -> server: signed public key
    setup: Kind  # server -> client: the signed public key
    ready: Kind  # client -> server
    request: Kind  # server -> client: asks for the upload
    upload: Kind  # client -> server
    aggregate: Kind  # server -> key holder: the included signed uploads
    result: Kind  # key holder -> server: the signed ring vector of the sum


def digest(data: bytes | memoryview) -> bytes:
    """SHA-256 (hardware-accelerated on CPUs with SHA extensions)."""
    return hashlib.sha256(data).digest()


def resolve_min_clients(policy: int | float | None, n_clients: int) -> int:
    """The fewest distinct clients whose sum the key holder decrypts in a round of n_clients.

    None: max(2, ceil(n / 2)); a float f in (0, 1]: max(2, ceil(f n)); an int: itself. Never more
    than n (a federation of one client has nothing to hide its update among).
    """
    if policy is None:
        policy = 0.5
    if isinstance(policy, bool) or not isinstance(policy, (int, float)):
        raise ConfigError(f"min_clients must be an int >= 1, a float in (0, 1] or None, got {policy!r}")
    if isinstance(policy, float):
        if not 0 < policy <= 1:
            raise ConfigError(f"min_clients as a fraction must be in (0, 1], got {policy}")
        return min(n_clients, max(2, math.ceil(policy * n_clients)))
    if policy < 1:
        raise ConfigError(f"min_clients must be >= 1, got {policy}")
    if policy > n_clients:
        raise ConfigError(f"min_clients={policy} exceeds the {n_clients} clients of the round")
    return policy


@dataclass(frozen=True)
class Policy:
    """What every party of an HE deployment derives from its own RoundConfig (see the module docstring)."""

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
        need = resolve_min_clients(config.min_clients or None, config.n)
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


def key_digest(ctx: RoundContext, public: bytes) -> bytes:
    """What the key holder signs: its public key, for one round."""
    return ctx.digest(L_KEY, public)


def upload_digest(ctx: RoundContext, index: int, body_digest: bytes) -> bytes:
    """What client `index` signs: its upload's SHA-256, for one round."""
    return ctx.digest(L_UPLOAD, struct.pack("<I", index), body_digest)


def result_digest(ctx: RoundContext, included: np.ndarray, ring: np.ndarray) -> bytes:
    """What the key holder signs: the clients it summed and the sum's ring vector, for one round."""
    return ctx.digest(L_RESULT, np.asarray(included, "<u4").tobytes(), np.ascontiguousarray(ring).tobytes())


def write_key(w: Writer, policy: Policy, public: bytes, signature: bytes) -> bytes:
    """KEY and SETUP: configuration fingerprint, public key, the key holder's signature."""
    return w.raw(policy.fingerprint).blob(public).raw(signature).finish()


def read_key(r: Reader, policy: Policy, ctx: RoundContext) -> tuple[bytes, bytes]:
    """(public key, signature) of a KEY or SETUP message, once the pinned key holder's signature checks out."""
    policy.read_fingerprint(r)
    public, signature = r.blob(MAX_PUBLIC_BYTES), r.raw(SIGNATURE_BYTES)
    r.end()
    policy.config.directory.verify(KEYHOLDER, signature, key_digest(ctx, public), r.what)
    return public, signature


class Upload(NamedTuple):
    """A signed upload whose signature and layout checked out (views of the message: nothing copied)."""

    index: int  # its client
    section: memoryview  # the ciphertexts: count x params.ciphertext_bytes
    body: memoryview  # what the stated digest must be SHA-256 of
    stated: bytes
    who: str


def upload_bytes(params: Any) -> int:
    """Size of one client's signed upload under these HE parameters."""
    return UPLOAD_PREFIX + params.count * params.ciphertext_bytes + UPLOAD_TRAILER


def write_upload(w: Writer, key: bytes, params: Any, section: Any) -> tuple[bytes, Any]:
    """(prefix, SHA-256 state of prefix + section): the upload's fixed head written by `w`, hashed with the
    section (a bytes-like object of count x ciphertext_bytes) without joining them."""
    prefix = w.raw(key).u32(params.count).finish()
    h = hashlib.sha256(prefix)
    h.update(section)
    return prefix, h


def open_upload(policy: Policy, ctx: RoundContext, payload: bytes | memoryview, key: bytes, seen: Container[int],
                who: str, sender: PartyId | None = None) -> Upload:
    """An upload addressed to the server whose client's signature over the stated digest checks out, encrypted
    under the key with fingerprint `key`, of the round's count and length of ciphertexts."""
    if not isinstance(payload, (bytes, bytearray, memoryview)) or len(payload) < UPLOAD_PREFIX + UPLOAD_TRAILER:
        raise ProtocolError(f"{who}: expected a signed upload")
    view = memoryview(payload).cast("B")
    body, stated, signature = view[:-UPLOAD_TRAILER], bytes(view[-UPLOAD_TRAILER:-SIGNATURE_BYTES]), bytes(
        view[-SIGNATURE_BYTES:])
    r = Channel(SERVER, ctx.session, ctx.round).read(body, policy.kinds.upload, sender or Role.CLIENT, who)
    index = r.header.sender.index
    if index >= policy.n or index in seen:
        raise ProtocolError(f"{who}: upload of an unknown or repeated client ({r.header.sender})")
    what = f"{who}: upload of client/{index}"
    policy.config.directory.verify(PartyId.client(index), signature, upload_digest(ctx, index, stated), what)
    if r.raw(DIGEST_BYTES) != key:
        raise ProtocolError(f"{what}: encrypted under another key")
    params = policy.params
    if r.u32() != params.count:
        raise ProtocolError(f"{what}: wrong number of ciphertexts")
    if len(view) != upload_bytes(params):  # the rest of the body is the section: fixed-width ciphertexts
        raise ProtocolError(f"{what}: {len(body) - UPLOAD_PREFIX} bytes of ciphertexts, expected "
                            f"{params.count} x {params.ciphertext_bytes}")
    return Upload(index, body[UPLOAD_PREFIX:], body, stated, what)


def write_uploads(w: Writer, uploads: list[bytes]) -> bytes:
    """AGGREGATE's uploads: a count, then each upload as a byte array (the key holder reads views of them)."""
    w.u32(len(uploads))
    for upload in uploads:
        w.array(np.frombuffer(upload, np.uint8))
    return w.finish()


class KeyHolder(Party, ABC):
    """Key pair, identity and replay state; decrypts at most one checked sum per opened round (see the module)."""

    id = KEYHOLDER
    policy_of: ClassVar[Callable[..., Policy]]  # the scheme's policy(config, accountant=None)

    def __init__(self, config: RoundConfig, identity: Identity, saved: bytes | None = None):
        self.policy = self.policy_of(config)
        self._identity = self.policy.identity(identity, Role.KEYHOLDER)
        self._open: tuple[bytes, int] | None = None  # the round opened and not yet decrypted
        if saved is None:
            self._guard = ReplayGuard()
            self._generate()
        else:
            s = state.load(saved, self.policy.scheme, self.id, self.policy.fingerprint)
            self._guard, self._open = s.guard, state.read_round(s.fields.get("open"), str(self.id))
            self._restore(s.blobs)
        self.public = self._public_bytes()
        self._fingerprint = digest(self.public)

    # --- what each scheme supplies -----------------------------------------------------------------

    @abstractmethod
    def _generate(self) -> None:
        """Create a fresh key pair (OS randomness) for this policy's parameters."""

    @abstractmethod
    def _restore(self, blobs: dict[str, bytes]) -> None:
        """Load the key pair from `_secret_blobs` output; ProtocolError when it does not fit the parameters."""

    @abstractmethod
    def _secret_blobs(self) -> dict[str, bytes]:
        """The key pair (secret key included) as named byte strings, for state_dict."""

    @abstractmethod
    def _public_bytes(self) -> bytes:
        """The public key as it travels."""

    @abstractmethod
    def _add(self, acc: Any, section: memoryview, who: str) -> Any:
        """Parse one upload's ciphertexts (count x ciphertext_bytes), check them and add them to `acc` (None at
        first); ProtocolError naming `who` when one is malformed."""

    @abstractmethod
    def _decrypt(self, acc: Any, count: int, who: str) -> np.ndarray:
        """Decrypt the sum of `count` uploads; range-check it; return the codec's ring vector."""

    # --- the protocol ------------------------------------------------------------------------------

    def handle(self, message: bytes, update: UpdateSource | None = None) -> bytes:
        h = peek(message, f"{self.id}: message")
        if h.kind == self.policy.kinds.open:
            return self._on_open(message, h)
        if h.kind == self.policy.kinds.aggregate:
            return self._on_aggregate(message)
        raise ProtocolError(f"{self.id}: unexpected message kind {h.kind}")

    def _on_open(self, message: bytes, h: Header) -> bytes:
        ch = Channel(self.id, h.session, h.round)
        r = ch.read(message, self.policy.kinds.open, SERVER)
        self.policy.read_fingerprint(r)
        r.end()
        self._guard.admit(h.session, h.round, str(self.id))
        self._open = (h.session, h.round)
        signature = self._identity.sign(key_digest(self.policy.context(h.session, h.round), self.public))
        return write_key(ch.write(self.policy.kinds.key, SERVER), self.policy, self.public, signature)

    def _on_aggregate(self, message: bytes) -> bytes:
        pol = self.policy
        what = f"{self.id}: {pol.scheme} request"
        if self._open is None:
            raise ProtocolError(f"{what}: no round open (one decryption per opened round)")
        session, round_ = self._open
        ch, ctx = Channel(self.id, session, round_), pol.context(session, round_)
        r = ch.read(message, pol.kinds.aggregate, SERVER, what)
        pol.read_fingerprint(r)
        count = r.u32()
        if not pol.min_clients <= count <= pol.n:
            raise ProtocolError(f"{what}: a sum of {count} clients; the key holder decrypts sums of "
                                f"{pol.min_clients} to {pol.n}")
        acc, included = None, []
        for _ in range(count):  # one upload at a time, each a view of the request: nothing is copied
            up = open_upload(pol, ctx, memoryview(r.array(np.uint8)), self._fingerprint, included, what)
            if digest(up.body) != up.stated:
                raise ProtocolError(f"{up.who}: its bytes do not hash to the digest it states (corrupted after "
                                    "signing, or a lying client)")
            acc = self._add(acc, up.section, up.who)
            included.append(up.index)
        r.end()
        self._open = None  # the round is spent before anything is decrypted
        ring = self._decrypt(acc, count, what)
        pol.codec.release(ring)  # central DP: the key holder is the decoding party; the sum leaves it noised
        ids = np.array(included, np.uint32)
        signature = self._identity.sign(result_digest(ctx, ids, ring))
        return ch.write(pol.kinds.result, SERVER).raw(pol.fingerprint).array(ids).array(ring).raw(signature).finish()

    def state_dict(self) -> bytes:
        """The HE key pair (secret key included), the replay guard and the round it has open, if any."""
        opened = None if self._open is None else state.round_field(*self._open)
        return state.dump(self.policy.scheme, self.id, self.policy.fingerprint, self._guard, {"open": opened},
                          self._secret_blobs())


class Client(Party, ABC):
    """Checks the key holder's signed key, encrypts its own update once, signs the upload (see the module)."""

    policy_of: ClassVar[Callable[..., Policy]]  # the scheme's policy(config, accountant=None)

    def __init__(self, config: RoundConfig, identity: Identity, saved: bytes | None = None):
        self.policy = self.policy_of(config)
        self._identity = self.policy.identity(identity, Role.CLIENT)
        self.id: PartyId = identity.party
        self._round: tuple[bytes, int] | None = None  # the round set up and not yet uploaded
        self._public: bytes | None = None  # that round's public key
        self._key: bytes | None = None  # and its fingerprint
        self.clipped = 0
        if saved is None:
            self._guard = ReplayGuard()
            return
        s = state.load(saved, self.policy.scheme, self.id, self.policy.fingerprint)
        self._guard, opened = s.guard, state.read_round(s.fields.get("round"), str(self.id))
        if opened is not None:
            public = s.blobs.pop("public", None)
            if public is None:
                raise ProtocolError(f"{self.id}: saved state: a round without its public key")
            self._take_key(public)
            self._restore_round(s.blobs)
            self._round, self._public, self._key = opened, public, digest(public)

    # --- what each scheme supplies -----------------------------------------------------------------

    @abstractmethod
    def _take_key(self, public: bytes) -> None:
        """Parse and check the key holder's public key (ProtocolError when it is not one of this policy)."""

    def _prepare(self) -> None:
        """Offline work once the key is known (Paillier: encryptions of zero)."""

    def _round_blobs(self) -> dict[str, bytes]:
        """That offline work, for state_dict."""
        return {}

    def _restore_round(self, blobs: dict[str, bytes]) -> None:
        """Load `_round_blobs` output."""

    @abstractmethod
    def _ciphertexts(self, update: object, weight: float) -> tuple[Any, int]:
        """Encode and encrypt this client's update: (its count x ciphertext_bytes ciphertexts as one bytes-like
        section, the number of values clipped)."""

    # --- the protocol ------------------------------------------------------------------------------

    def handle(self, message: bytes, update: UpdateSource | None = None) -> bytes:
        h = peek(message, f"{self.id}: message")
        if h.kind == self.policy.kinds.setup:
            return self._on_setup(message, h)
        if h.kind == self.policy.kinds.request:
            return self._on_request(message, h, update)
        raise ProtocolError(f"{self.id}: unexpected message kind {h.kind}")

    def _on_setup(self, message: bytes, h: Header) -> bytes:
        ch = Channel(self.id, h.session, h.round)
        r = ch.read(message, self.policy.kinds.setup, SERVER, f"{self.id}: key holder's key")
        public, _ = read_key(r, self.policy, self.policy.context(h.session, h.round))
        self._guard.admit(h.session, h.round, str(self.id))
        self._round = self._public = self._key = None  # one round at a time: an earlier one it set up is dropped
        self._take_key(public)
        self._prepare()
        self._round, self._public, self._key = (h.session, h.round), public, digest(public)
        return ch.write(self.policy.kinds.ready, SERVER).finish()

    def _on_request(self, message: bytes, h: Header, update: UpdateSource | None) -> bytes:
        if self._round != (h.session, h.round):
            raise ProtocolError(f"{self.id}: asked for its upload in a round it has no key for (before the key "
                                "holder's key arrived, or after it uploaded)")
        ch = Channel(self.id, h.session, h.round)
        ch.read(message, self.policy.kinds.request, SERVER).end()
        if update is None:
            raise ProtocolError(f"{self.id}: asked for its input, but no update was supplied")
        values, weight = update()
        section, self.clipped = self._ciphertexts(values, weight)
        key, self._round, self._public, self._key = self._key, None, None, None  # one upload per round
        prefix, sha = write_upload(ch.write(self.policy.kinds.upload, SERVER), key, self.policy.params, section)
        d = sha.digest()
        signature = self._identity.sign(upload_digest(self.policy.context(h.session, h.round), self.id.index, d))
        return b"".join((prefix, section, d, signature))  # the one copy of the ciphertexts

    def state_dict(self) -> bytes:
        """The replay guard and, between SETUP and REQUEST, the round's public key and offline work."""
        if self._round is None:
            return state.dump(self.policy.scheme, self.id, self.policy.fingerprint, self._guard, {"round": None}, {})
        return state.dump(self.policy.scheme, self.id, self.policy.fingerprint, self._guard,
                          {"round": state.round_field(*self._round)},
                          {"public": self._public, **self._round_blobs()})
