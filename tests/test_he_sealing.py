"""securefl.he.sealing on its own: what a client seals, only the key holder's round key opens, for that round and
client, at any length (across the client's chunk boundaries), and any flipped bit is refused."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from securefl.errors import ProtocolError
from securefl.he import sealing
from securefl.session import RoundContext

CTX = RoundContext(bytes(range(32)), bytes(16), 3)
CHUNK = 1 << 20  # the client seals a chunk of this size at a time


def sealed_copy(public: bytes, data: bytes, ctx: RoundContext = CTX, index: int = 7) -> bytes:
    buf = bytearray(data)
    ephemeral, tag = sealing.seal(public, buf, ctx, index)
    return ephemeral + bytes(buf) + tag


@pytest.mark.parametrize("size", [1, 15, 16, 17, 512, CHUNK - 1, CHUNK, CHUNK + 17, 2 * CHUNK + 5])
def test_round_trip_at_every_length(size):
    private, public = sealing.new_key()
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8)
    plain = data.tobytes()
    ephemeral, tag = sealing.seal(public, data, CTX, 7)  # in place, as a client seals its numpy section
    assert data.tobytes() != plain and len(ephemeral) + len(tag) == sealing.OVERHEAD
    opened = sealing.Opener(private, public, CTX, sealing.buffer(size)).open(
        memoryview(ephemeral + data.tobytes() + tag), 7, "test")
    assert bytes(opened) == plain


def test_only_its_round_client_and_key_open_it():
    private, public = sealing.new_key()
    other, other_public = sealing.new_key()
    sealed = memoryview(sealed_copy(public, b"ciphertexts" * 50))
    size = len(sealed) - sealing.OVERHEAD
    assert bytes(sealing.Opener(private, public, CTX, sealing.buffer(size)).open(sealed, 7, "t")) == b"ciphertexts" * 50
    for opener, index in ((sealing.Opener(private, public, RoundContext(CTX.config_fingerprint, CTX.session, 4),
                                          sealing.buffer(size)), 7),
                          (sealing.Opener(private, public, RoundContext(bytes(32), CTX.session, 3),
                                          sealing.buffer(size)), 7),
                          (sealing.Opener(private, public, CTX, sealing.buffer(size)), 6),
                          (sealing.Opener(other, other_public, CTX, sealing.buffer(size)), 7)):
        with pytest.raises(ProtocolError, match="who: its ciphertexts do not open"):
            opener.open(sealed, index, "who")
    with pytest.raises(ProtocolError, match="who: a sealed section of"):
        sealing.Opener(private, public, CTX, sealing.buffer(size + 1)).open(sealed, 7, "who")


@settings(max_examples=60, deadline=None)
@given(pos=st.integers(0, 32 + 200 + 16 - 1), flip=st.integers(1, 255))
def test_any_flipped_byte_is_refused(pos, flip):
    private, public = sealing.new_key()
    sealed = bytearray(sealed_copy(public, bytes(200)))
    sealed[pos] ^= flip
    with pytest.raises(ProtocolError, match="who: "):
        sealing.Opener(private, public, CTX, sealing.buffer(200)).open(memoryview(sealed), 7, "who")


def test_saved_sealing_key_loads_to_the_same_pair():
    private, public = sealing.new_key()
    assert sealing.load_key(private.private_bytes_raw(), "t")[1] == public
    with pytest.raises(ProtocolError, match="t: a sealing key of 31 bytes"):
        sealing.load_key(bytes(31), "t")
