"""Message encoding: versioned, length-checked, typed, no pickle.

Every message starts with a fixed header: magic, version, message kind, session id, round, and
the sender and receiver (role and index). A party reads messages through its `Channel` (bound to
its own identity, the session and the round), which refuses a message of another kind, session,
round, sender or receiver before any field is parsed; every later read is bounds-checked.
Message kinds live in one registry, `Kind`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from securefl.errors import InputError, ProtocolError

MAGIC = b"SF"
VERSION = 1
VERSION_PARTIES = 2  # header with sender and receiver party ids (Channel)
SESSION_BYTES = 16
_HEADER = struct.Struct("<2sBB16sII")
HEADER_SIZE = _HEADER.size
_HEADER2 = struct.Struct("<2sBB16sIBIBI")
PARTY_HEADER_SIZE = _HEADER2.size

_DTYPE_CODES = {
    np.dtype("<u1"): 1,
    np.dtype("<u4"): 2,
    np.dtype("<u8"): 3,
    np.dtype("<i8"): 4,
    np.dtype("<f4"): 5,
    np.dtype("<f8"): 6,
}
_CODE_DTYPES = {code: dt for dt, code in _DTYPE_CODES.items()}


class Role(IntEnum):
    """What kind of party a message comes from or goes to."""

    CLIENT = 1
    SERVER = 2
    LEADER = 3
    HELPER = 4
    KEYHOLDER = 5


_INDEXED = (Role.CLIENT, Role.HELPER)  # roles with many parties, told apart by an index


@dataclass(frozen=True, order=True)
class PartyId:
    """One party of a federation: its role and, for clients and helpers, its index ("client/3", "helper/1")."""

    role: Role
    index: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.role, Role):
            object.__setattr__(self, "role", Role(self.role))
        if isinstance(self.index, bool) or not isinstance(self.index, int) or not 0 <= self.index < 2**32:
            raise InputError(f"party index must be an integer in [0, 2^32), got {self.index!r}")
        if self.role not in _INDEXED and self.index:
            raise InputError(f"the {self.role.name.lower()} has no index, got {self.index}")

    @classmethod
    def client(cls, index: int) -> PartyId:
        return _party(Role.CLIENT, int(index))

    @classmethod
    def helper(cls, index: int) -> PartyId:
        return _party(Role.HELPER, int(index))

    @classmethod
    def parse(cls, text: str) -> PartyId:
        """The inverse of str(): "client/3", "helper/1", "server", "leader", "keyholder"."""
        name, _, index = str(text).partition("/")
        try:
            role = Role[name.upper()]
            if (role in _INDEXED) != bool(index):
                raise ValueError
            return cls(role, int(index) if index else 0)
        except (KeyError, ValueError):
            raise InputError(f"not a party name: {text!r} (expected client/<i>, helper/<j>, server, leader or "
                             "keyholder)") from None

    @property
    def kind(self) -> str:
        """The role's name: the key reports group parties by ("client", "server", "helper", ...)."""
        return self.role.name.lower()

    def __str__(self) -> str:
        return f"{self.kind}/{self.index}" if self.role in _INDEXED else self.kind


@lru_cache(maxsize=1 << 16)
def _party(role: int, index: int) -> PartyId:
    """PartyId(role, index), one object per id (every message header names two: the hot path of reading)."""
    return PartyId(Role(role), index)


SERVER = PartyId(Role.SERVER)
LEADER = PartyId(Role.LEADER)
KEYHOLDER = PartyId(Role.KEYHOLDER)
_U8 = struct.Struct("<B")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_ARRAY_HEAD = struct.Struct("<BQ")


