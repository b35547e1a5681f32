"""What CKKS and Paillier share: the signed round key, the sealed and signed uploads, and the client and key-holder
state machines (the server, the coordinator, is securefl.he.server). Every party builds its
securefl.he.policy.Policy from its own RoundConfig, never from a message.

* ``KeyHolder`` (PartyId KEYHOLDER, its own node): holds the HE secret key. On the server's OPEN
  it takes part in (session, round) only if that round is past every round of the session it took
  part in (its ReplayGuard, saved in its state), makes that round's sealing key pair
  (securefl.he.sealing) and signs its *round key*, its HE public key followed by the sealing key's
  public half, for that round. On the server's AGGREGATE, which carries the included clients'
  sealed, signed uploads themselves, it decrypts at most one sum per opened round, only if every
  upload is signed by a distinct client of its pinned directory for this configuration, session and
  round, hashes to the digest the client signed, names this round's key, opens under the round's
  sealing key for its client, and there are at least min_clients of them. It re-adds the opened
  ciphertexts itself, so the sum it decrypts is the sum of those uploads and nothing else. A request
  refused before decryption leaves the round open (the server may resend it without the client the
  refusal names); once it decrypts, the round is spent and its sealing key dropped, even if the sum
  then fails its range check. With central DP it adds the mechanism's release noise to the sum
  before anyone sees it (RoundCodec.release, called by the decoding party of every scheme); the
  server charges the round to its accountant (RoundCodec.charge).
* ``Client`` (client/i): on SETUP it checks the key holder's signature on the round key (the key
  holder's identity is pinned) for this configuration, session and round, takes part in that round
  only if it is past every round of the session it took part in, loads the HE key and does its
  offline work (Paillier: its encryptions of zero); on REQUEST it calls `update()` once, encrypts,
  seals the ciphertexts in place to the round's sealing key and signs SHA-256 of its upload with its
  Ed25519 identity, bound to the round and its index. Its round state (the round key; Paillier's
  unused randomness) is part of its saved state and used once.

Why sealed: HE ciphertexts are malleable, so a server that saw the uploads could give one client's
ciphertexts to a colluding client, which would upload their homomorphic negation under its own
signature, and the sum of three distinct signed clients would be one client's update. The server and
the clients see no HE ciphertext at all, only sealed sections they cannot open or change: every upload
in a sum was made without any other client's ciphertexts, of this round or an earlier one, so the
server isolates one update only with min_clients - 1 colluding clients (each uploading zeros). The
key holder is sent every upload and opens them to re-add them: it could decrypt any one, so the
individual updates rest on it decrypting only their sum (splitting its key, threshold decryption, is
the next step); and sums assume clients encode honestly (input validity is future work). The whole
threat model, with what does not compose over rounds: securefl.he.aggregator.HEAggregator.

An upload is one fixed layout: header, the round key's fingerprint, the ciphertext count, the sealed
section (the ephemeral X25519 key, count x `params.ciphertext_bytes` of ciphertexts encrypted in
place, the GCM tag), then SHA-256 of all that and the client's signature. The SHA-256 digest is what
its client signs, not an authenticator by itself: the Ed25519 signature is the authentication; the
server checks it over the stated digest and the layout without hashing the section, the key holder
hashes it before opening it, so a section that hashes right but does not open was sealed wrongly by
its own client, which the refusal names. Large sections are never copied to be read: the client
seals in place and joins its message once, the server forwards uploads as byte arrays in one
AGGREGATE, and the key holder reads every upload as a view of that message and opens each into one
reusable buffer.
"""

from __future__ import annotations

import hashlib
import struct
from abc import ABC, abstractmethod
from collections.abc import Callable, Container
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import numpy as np

from securefl import crypto, wire
from securefl.crypto.primitives import check_x25519_public
from securefl.errors import ProtocolError
from securefl.he import sealing, state
from securefl.he.policy import DIGEST_BYTES, Policy
from securefl.keys import Identity
from securefl.protocol import Party, UpdateSource
from securefl.session import ReplayGuard, RoundConfig, RoundContext
from securefl.wire import KEYHOLDER, SERVER, Channel, Header, PartyId, Reader, Role, Writer, peek

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

STAGES = ("setup", "upload", "decrypt")
SIGNATURE_BYTES = crypto.SIGNATURE_BYTES
UPLOAD_TRAILER = DIGEST_BYTES + SIGNATURE_BYTES  # an upload ends with SHA-256(body) and its client's signature
UPLOAD_PREFIX = wire.PARTY_HEADER_SIZE + DIGEST_BYTES + 4  # header, round key fingerprint, u32 ciphertext count
MAX_PUBLIC_BYTES = 1 << 26
L_KEY = b"securefl/he/public-key"
L_UPLOAD = b"securefl/he/upload"
L_RESULT = b"securefl/he/result"


