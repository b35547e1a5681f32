"""An HE party's saved state (`state_dict`): bytes, no pickle, bound to its party id and round configuration.

Layout: magic, a u32-length-prefixed JSON document (format, scheme, party, configuration fingerprint,
replay guard, small fields), the named binary fields it lists back to back (a CKKS key seed,
Paillier primes, the key holder's sealing key of its open round, a client's round key, ciphertexts:
no base64), and SHA-256 of everything before it. Only the party that
wrote a state reads it back (its own storage: Flower's Context.state, a file); the checksum catches
corruption, every field is checked on load, and anything off is a ProtocolError naming the party.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from securefl.errors import ProtocolError
from securefl.session import ReplayGuard
from securefl.wire import SESSION_BYTES, PartyId

MAGIC = b"SFHE"
FORMAT = "securefl-he-party/3"  # /2: CKKS seeds, Paillier DJN bases; /3: round keys with their sealing keys
_LEN = struct.Struct("<I")
_DIGEST = 32


@dataclass(frozen=True)
class Saved:
    """What a state holds: the replay guard, small JSON fields and named binary fields."""

    guard: ReplayGuard
    fields: dict
    blobs: dict[str, bytes]


def dump(scheme: str, party: PartyId, fingerprint: bytes, guard: ReplayGuard, fields: Mapping,
         blobs: Mapping[str, bytes]) -> bytes:
    """The state of `party` under the configuration with this fingerprint."""
    doc = {"format": FORMAT, "scheme": scheme, "party": str(party), "config": fingerprint.hex(),
           "guard": guard.to_dict(), "fields": dict(fields), "blobs": [[k, len(v)] for k, v in blobs.items()]}
    head = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    body = b"".join([MAGIC, _LEN.pack(len(head)), head, *blobs.values()])
    return body + hashlib.sha256(body).digest()


def load(data: bytes, scheme: str, party: PartyId, fingerprint: bytes) -> Saved:
    """A state written by `dump` for this scheme, party and configuration."""
    who = f"{party}: saved state"
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError(f"{who}: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    body = data[:-_DIGEST]
    if len(data) < len(MAGIC) + _LEN.size + _DIGEST or data[: len(MAGIC)] != MAGIC:
        raise ProtocolError(f"{who}: not an HE party state")
    if hashlib.sha256(body).digest() != data[-_DIGEST:]:
        raise ProtocolError(f"{who}: corrupted (checksum mismatch)")
    (size,) = _LEN.unpack_from(body, len(MAGIC))
    start = len(MAGIC) + _LEN.size
    try:
        doc = json.loads(body[start : start + size])
    except ValueError as e:
        raise ProtocolError(f"{who}: malformed ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("scheme") != scheme:
        raise ProtocolError(f"{who}: not a {scheme} party state (expected format {FORMAT!r})")
    if doc.get("party") != str(party):
        raise ProtocolError(f"{who}: saved by {doc.get('party')!r}, not by {party}")
    if doc.get("config") != fingerprint.hex():
        raise ProtocolError(f"{who}: saved under another round configuration")
    guard, fields, listed = doc.get("guard"), doc.get("fields"), doc.get("blobs")
    if not isinstance(guard, dict) or not all(isinstance(r, int) and not isinstance(r, bool) and 0 <= r < 2**32
                                              for r in guard.values()):
        raise ProtocolError(f"{who}: malformed replay guard")
    if not isinstance(fields, dict) or not isinstance(listed, list):
        raise ProtocolError(f"{who}: malformed fields")
    blobs, pos = {}, start + size
    for entry in listed:
        if (not isinstance(entry, list) or len(entry) != 2 or not isinstance(entry[0], str)
                or not isinstance(entry[1], int) or isinstance(entry[1], bool) or entry[1] < 0):
            raise ProtocolError(f"{who}: malformed field list")
        blobs[entry[0]] = body[pos : pos + entry[1]]
        pos += entry[1]
    if pos != len(body):
        raise ProtocolError(f"{who}: its fields do not fill it ({len(body) - pos} bytes off)")
    return Saved(ReplayGuard.from_dict(guard), fields, blobs)


def round_field(session: bytes, round_: int) -> list:
    """A (session, round) pair as a JSON field."""
    return [session.hex(), round_]


def read_round(value: object, who: str) -> tuple[bytes, int] | None:
    """The (session, round) pair of a JSON field written by round_field (None stays None)."""
    if value is None:
        return None
    try:
        session, round_ = value
        session = bytes.fromhex(session)
    except (TypeError, ValueError):
        raise ProtocolError(f"{who}: malformed round in its saved state") from None
    if len(session) != SESSION_BYTES or isinstance(round_, bool) or not isinstance(round_, int) or not (
            0 <= round_ < 2**32):
        raise ProtocolError(f"{who}: malformed round in its saved state")
    return session, round_
