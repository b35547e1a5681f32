"""Primitives every scheme uses: X25519/HKDF/AES-GCM/Ed25519 wrappers, the AES-CTR PRG, Shamir sharing.

`securefl.crypto` re-exports the wrappers of `securefl.crypto.primitives`; the PRG lives in
`securefl.crypto.prg` and batched Shamir sharing over GF(2^61 - 1) in `securefl.crypto.shamir`.
Scheme packages (`securefl.mpc`, `securefl.he`) import downward from here, never the reverse.
"""

from securefl.crypto.primitives import (
    NONCE_BYTES,
    PUBLIC_KEY_BYTES,
    SEAL_OVERHEAD,
    SIGNATURE_BYTES,
    TAG_BYTES,
    agree,
    context,
    ed25519_keypair,
    hkdf,
    load_x25519_public,
    open_from,
    open_sealed,
    seal,
    seal_to,
    verify,
    x25519_keypair,
)

__all__ = [
    "NONCE_BYTES",
    "PUBLIC_KEY_BYTES",
    "SEAL_OVERHEAD",
    "SIGNATURE_BYTES",
    "TAG_BYTES",
    "agree",
    "context",
    "ed25519_keypair",
    "hkdf",
    "load_x25519_public",
    "open_from",
    "open_sealed",
    "seal",
    "seal_to",
    "verify",
    "x25519_keypair",
]
