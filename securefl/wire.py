"""Message encoding: versioned, length-checked, no pickle.

Every message starts with a fixed header: magic, version, message kind, session id, round and
sender id. Readers check all of them against what the receiving party expects, so a message
from another session, round or kind is refused before any field is parsed.
"""

from __future__ import annotations

import struct

import numpy as np

from securefl.errors import ProtocolError

MAGIC = b"SF"
VERSION = 1
SESSION_BYTES = 16
_HEADER = struct.Struct("<2sBB16sII")
HEADER_SIZE = _HEADER.size

_DTYPE_CODES = {
    np.dtype("<u1"): 1,
    np.dtype("<u4"): 2,
    np.dtype("<u8"): 3,
    np.dtype("<i8"): 4,
    np.dtype("<f4"): 5,
    np.dtype("<f8"): 6,
}
_CODE_DTYPES = {code: dt for dt, code in _DTYPE_CODES.items()}
_U8 = struct.Struct("<B")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_ARRAY_HEAD = struct.Struct("<BQ")


class Writer:
    """Builds one message; parts are joined once in finish() (a single copy of big arrays)."""

    def __init__(self, kind: int, session: bytes, round_: int, sender: int):
        if len(session) != SESSION_BYTES:
            raise ValueError("session id must be 16 bytes")
        self._parts: list[bytes | memoryview] = [_HEADER.pack(MAGIC, VERSION, kind, session, round_, sender)]

    def u8(self, v: int) -> Writer:
        self._parts.append(_U8.pack(v))
        return self

    def u32(self, v: int) -> Writer:
        self._parts.append(_U32.pack(v))
        return self

    def u64(self, v: int) -> Writer:
        self._parts.append(_U64.pack(v))
        return self

    def blob(self, data: bytes) -> Writer:
        """A length-prefixed byte string."""
        self._parts.append(_U32.pack(len(data)))
        self._parts.append(data)
        return self

    def raw(self, data: bytes) -> Writer:
        """Fixed-size bytes whose length the reader knows."""
        self._parts.append(data)
        return self

    def array(self, a: np.ndarray) -> Writer:
        """A 1-D little-endian array with dtype code and element count."""
        a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).reshape(-1)
        code = _DTYPE_CODES.get(a.dtype)
        if code is None:
            raise ValueError(f"unsupported array dtype {a.dtype}")
        self._parts.append(_ARRAY_HEAD.pack(code, a.size))
        self._parts.append(memoryview(a).cast("B"))
        return self

    def finish(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    """Parses one message; every read is bounds-checked and raises ProtocolError when off."""

    def __init__(
        self,
        data: bytes,
        kind: int,
        session: bytes,
        round_: int,
        *,
        what: str = "message",
    ):
        self.what = what
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ProtocolError(f"{what}: expected bytes, got {type(data).__name__}")
        self._buf = memoryview(data).cast("B")
        if len(self._buf) < HEADER_SIZE:
            raise ProtocolError(f"{what}: truncated header ({len(self._buf)} bytes)")
        magic, version, got_kind, got_session, got_round, sender = _HEADER.unpack_from(self._buf, 0)
        if magic != MAGIC:
            raise ProtocolError(f"{what}: bad magic {magic!r}")
        if version != VERSION:
            raise ProtocolError(f"{what}: unsupported version {version} (expected {VERSION})")
        if got_kind != kind:
            raise ProtocolError(f"{what}: message kind {got_kind}, expected {kind}")
        if got_session != session:
            raise ProtocolError(f"{what}: message from another session")
        if got_round != round_:
            raise ProtocolError(f"{what}: message from round {got_round}, expected round {round_}")
        self.sender = sender
        self._pos = HEADER_SIZE

    def _take(self, n: int) -> memoryview:
        if n < 0 or self._pos + n > len(self._buf):
            raise ProtocolError(f"{self.what}: truncated (wanted {n} bytes at offset {self._pos})")
        out = self._buf[self._pos : self._pos + n]
        self._pos += n
        return out

    def u8(self) -> int:
        return _U8.unpack(self._take(1))[0]

    def u32(self) -> int:
        return _U32.unpack(self._take(4))[0]

    def u64(self) -> int:
        return _U64.unpack(self._take(8))[0]

    def blob(self, max_len: int) -> bytes:
        n = self.u32()
        if n > max_len:
            raise ProtocolError(f"{self.what}: field of {n} bytes exceeds limit {max_len}")
        return bytes(self._take(n))

    def raw(self, n: int) -> bytes:
        return bytes(self._take(n))

    def array(self, dtype: np.dtype | type, count: int | None = None) -> np.ndarray:
        """A read-only view of an array of the expected dtype (and count, when given)."""
        code, n = _ARRAY_HEAD.unpack(self._take(_ARRAY_HEAD.size))
        want = np.dtype(dtype).newbyteorder("<")
        if _CODE_DTYPES.get(code) != want:
            raise ProtocolError(f"{self.what}: array dtype code {code}, expected {want}")
        if count is not None and n != count:
            raise ProtocolError(f"{self.what}: array of {n} elements, expected {count}")
        if n > len(self._buf):
            raise ProtocolError(f"{self.what}: array length {n} exceeds message")
        return np.frombuffer(self._take(n * want.itemsize), dtype=want)

    def end(self) -> None:
        """Refuse trailing bytes."""
        if self._pos != len(self._buf):
            raise ProtocolError(f"{self.what}: {len(self._buf) - self._pos} trailing bytes")

