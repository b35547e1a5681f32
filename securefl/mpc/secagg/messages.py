"""SecAgg's message fields and what the round's signatures, commitments and keys bind.

Sizes of the records and shares on the wire, the domain-separation labels, and the functions both
sides use to build and check them: the signed key record, the signed survivor list, the hiding
commitment to each share and the associated data of its encryption (all bind the setup digest), the
pairwise and self-mask keys, and the bounded readers of client-id lists and survivor bitmaps.
"""

from __future__ import annotations

import hashlib
import struct

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from securefl import crypto
from securefl.crypto import shamir
from securefl.crypto.prg import stream_key
from securefl.errors import ProtocolError
from securefl.mpc.secagg.params import ShareKind
from securefl.wire import Reader

L_ADVERTISE = b"securefl/secagg/advertise"
L_COMMIT = b"securefl/secagg/self-mask-commitment"
L_SHARE_COMMIT = b"securefl/secagg/share-commitment"
L_SHARE_KEY = b"securefl/secagg/share-key"
L_SHARE = b"securefl/secagg/share"
L_PAIR = b"securefl/secagg/pairwise-mask"
L_SELF = b"securefl/secagg/self-mask"
L_SURVIVORS = b"securefl/secagg/survivors"

KEY = crypto.PUBLIC_KEY_BYTES
SIG = crypto.SIGNATURE_BYTES
DIGEST = 32  # SHA-256: setup digest, record hashes, share commitments
NONCE = 16  # commitment nonce of a share
KEYS = 3 * KEY  # c_pk, s_pk, self-mask commitment: an advertised record, then its signature when keys are signed
E = shamir.ELEMS
SHARE_BYTES = E * 8  # one share of one 32-byte secret
SHARE_PT = 8 + 2 * SHARE_BYTES + 2 * NONCE  # dealer, holder, self-mask share, key share, their nonces
SHARE_CT = crypto.NONCE_BYTES + SHARE_PT + crypto.TAG_BYTES
SHARE_ENTRY = 2 * DIGEST + SHARE_CT  # the two share commitments, then the ciphertext
REVEAL_ROW = SHARE_BYTES + NONCE  # a revealed share and its commitment nonce
PAIR_IDS = struct.Struct("<II")
_COMMIT_IDS = struct.Struct("<IIB")


def record_message(digest: bytes, u: int, record: bytes) -> bytes:
    """What client u signs when it advertises its keys: the setup digest, its id and its record."""
    return L_ADVERTISE + digest + struct.pack("<I", u) + record


def record_hash(record: bytes) -> bytes:
    return hashlib.sha256(record).digest()


def survivor_message(digest: bytes, signer: int, signer_record_hash: bytes, bitmap: bytes) -> bytes:
    """What a holder signs at the consistency check: the setup digest, its id, its own key record, the list."""
    return L_SURVIVORS + digest + struct.pack("<I", signer) + signer_record_hash + bitmap


def commit_prefix(digest: bytes) -> bytes:
    """What every share commitment of a round starts with: its label and the setup digest."""
    return L_SHARE_COMMIT + digest


def share_commitment(prefix: bytes, dealer: int, holder: int, kind: ShareKind, share: bytes, nonce: bytes) -> bytes:
    """Hiding, binding commitment to one share of `kind` and its 16-byte nonce."""
    return hashlib.sha256(prefix + _COMMIT_IDS.pack(dealer, holder, kind) + share + nonce).digest()


def share_aad(digest: bytes, dealer: int, holder: int, commitments: bytes) -> bytes:
    """Associated data of the shares `dealer` encrypts to `holder`: the setup digest and both commitments."""
    return L_SHARE + digest + PAIR_IDS.pack(dealer, holder) + commitments


def share_key(shared: bytes, session: bytes, u: int, v: int) -> bytes:
    """AES-GCM key of the shares u and v encrypt to each other (from their encryption keys' agreement)."""
    return crypto.hkdf(shared, L_SHARE_KEY, session, min(u, v), max(u, v))


def pair_key(sk: X25519PrivateKey, peer_pk: bytes | X25519PublicKey, session: bytes, u: int, v: int,
             who: str) -> bytes:
    """AES-CTR key of the pairwise mask between u and v (the same for both)."""
    return stream_key(crypto.agree(sk, peer_pk, who), L_PAIR, session, min(u, v), max(u, v))


def self_mask_key(b: bytes, session: bytes, u: int) -> bytes:
    """AES-CTR key of client u's self mask, from its seed b_u."""
    return stream_key(b, L_SELF, session, u)


def self_mask_commitment(b: bytes, session: bytes, u: int) -> bytes:
    """What u's key record commits b_u to (the server checks every reconstructed b_u against it)."""
    return crypto.hkdf(b, L_COMMIT, session, u)


def reveal_rows(shares: np.ndarray, nonces: np.ndarray) -> bytes:
    """Revealed shares (count, E) with their commitment nonces (count, NONCE) as REVEAL_ROW-byte rows."""
    out = np.empty((shares.shape[0], REVEAL_ROW), np.uint8)
    out[:, :SHARE_BYTES] = np.ascontiguousarray(shares, "<u8").view(np.uint8).reshape(-1, SHARE_BYTES)
    out[:, SHARE_BYTES:] = nonces
    return out.tobytes()


def read_ids(r: Reader, n: int) -> np.ndarray:
    """A strictly increasing array of client ids < n."""
    a = r.array(np.uint32).astype(np.int64)
    if a.size and (a[-1] >= n or (a.size > 1 and (np.diff(a) <= 0).any())):
        raise ProtocolError(f"{r.what}: client ids out of range, repeated or unsorted")
    return a


def members(a: np.ndarray, sorted_ids: np.ndarray) -> np.ndarray:
    """Elementwise: whether each of `a` is in the sorted array `sorted_ids` (np.isin for the sorted id lists a
    client keeps, without its sort and set machinery: these checks run on every message)."""
    at = np.minimum(np.searchsorted(sorted_ids, a), max(sorted_ids.size - 1, 0))
    return sorted_ids[at] == a if sorted_ids.size else np.zeros(np.shape(a), bool)


def ids(a: np.ndarray) -> np.ndarray:
    """Client ids as the wire's uint32 array."""
    return np.asarray(a).astype(np.uint32)


def bitmap(mask: np.ndarray) -> bytes:
    return np.packbits(mask, bitorder="little").tobytes()


def read_bitmap(r: Reader, n: int) -> tuple[bytes, np.ndarray]:
    raw = r.raw((n + 7) // 8)
    bits = np.unpackbits(np.frombuffer(raw, np.uint8), bitorder="little")
    if bits[n:].any():
        raise ProtocolError(f"{r.what}: survivor bitmap has bits set beyond client {n - 1}")
    return raw, bits[:n].astype(bool)