def digest(data: bytes | memoryview) -> bytes:
    """SHA-256 (hardware-accelerated on CPUs with SHA extensions)."""
    return hashlib.sha256(data).digest()


def key_digest(ctx: RoundContext, public: bytes) -> bytes:
    """What the key holder signs: its round key (HE public key, then the round's sealing key), for one round."""
    return ctx.digest(L_KEY, public)


def split_round_key(key: bytes, who: str) -> tuple[bytes, bytes]:
    """(HE public key, sealing public key) of a round key; ProtocolError unless the sealing key is a valid one."""
    if len(key) <= sealing.KEY_BYTES:
        raise ProtocolError(f"{who}: a round key of {len(key)} bytes holds no HE public key")
    public, seal = key[: -sealing.KEY_BYTES], key[-sealing.KEY_BYTES :]
    check_x25519_public(seal, f"{who}: sealing key")
    return public, seal


def upload_digest(ctx: RoundContext, index: int, body_digest: bytes) -> bytes:
    """What client `index` signs: its upload's SHA-256, for one round."""
    return ctx.digest(L_UPLOAD, struct.pack("<I", index), body_digest)


def result_digest(ctx: RoundContext, included: np.ndarray, ring: np.ndarray) -> bytes:
    """What the key holder signs: the clients it summed and the sum's ring vector, for one round."""
    return ctx.digest(L_RESULT, np.asarray(included, "<u4").tobytes(), np.ascontiguousarray(ring).tobytes())


def write_key(w: Writer, policy: Policy, public: bytes, signature: bytes) -> bytes:
    """KEY and SETUP: configuration fingerprint, round key, the key holder's signature."""
    return w.raw(policy.fingerprint).blob(public).raw(signature).finish()


def read_key(r: Reader, policy: Policy, ctx: RoundContext) -> tuple[bytes, bytes]:
    """(round key, signature) of a KEY or SETUP message, once the pinned key holder's signature checks out."""
    policy.read_fingerprint(r)
    public, signature = r.blob(MAX_PUBLIC_BYTES), r.raw(SIGNATURE_BYTES)
    r.end()
    policy.config.directory.verify(KEYHOLDER, signature, key_digest(ctx, public), r.what)
    return public, signature


class Upload(NamedTuple):
    """A signed upload whose signature and layout checked out (views of the message: nothing copied)."""

    index: int  # its client
    section: memoryview  # sealed (securefl.he.sealing): count x params.ciphertext_bytes of ciphertexts
    body: memoryview  # what the stated digest must be SHA-256 of
    stated: bytes
    who: str


def upload_bytes(params: Any) -> int:
    """Size of one client's sealed, signed upload under these HE parameters."""
    return UPLOAD_PREFIX + sealing.OVERHEAD + params.count * params.ciphertext_bytes + UPLOAD_TRAILER


def write_upload(w: Writer, key: bytes, params: Any, *section: Any) -> tuple[bytes, Any]:
    """(prefix, SHA-256 state of prefix + section): the upload's fixed head written by `w`, hashed with the
    section's parts (bytes-like: ephemeral key, sealed ciphertexts, tag) without joining them."""
    prefix = w.raw(key).u32(params.count).finish()
    h = hashlib.sha256(prefix)
    for part in section:
        h.update(part)
    return prefix, h


