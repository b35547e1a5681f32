"""Batched Shamir secret sharing of 32-byte secrets over the prime field F_p, p = 2^61 - 1.

A 32-byte secret is split into ELEMS = 5 field elements (four 7-byte chunks and one 4-byte
chunk, each far below p), and each element is shared with its own random polynomial of degree
t - 1 whose coefficients are uniform in F_p (from os.urandom, rejection-sampled). Any t - 1
shares are then independent of the secret (information-theoretic hiding, element by element);
any t shares determine it. Holder h gets the evaluations at x = h + 1 (never 0).

One call shares all secrets of a client for all its holders (split_secrets); the server
reconstructs every secret of a round in one batched Lagrange interpolation whose weights are
computed once per distinct set of share holders (reconstruct).
"""

from __future__ import annotations

import os

import numpy as np

from securefl.errors import ConfigError, InputError, ProtocolError

P = (1 << 61) - 1
SECRET_BYTES = 32
ELEMS = 5  # field elements per 32-byte secret
_CHUNK = 7  # bytes per element (< 2^56 < p)


def random_elements(shape: tuple[int, ...]) -> np.ndarray:
    """Uniform elements of F_p from os.urandom (61 random bits, the single value p redrawn)."""
    out = np.frombuffer(os.urandom(8 * int(np.prod(shape))), np.uint64).reshape(shape) & np.uint64(P)
    bad = out == np.uint64(P)
    while bad.any():  # probability 2^-61 per element
        out[bad] = np.frombuffer(os.urandom(8 * int(bad.sum())), np.uint64) & np.uint64(P)
        bad = out == np.uint64(P)
    return out


def secrets_to_elements(secrets: list[bytes]) -> np.ndarray:
    """32-byte secrets -> (len, ELEMS) field elements, little-endian 7-byte chunks."""
    if any(len(s) != SECRET_BYTES for s in secrets):
        raise InputError("shamir: secrets must be 32 bytes each")
    raw = np.zeros((len(secrets), ELEMS * _CHUNK), np.uint8)
    raw[:, :SECRET_BYTES] = np.frombuffer(b"".join(secrets), np.uint8).reshape(len(secrets), SECRET_BYTES)
    words = np.zeros((len(secrets), ELEMS, 8), np.uint8)
    words[:, :, :_CHUNK] = raw.reshape(len(secrets), ELEMS, _CHUNK)
    return words.view("<u8").reshape(len(secrets), ELEMS).astype(np.uint64)


_LIMITS = np.array([1 << 56] * (ELEMS - 1) + [1 << 32], np.uint64)


def valid_secrets(elems: np.ndarray) -> np.ndarray:
    """Per row of (count, ELEMS) reconstructed elements: whether it encodes a 32-byte secret (every
    element within its chunk's range); False means the shares were inconsistent."""
    return (np.asarray(elems, np.uint64).reshape(-1, ELEMS) < _LIMITS).all(axis=1)


def elements_to_secrets(elems: np.ndarray, who: str = "shamir") -> list[bytes]:
    """Inverse of secrets_to_elements; elements out of a chunk's range mean inconsistent shares."""
    elems = np.ascontiguousarray(elems, dtype="<u8").reshape(-1, ELEMS)
    if not valid_secrets(elems).all():
        raise ProtocolError(f"{who}: reconstructed value is not a secret (inconsistent shares)")
    raw = elems.view(np.uint8).reshape(-1, ELEMS, 8)[:, :, :_CHUNK].reshape(-1, ELEMS * _CHUNK)
    return [bytes(r[:SECRET_BYTES]) for r in raw]


def split_secrets(secrets: list[bytes], threshold: int, holders: np.ndarray) -> np.ndarray:
    """Shares of all `secrets` for all `holders` (party indices): (len(holders), len(secrets) * ELEMS)."""
    holders = np.asarray(holders, np.int64)
    if not 1 <= threshold <= holders.size:
        raise ConfigError(f"shamir: threshold {threshold} must be in [1, {holders.size}]")
    flat = secrets_to_elements(secrets).reshape(-1)
    coeffs = random_elements((flat.size, threshold - 1))
    out = np.empty((holders.size, flat.size), np.uint64)
    from securefl.crypto import _kernels  # Numba loads on first use

    _kernels.share_eval(flat, coeffs, (holders + 1).astype(np.uint64), out)
    return out


def reconstruct(holders: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """Secrets at x = 0 from shares: holders (G, t) party indices, shares (G, t, S) -> (G, S).

    Interpolation weights are computed once per distinct row of `holders` and reused.
    """
    holders = np.asarray(holders, np.int64)
    if holders.ndim != 2 or shares.shape[:2] != holders.shape:
        raise InputError("shamir: holders must be (G, t) and shares (G, t, S)")
    uniq, inverse = np.unique(holders, axis=0, return_inverse=True)
    lam = np.empty(uniq.shape, np.uint64)
    from securefl.crypto import _kernels

    if not _kernels.lagrange_at_zero((uniq + 1).astype(np.uint64), lam):
        raise InputError("shamir: share holders must be distinct non-negative indices")
    out = np.empty((holders.shape[0], shares.shape[2]), np.uint64)
    _kernels.combine(lam[inverse.reshape(-1)], np.ascontiguousarray(shares, np.uint64), out)
    return out


def encode_shares(rows: np.ndarray) -> bytes:
    """Share elements as little-endian uint64 words."""
    return np.ascontiguousarray(rows, dtype="<u8").tobytes()


def decode_shares(data: bytes, count: int, who: str) -> np.ndarray:
    """Inverse of encode_shares: exactly `count` elements, each < p, else ProtocolError."""
    if len(data) != 8 * count:
        raise ProtocolError(f"{who}: share block of {len(data)} bytes, expected {8 * count}")
    elems = np.frombuffer(data, "<u8").astype(np.uint64)
    if (elems >= np.uint64(P)).any():
        raise ProtocolError(f"{who}: share element outside the field")
    return elems
