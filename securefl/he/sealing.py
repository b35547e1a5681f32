"""An upload's ciphertexts sealed to the key holder: nobody else ever reads them, so no upload can depend on another's.

HE ciphertexts are malleable: whoever sees one can upload its homomorphic negation (CKKS: q - c per
coefficient; Paillier: c^-1 mod N^2) under its own signature, and the sum then cancels that client out.
A server that saw the uploads could isolate one update with a single colluding client. Sealed, the
server and the clients see only AES-GCM ciphertexts under keys they do not have, and a sealed section
opens only for the configuration, session, round and client index it was made for, under a key the key
holder drops once that round is decrypted.

Construction (X25519, HKDF-SHA256, AES-256-GCM, all from `cryptography`): the key holder makes an X25519
key pair for each round it opens (OS randomness) and signs its public half together with its HE public
key for that round. A client makes an ephemeral X25519 key pair per upload and derives a key and nonce,
used once, by HKDF of the shared secret and both public keys (label, session, round, client index); the
associated data binds the configuration, session, round, client index and both public keys. A sealed
section is: ephemeral public key (32) || the ciphertexts encrypted in place (same length) || tag (16).
Streamed with `update_into` at several GB/s: the client encrypts its section in place (through a
scratch buffer that stays in cache: input and output never share memory), the key holder
opens every upload into one buffer it keeps (fresh pages cost as much as the decryption) and uses none
of it before the tag checks out.
"""

from __future__ import annotations

import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from securefl import crypto
from securefl.crypto.primitives import check_x25519_public
from securefl.errors import ProtocolError
from securefl.session import RoundContext

L_SEAL = b"securefl/he/seal"
KEY_BYTES = crypto.PUBLIC_KEY_BYTES
OVERHEAD = KEY_BYTES + crypto.TAG_BYTES  # what sealing adds to a section
_AES_KEY = 32
_SLACK = 15  # update_into writes into a buffer this much longer than its input (AES block size - 1)
_CHUNK = 1 << 20  # bytes a client seals at a time, through its scratch buffer


def _cipher(secret: bytes, ephemeral: bytes, recipient: bytes, ctx: RoundContext, index: int,
            tag: bytes | None = None):
    """AES-256-GCM for one upload: key and nonce from HKDF, the context in the associated data."""
    okm = crypto.hkdf(secret + ephemeral + recipient, L_SEAL, ctx.session, ctx.round, index,
                      length=_AES_KEY + crypto.NONCE_BYTES)
    cipher = Cipher(algorithms.AES(okm[:_AES_KEY]), modes.GCM(okm[_AES_KEY:], tag))
    op = cipher.encryptor() if tag is None else cipher.decryptor()
    op.authenticate_additional_data(ctx.digest(L_SEAL, struct.pack("<I", index), ephemeral, recipient))
    return op


def new_key() -> tuple[X25519PrivateKey, bytes]:
    """The key holder's sealing key pair of one round (private key, raw public key)."""
    return crypto.x25519_keypair()


def load_key(raw: bytes, who: str) -> tuple[X25519PrivateKey, bytes]:
    """A sealing key pair saved as its 32 raw private bytes."""
    if len(raw) != KEY_BYTES:
        raise ProtocolError(f"{who}: a sealing key of {len(raw)} bytes, expected {KEY_BYTES}")
    sk = X25519PrivateKey.from_private_bytes(bytes(raw))
    return sk, sk.public_key().public_bytes_raw()


def seal(recipient: bytes, section: object, ctx: RoundContext, index: int) -> tuple[bytes, bytes]:
    """Encrypt `section` (a writable C-contiguous buffer: client `index`'s ciphertexts) in place to the sealing key
    `recipient` of round `ctx`; (ephemeral public key, tag), which go before and after it on the wire."""
    ephemeral, ephemeral_public = crypto.x25519_keypair()
    enc = _cipher(crypto.agree(ephemeral, recipient, "seal"), ephemeral_public, recipient, ctx, index)
    view, scratch = memoryview(section).cast("B"), memoryview(bytearray(_CHUNK + _SLACK))
    for start in range(0, len(view), _CHUNK):
        part = view[start : start + _CHUNK]
        part[:] = scratch[: enc.update_into(part, scratch)]
    enc.finalize()
    return ephemeral_public, enc.tag


def buffer(size: int) -> bytearray:
    """Where an Opener opens sections of `size` bytes of ciphertexts (reusable across rounds)."""
    return bytearray(size + _SLACK)


class Opener:
    """The key holder's opening of one round's sealed sections, each into the same buffer (see the module)."""

    def __init__(self, private: X25519PrivateKey, public: bytes, ctx: RoundContext, into: bytearray):
        self._private, self._public, self._ctx = private, public, ctx
        self._buffer, self._size = into, len(into) - _SLACK

    def open(self, sealed: memoryview, index: int, who: str) -> memoryview:
        """The ciphertexts client `index` sealed (a view of the buffer, valid until the next call); ProtocolError
        naming `who` unless they open for this round and client."""
        if len(sealed) != OVERHEAD + self._size:
            raise ProtocolError(f"{who}: a sealed section of {len(sealed)} bytes, expected {OVERHEAD + self._size}")
        ephemeral, tag = bytes(sealed[:KEY_BYTES]), bytes(sealed[-crypto.TAG_BYTES:])
        check_x25519_public(ephemeral, who)
        dec = _cipher(crypto.agree(self._private, ephemeral, who), ephemeral, self._public, self._ctx, index, tag)
        dec.update_into(sealed[KEY_BYTES : -crypto.TAG_BYTES], self._buffer)
        try:
            dec.finalize()
        except InvalidTag:
            raise ProtocolError(f"{who}: its ciphertexts do not open for this round and client (sealed to another "
                                "key, round or client)") from None
        return memoryview(self._buffer)[: self._size]
