"""A party's saved state (`state_dict`): JSON with base64 bytes, bound to its party id and configuration.

Only the party that wrote it reads it back (its own storage: Flower's Context.state, a file); every
field is checked on load, and anything off is a ProtocolError naming the party.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping

from securefl.errors import ProtocolError
from securefl.session import ReplayGuard
from securefl.wire import PartyId

FORMAT = "securefl-additive-party/1"


def dump(party: PartyId, fingerprint: bytes, guard: ReplayGuard, round_: Mapping | None = None) -> bytes:
    """The state of `party`: its replay guard and, mid-round, what it keeps of that round (`round_`)."""
    return json.dumps({"format": FORMAT, "party": str(party), "config": fingerprint.hex(), "guard": guard.to_dict(),
                       "round": round_}, sort_keys=True).encode()


def load(data: bytes, party: PartyId, fingerprint: bytes) -> tuple[ReplayGuard, dict | None]:
    """(replay guard, round state or None) of a state written by `dump` for this party and configuration."""
    who = f"{party}: saved state"
    try:
        d = json.loads(bytes(data))
    except (TypeError, ValueError) as e:
        raise ProtocolError(f"{who}: not JSON ({e})") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise ProtocolError(f"{who}: not an AdditiveSharing party state (expected format {FORMAT!r})")
    if d.get("party") != str(party):
        raise ProtocolError(f"{who}: saved by {d.get('party')!r}, not by {party}")
    if d.get("config") != fingerprint.hex():
        raise ProtocolError(f"{who}: saved under another round configuration")
    guard = d.get("guard")
    if not isinstance(guard, dict) or not all(isinstance(r, int) and not isinstance(r, bool) and 0 <= r < 2**32
                                              for r in guard.values()):
        raise ProtocolError(f"{who}: malformed replay guard")
    round_ = d.get("round")
    if round_ is not None and not isinstance(round_, dict):
        raise ProtocolError(f"{who}: malformed round state")
    return ReplayGuard.from_dict(guard), round_


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: object, size: int, who: str) -> bytes:
    """`size` bytes from base64 text; ProtocolError otherwise."""
    try:
        raw = base64.b64decode(text, validate=True) if isinstance(text, str) else None
    except (binascii.Error, ValueError):
        raw = None
    if raw is None or len(raw) != size:
        raise ProtocolError(f"{who}: expected {size} base64-encoded bytes")
    return raw