class Writer:
    """Builds one message; parts are joined once in finish() (a single copy of big arrays)."""

    def __init__(self, kind: int, session: bytes, round_: int, sender: int, *, _header: bytes | None = None):
        if _header is None:
            if len(session) != SESSION_BYTES:
                raise InputError(f"wire: session id must be {SESSION_BYTES} bytes")
            _header = _HEADER.pack(MAGIC, VERSION, kind, session, round_, sender)
        self._parts: list[bytes | memoryview] = [_header]

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
            raise InputError(f"wire: unsupported array dtype {a.dtype}")
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
        header = peek(self._buf, what)
        if header.kind != kind:
            raise ProtocolError(f"{what}: message kind {_kind_name(header.kind)}, expected {_kind_name(kind)}")
        if header.session != session:
            raise ProtocolError(f"{what}: message from another session")
        if header.round != round_:
            raise ProtocolError(f"{what}: message from round {header.round}, expected round {round_}")
        self.header = header
        self.sender = header.sender_id if header.version == VERSION else header.sender
        self._pos = header.size

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



class Kind(IntEnum):
    """Every message kind of every scheme, in one registry (the header's kind byte)."""

    PLAIN_REQUEST = 1
    PLAIN_UPLOAD = 2
    # AdditiveSharing (securefl.mpc.additive), in stage order
    ADD_SETUP = 10  # leader -> helper: start a round
    ADD_KEY = 11  # helper -> leader: its per-round X25519 key, signed by its identity
    ADD_REQUEST = 12  # leader -> client: the helpers' signed keys; asks for the upload
    ADD_UPLOAD = 13  # client -> leader: masked vector, one MAC'd sealed seed per helper
    ADD_FORWARD = 14  # leader -> helper: every uploaded client's envelope for that helper
    ADD_VERDICTS = 15  # helper -> leader: opened or rejected (why), per client
    ADD_ACCEPT = 16  # leader -> helper: the accepted set
    ADD_ENDORSE = 17  # helper -> leader: its signature over the accepted set
    ADD_ENDORSEMENTS = 18  # leader -> helper: every helper's endorsement
    ADD_PARTIAL = 19  # helper -> leader: its sum of the accepted clients' shares
    # SecAgg / SecAgg+ (securefl.mpc.secagg), in stage order: server request, then the client's reply
    SECAGG_SETUP = 20  # server -> client: the round's parameters and setup digest (advertise_keys)
    SECAGG_KEYS = 21  # client -> server: its two X25519 keys and self-mask commitment, signed
    SECAGG_PEER_KEYS = 22  # server -> client: its live neighbours' key records (share_keys)
    SECAGG_SHARES = 23  # client -> server: per neighbour, share commitments and the encrypted shares
    SECAGG_SHARE_BUNDLE = 24  # server -> client: the shares its neighbours dealt it (masked_input)
    SECAGG_MASKED_INPUT = 25  # client -> server: its masked ring vector
    SECAGG_SURVIVORS = 26  # server -> client: the survivor bitmap to sign (consistency_check)
    SECAGG_SURVIVOR_SIGNATURE = 27  # client -> server: its signature of the bitmap
    SECAGG_UNMASK_REQUEST = 28  # server -> client: bitmap, holders' signatures, peers to unmask (unmasking)
    SECAGG_REVEAL = 29  # client -> server: self-mask shares of survivors, key shares of dropped peers
    # CKKS (securefl.he.ckks), in stage order; the key holder's and clients' checks: securefl.he.base
    CKKS_OPEN = 40  # server -> key holder: open a round (setup)
    CKKS_KEY = 41  # key holder -> server: its public context, signed for the round
    CKKS_SETUP = 42  # server -> client: the key holder's signed public context (setup)
    CKKS_READY = 43  # client -> server: the key checked out
    CKKS_REQUEST = 44  # server -> client: asks for the encrypted update (upload)
    CKKS_UPLOAD = 45  # client -> server: ciphertexts, their SHA-256 and the client's signature
    CKKS_AGGREGATE = 46  # server -> key holder: the included clients' signed uploads (decrypt)
    CKKS_RESULT = 47  # key holder -> server: the sum's ring vector, signed
    # packed Paillier (securefl.he.paillier): the same messages
    PAILLIER_OPEN = 50
    PAILLIER_KEY = 51
    PAILLIER_SETUP = 52
    PAILLIER_READY = 53
    PAILLIER_REQUEST = 54
    PAILLIER_UPLOAD = 55
    PAILLIER_AGGREGATE = 56
    PAILLIER_RESULT = 57


