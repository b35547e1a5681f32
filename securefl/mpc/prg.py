"""Mask expansion: AES-128-CTR keystream read directly as ring words.

A 32-byte seed is stretched through HKDF-SHA256 (label, session id and party ids as context)
into a 16-byte AES key and a 16-byte initial counter block; the keystream is written into a
preallocated buffer and added to (or subtracted from) an accumulator in place. In a
power-of-two ring the words are uniform with no rejection step.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from securefl.mpc.crypto import hkdf

SEED_BYTES = 32


def stream_key(seed: bytes, label: bytes, session: bytes, *ids: int) -> bytes:
    """32 bytes: AES-128 key || initial counter block, bound to label, session and ids."""
    return hkdf(seed, label, session, *ids, length=32)


class Expander:
    """Expands keys into `length` ring words of `dtype` through one reusable buffer.

    Not thread-safe; one per party. The array returned by expand() is overwritten by the next call.
    """

    def __init__(self, length: int, dtype: np.dtype | type):
        self.dtype = np.dtype(dtype)
        self.length = length
        nbytes = length * self.dtype.itemsize
        self._zeros = bytes(nbytes)
        self._buf = bytearray(nbytes + 15)  # update_into may need a block of slack
        self._words = np.frombuffer(self._buf, self.dtype, count=length)
        self.bytes_expanded = 0

    def expand(self, key: bytes) -> np.ndarray:
        """The keystream of `key` (from stream_key) as ring words."""
        enc = Cipher(algorithms.AES(key[:16]), modes.CTR(key[16:32])).encryptor()
        enc.update_into(self._zeros, self._buf)
        self.bytes_expanded += len(self._zeros)
        return self._words

    def add(self, acc: np.ndarray, key: bytes) -> None:
        """acc += PRG(key) mod 2^b, in place."""
        np.add(acc, self.expand(key), out=acc)

    def sub(self, acc: np.ndarray, key: bytes) -> None:
        """acc -= PRG(key) mod 2^b, in place."""
        np.subtract(acc, self.expand(key), out=acc)


def aes_ctr_throughput(nbytes: int = 64 << 20, repeats: int = 3) -> float:
    """Measured AES-128-CTR keystream bytes per second on this machine (best of `repeats`)."""
    import os
    import time

    exp = Expander(nbytes // 4, np.uint32)
    best = float("inf")
    for _ in range(repeats):
        key = os.urandom(32)
        t0 = time.perf_counter()
        exp.expand(key)
        best = min(best, time.perf_counter() - t0)
    return nbytes / best
