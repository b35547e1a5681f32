"""Thin, safe wrappers over `cryptography`: X25519, HKDF-SHA256, AES-256-GCM, Ed25519.

Every derived key is bound to a domain-separation label and the session id; every ciphertext
carries its context (sender, receiver, round, ...) in the associated data. Failures surface as
ProtocolError, never as a library exception or a wrong plaintext.
"""

from __future__ import annotations

import os
import struct

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from securefl.errors import ProtocolError

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
NONCE_BYTES = 12
TAG_BYTES = 16
SEAL_OVERHEAD = PUBLIC_KEY_BYTES + NONCE_BYTES + TAG_BYTES


def context(label: bytes, session: bytes, *ids: int) -> bytes:
    """Domain-separated context string: label, session id and integer ids."""
    return label + b"\x00" + session + struct.pack(f"<{len(ids)}Q", *ids)


def hkdf(secret: bytes, label: bytes, session: bytes, *ids: int, length: int = 32) -> bytes:
    """HKDF-SHA256 of a secret, bound to a label, the session and ids."""
    return HKDF(hashes.SHA256(), length, salt=None, info=context(label, session, *ids)).derive(secret)


def x25519_keypair() -> tuple[X25519PrivateKey, bytes]:
    """A fresh X25519 key pair (private key object, raw 32-byte public key)."""
    sk = X25519PrivateKey.generate()
    return sk, sk.public_key().public_bytes_raw()


# The X25519 public keys of small order, as RFC 7748 (section 7) asks a protocol to refuse and libsodium's
# crypto_scalarmult_curve25519 does (its has_small_order blacklist, which this list repeats): the u-coordinates of the
# points of order 1, 2, 4 and 8 on Curve25519 and its twist -- 0, 1, p - 1 and the two of order 8 (each doubles to
# u = 1) -- and p, p + 1, non-canonical encodings of 0 and 1 (any other value >= p reduces to one of 2 ... 18).
# Little-endian, top bit clear: X25519 ignores that bit (RFC 7748 section 5), so a key is compared with it masked.
# Against each of them every exchange gives the all-zero secret, which `cryptography` refuses with ValueError; the
# tests check that, and that no other u in GF(p) has order dividing 8.
_P25519 = 2**255 - 19
_ORDER_8 = (0x00B8495F16056286FDB1329CEB8D09DA6AC49FF1FAE35616AEB8413B7C7AEBE0,
            0x57119FD0DD4E22D8868E1C58C45C44045BEF839C55B1D0B1248C50A3BC959C5F)
SMALL_ORDER_X25519 = frozenset(u.to_bytes(PUBLIC_KEY_BYTES, "little")
                               for u in (0, 1, _P25519 - 1, *_ORDER_8, _P25519, _P25519 + 1))
_SMALL_ORDER_FIRST = frozenset(k[0] for k in SMALL_ORDER_X25519)  # a fast first test: 7 of 256 first bytes


def check_x25519_public(raw: bytes, who: str) -> None:
    """ProtocolError naming `who` unless `raw` is 32 bytes and not a small-order point (SMALL_ORDER_X25519, top bit
    masked). Byte comparisons only: a party can refuse a peer's advertised key without an exchange of its own."""
    if not isinstance(raw, (bytes, bytearray)) or len(raw) != PUBLIC_KEY_BYTES:
        raise ProtocolError(f"{who}: an X25519 public key is {PUBLIC_KEY_BYTES} bytes")
    if raw[0] in _SMALL_ORDER_FIRST and bytes(raw[:-1]) + bytes((raw[-1] & 0x7F,)) in SMALL_ORDER_X25519:
        raise ProtocolError(f"{who}: X25519 public key of small order (every key agreement with it gives zero)")


def load_x25519_public(raw: bytes, who: str) -> X25519PublicKey:
    try:
        return X25519PublicKey.from_public_bytes(raw)
    except ValueError as e:
        raise ProtocolError(f"{who}: invalid X25519 public key: {e}") from None


def agree(sk: X25519PrivateKey, peer_public: bytes | X25519PublicKey, who: str) -> bytes:
    """Raw X25519 shared secret with a peer's public key, raw or loaded once (always pass it through hkdf)."""
    if not isinstance(peer_public, X25519PublicKey):
        peer_public = load_x25519_public(peer_public, who)
    try:
        return sk.exchange(peer_public)
    except ValueError as e:  # low-order point
        raise ProtocolError(f"{who}: key agreement failed: {e}") from None


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """AES-256-GCM with a random nonce: nonce || ciphertext || tag."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def open_sealed(key: bytes, blob: bytes, aad: bytes, who: str) -> bytes:
    """Inverse of seal; a wrong key, context or any flipped bit raises ProtocolError."""
    if len(blob) < NONCE_BYTES + TAG_BYTES:
        raise ProtocolError(f"{who}: ciphertext too short ({len(blob)} bytes)")
    try:
        return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except InvalidTag:
        raise ProtocolError(f"{who}: authentication failed (tampered, misaddressed or replayed)") from None


def seal_to(recipient_public: bytes, plaintext: bytes, label: bytes, session: bytes, *ids: int) -> bytes:
    """Encrypt to a public key: ephemeral X25519 + HKDF + AES-256-GCM, ids in the associated data.

    Output: ephemeral public key (32) || nonce (12) || ciphertext || tag (16).
    """
    eph, eph_pub = x25519_keypair()
    aad = context(label, session, *ids)
    key = hkdf(agree(eph, recipient_public, "seal_to") + eph_pub + recipient_public, label, session, *ids)
    return eph_pub + seal(key, plaintext, aad)


def open_from(sk: X25519PrivateKey, blob: bytes, label: bytes, session: bytes, *ids: int, who: str) -> bytes:
    """Inverse of seal_to for the holder of the recipient's private key."""
    if len(blob) < SEAL_OVERHEAD:
        raise ProtocolError(f"{who}: envelope too short ({len(blob)} bytes)")
    eph_pub = blob[:PUBLIC_KEY_BYTES]
    own = sk.public_key().public_bytes_raw()
    key = hkdf(agree(sk, eph_pub, who) + eph_pub + own, label, session, *ids)
    return open_sealed(key, blob[PUBLIC_KEY_BYTES:], context(label, session, *ids), who)


def ed25519_keypair() -> tuple[Ed25519PrivateKey, bytes]:
    sk = Ed25519PrivateKey.generate()
    return sk, sk.public_key().public_bytes_raw()


def verify(public: bytes, signature: bytes, message: bytes, who: str) -> None:
    """Check an Ed25519 signature; raise ProtocolError when it does not verify."""
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        raise ProtocolError(f"{who}: invalid signature") from None
