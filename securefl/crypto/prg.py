"""Mask expansion: AES-128-CTR keystream read directly as ring words.

A 32-byte seed is stretched through HKDF-SHA256 (label, session id and party ids as context)
into a 16-byte AES key and a 16-byte initial counter block; the keystream is written into a
preallocated buffer and added to (or subtracted from) an accumulator in place, chunk by chunk. In a
power-of-two ring the words are uniform with no rejection step.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from securefl.crypto.primitives import hkdf
from securefl.errors import InputError

SEED_BYTES = 32
CHUNK_WORDS = 1 << 16  # add/sub work in pieces that stay in the L2 cache


def stream_key(seed: bytes, label: bytes, session: bytes, *ids: int) -> bytes:
    """32 bytes: AES-128 key || initial counter block, bound to label, session and ids."""
    return hkdf(seed, label, session, *ids, length=32)


class Expander:
    """Expands keys into `length` ring words of `dtype`.

    add/sub stream the keystream through one small reused buffer of `chunk` words (cache-sized,
    so no full-length keystream array is allocated or written to memory); expand() fills one
    full-length buffer, allocated on its first use. Not thread-safe; one per party. The array
    returned by expand() is overwritten by the next call.
    """

    def __init__(self, length: int, dtype: np.dtype | type, chunk: int = CHUNK_WORDS):
        self.dtype = np.dtype(dtype)
        self.length = length
        self.bytes_expanded = 0
        self._chunk = max(1, min(chunk, length))
        self._small = self._buffers(self._chunk)
        self._full: tuple[memoryview, bytearray, np.ndarray] | None = None

    def _buffers(self, count: int) -> tuple[memoryview, bytearray, np.ndarray]:
        nbytes = count * self.dtype.itemsize
        buf = bytearray(nbytes + 15)  # update_into may need a block of slack
        return memoryview(bytes(nbytes)), buf, np.frombuffer(buf, self.dtype, count=count)

    def _encryptor(self, key: bytes) -> CipherContext:
        self.bytes_expanded += self.length * self.dtype.itemsize
        return Cipher(algorithms.AES(key[:16]), modes.CTR(key[16:32])).encryptor()

    def expand(self, key: bytes) -> np.ndarray:
        """The keystream of `key` (from stream_key) as ring words."""
        if self._full is None:
            self._full = self._buffers(self.length)
        zeros, buf, words = self._full
        self._encryptor(key).update_into(zeros, buf)
        return words

    def apply(self, acc: np.ndarray, add: Sequence[bytes] = (), sub: Sequence[bytes] = ()) -> None:
        """acc += sum of PRG(add keys) - sum of PRG(sub keys) mod 2^b, in place.

        Chunk by chunk, every keystream is streamed through the one small buffer into the same
        cache-resident slice of acc: one pass over acc, and no Python call per key per full vector.
        """
        if acc.shape != (self.length,):
            raise InputError(f"PRG: accumulator of shape {acc.shape}, expected ({self.length},)")
        streams = [(self._encryptor(k).update_into, np.add) for k in add]
        streams += [(self._encryptor(k).update_into, np.subtract) for k in sub]
        zeros, buf, words = self._small
        size = self.dtype.itemsize
        for start in range(0, self.length, self._chunk):
            count = min(self._chunk, self.length - start)
            pad, part, w = zeros[: count * size], acc[start : start + count], words[:count]
            for update, op in streams:
                update(pad, buf)  # each keystream continues across chunks
                op(part, w, out=part)

    def add(self, acc: np.ndarray, key: bytes) -> None:
        """acc += PRG(key) mod 2^b, in place (the same words as expand(key))."""
        self.apply(acc, add=(key,))

    def sub(self, acc: np.ndarray, key: bytes) -> None:
        """acc -= PRG(key) mod 2^b, in place."""
        self.apply(acc, sub=(key,))



class SecureUniform:
    """Uniform floats in [0, 1) from an AES-CTR keystream under a fresh os.urandom key per call.

    Offers numpy Generator's `random(size)`, so code that takes a generator (the codec's stochastic
    rounding) draws from the OS CSPRNG instead of a seeded simulation generator.
    """

    def random(self, size: int) -> np.ndarray:
        words = Expander(max(int(size), 1), np.uint64).expand(os.urandom(SEED_BYTES))[:size]
        return (words >> np.uint64(11)) * 2.0**-53