def open_upload(policy: Policy, ctx: RoundContext, payload: bytes | memoryview, key: bytes, seen: Container[int],
                who: str, sender: PartyId | None = None) -> Upload:
    """An upload addressed to the server whose client's signature over the stated digest checks out, for the round
    key with fingerprint `key`, of the round's count and length of sealed ciphertexts."""
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
    if len(view) != upload_bytes(params):  # the rest of the body is the section: fixed-width ciphertexts, sealed
        raise ProtocolError(f"{what}: {len(body) - UPLOAD_PREFIX - sealing.OVERHEAD} bytes of ciphertexts, expected "
                            f"{params.count} x {params.ciphertext_bytes} (sealed: {sealing.OVERHEAD} bytes more)")
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
        self._seal: tuple[X25519PrivateKey, bytes] | None = None  # that round's sealing key pair (private, public)
        self._opened: bytearray | None = None  # where it opens uploads (sealing.buffer), kept across rounds
        if saved is None:
            self._guard = ReplayGuard()
            self._generate()
        else:
            s = state.load(saved, self.policy.scheme, self.id, self.policy.fingerprint)
            self._guard, self._open = s.guard, state.read_round(s.fields.get("open"), str(self.id))
            seal = s.blobs.pop("seal", None)
            if (seal is None) != (self._open is None):
                raise ProtocolError(f"{self.id}: saved state: an open round needs its sealing key, and only it")
            if seal is not None:
                self._seal = sealing.load_key(seal, f"{self.id}: saved state")
            self._restore(s.blobs)
        self.public = self._public_bytes()

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
        self._open, self._seal = (h.session, h.round), sealing.new_key()  # a round at a time: an earlier one is gone
        key = self.public + self._seal[1]
        signature = self._identity.sign(key_digest(self.policy.context(h.session, h.round), key))
        return write_key(ch.write(self.policy.kinds.key, SERVER), self.policy, key, signature)

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
        private, seal_public = self._seal
        key = digest(self.public + seal_public)
        if self._opened is None:
            self._opened = sealing.buffer(pol.params.count * pol.params.ciphertext_bytes)
        opener = sealing.Opener(private, seal_public, ctx, self._opened)
        acc, included = None, []
        for _ in range(count):  # one upload at a time, each a view of the request, opened into one buffer
            up = open_upload(pol, ctx, memoryview(r.array(np.uint8)), key, included, what)
            if digest(up.body) != up.stated:
                raise ProtocolError(f"{up.who}: its bytes do not hash to the digest it states (corrupted after "
                                    "signing, or a lying client)")
            acc = self._add(acc, opener.open(up.section, up.index, up.who), up.who)
            included.append(up.index)
        r.end()
        self._open = self._seal = None  # the round is spent, and its sealed uploads unreadable, before decryption
        ring = self._decrypt(acc, count, what)
        pol.codec.release(ring)  # central DP: the key holder is the decoding party; the sum leaves it noised
        ids = np.array(included, np.uint32)
        signature = self._identity.sign(result_digest(ctx, ids, ring))
        return ch.write(pol.kinds.result, SERVER).raw(pol.fingerprint).array(ids).array(ring).raw(signature).finish()

    def state_dict(self) -> bytes:
        """The HE key pair (secret key included), the replay guard and the round it has open, if any, with that
        round's sealing key."""
        if self._open is None:
            return state.dump(self.policy.scheme, self.id, self.policy.fingerprint, self._guard, {"open": None},
                              self._secret_blobs())
        seal = {"seal": self._seal[0].private_bytes_raw()}
        return state.dump(self.policy.scheme, self.id, self.policy.fingerprint, self._guard,
                          {"open": state.round_field(*self._open)}, {**self._secret_blobs(), **seal})


class Client(Party, ABC):
    """Checks the key holder's signed round key, encrypts its own update once, seals and signs the upload (see the
    module)."""

    policy_of: ClassVar[Callable[..., Policy]]  # the scheme's policy(config, accountant=None)

    def __init__(self, config: RoundConfig, identity: Identity, saved: bytes | None = None):
        self.policy = self.policy_of(config)
        self._identity = self.policy.identity(identity, Role.CLIENT)
        self.id: PartyId = identity.party
        self._round: tuple[bytes, int] | None = None  # the round set up and not yet uploaded
        self._public: bytes | None = None  # that round's key: HE public key, sealing key
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
                raise ProtocolError(f"{self.id}: saved state: a round without its round key")
            self._take_key(split_round_key(public, f"{self.id}: saved state")[0])
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
        """Encode and encrypt this client's update: (its count x ciphertext_bytes ciphertexts as one writable,
        C-contiguous buffer, which is sealed in place, the number of values clipped)."""

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
        he_public, _ = split_round_key(public, r.what)
        self._guard.admit(h.session, h.round, str(self.id))
        self._round = self._public = self._key = None  # one round at a time: an earlier one it set up is dropped
        self._take_key(he_public)
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
        ctx, public, key = self.policy.context(h.session, h.round), self._public, self._key
        self._round = self._public = self._key = None  # one upload per round
        ephemeral, tag = sealing.seal(public[-sealing.KEY_BYTES :], section, ctx, self.id.index)
        prefix, sha = write_upload(ch.write(self.policy.kinds.upload, SERVER), key, self.policy.params, ephemeral,
                                   section, tag)
        d = sha.digest()
        signature = self._identity.sign(upload_digest(ctx, self.id.index, d))
        return b"".join((prefix, ephemeral, section, tag, d, signature))  # the one copy of the ciphertexts

    def state_dict(self) -> bytes:
        """The replay guard and, between SETUP and REQUEST, the round key and the offline work."""
        if self._round is None:
            return state.dump(self.policy.scheme, self.id, self.policy.fingerprint, self._guard, {"round": None}, {})
        return state.dump(self.policy.scheme, self.id, self.policy.fingerprint, self._guard,
                          {"round": state.round_field(*self._round)},
                          {"public": self._public, **self._round_blobs()})