def _kind_name(code: int) -> str:
    try:
        return Kind(code).name
    except ValueError:
        return str(code)


class Header(NamedTuple):
    """A message's header, read before anything else (see peek)."""

    version: int
    kind: int
    session: bytes
    round: int
    sender_id: int  # version 1: the sender's number
    sender: PartyId | None  # version 2: sender and receiver party ids
    receiver: PartyId | None
    size: int


def peek(data: bytes | memoryview, what: str = "message") -> Header:
    """The header of a message (magic and version checked), without parsing its body."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError(f"{what}: expected bytes, got {type(data).__name__}")
    buf = memoryview(data).cast("B") if not isinstance(data, memoryview) else data
    if len(buf) < HEADER_SIZE:
        raise ProtocolError(f"{what}: truncated header ({len(buf)} bytes)")
    magic, version, kind = bytes(buf[:2]), buf[2], buf[3]
    if magic != MAGIC:
        raise ProtocolError(f"{what}: bad magic {magic!r}")
    if version == VERSION:
        _, _, _, session, round_, sender = _HEADER.unpack_from(buf, 0)
        return Header(version, kind, session, round_, sender, None, None, HEADER_SIZE)
    if version != VERSION_PARTIES:
        raise ProtocolError(f"{what}: unsupported version {version} (expected {VERSION_PARTIES})")
    if len(buf) < _HEADER2.size:
        raise ProtocolError(f"{what}: truncated header ({len(buf)} bytes)")
    _, _, _, session, round_, s_role, s_index, r_role, r_index = _HEADER2.unpack_from(buf, 0)
    try:
        sender, receiver = _party(s_role, s_index), _party(r_role, r_index)
    except (ValueError, InputError):
        raise ProtocolError(f"{what}: header names no valid sender or receiver") from None
    return Header(version, kind, session, round_, 0, sender, receiver, _HEADER2.size)


class Channel:
    """One party's view of one round: writes its messages and reads those addressed to it.

    Bound to the party's own id, the session and the round: `read` refuses a message of another
    kind, session, round or receiver, or from an unexpected sender, before parsing its body.
    """

    def __init__(self, me: PartyId, session: bytes, round_: int):
        if len(session) != SESSION_BYTES:
            raise ProtocolError(f"{me}: a session id is {SESSION_BYTES} bytes, got {len(session)}")
        self.me, self.session, self.round = me, bytes(session), int(round_)

    def write(self, kind: Kind, to: PartyId) -> Writer:
        """A message of `kind` from this party to `to`."""
        header = _HEADER2.pack(MAGIC, VERSION_PARTIES, kind, self.session, self.round, self.me.role, self.me.index,
                               to.role, to.index)
        return Writer(kind, self.session, self.round, 0, _header=header)

    def read(self, data: bytes, kind: Kind, sender: PartyId | Role | None = None, what: str | None = None) -> Reader:
        """A reader of a message of `kind` addressed to this party (from `sender`: a party, any party of a
        role, or anyone); Reader.sender is the sender's PartyId."""
        what = what or f"{self.me}: {kind.name.lower().replace('_', ' ')}"
        r = Reader(data, kind, self.session, self.round, what=what)
        h = r.header
        if h.version != VERSION_PARTIES:
            raise ProtocolError(f"{what}: header without party ids (version {h.version})")
        if h.receiver != self.me:
            raise ProtocolError(f"{what}: addressed to {h.receiver}, not {self.me}")
        if isinstance(sender, PartyId) and h.sender != sender:
            raise ProtocolError(f"{what}: sent by {h.sender}, expected {sender}")
        if isinstance(sender, Role) and h.sender.role != sender:
            raise ProtocolError(f"{what}: sent by {h.sender}, expected a {sender.name.lower()}")
        return r
