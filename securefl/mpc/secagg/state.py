"""What a SecAgg client keeps between the stages of a round, and its encoding as bytes (the client's own storage).

`ClientRound` holds exactly what the next stages need and drops each secret once its last use is past:
the encryption key after share_keys, the masking key and self-mask seed after masked_input, the
received shares after unmasking. `encode_state` / `decode_state` turn it, with the client's replay
guard, into JSON (binary fields in base64; no pickle); decoding checks every field's presence,
size and range against the client's own policy and raises ProtocolError on anything else.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, fields

import numpy as np

from securefl.crypto import shamir
from securefl.errors import ProtocolError
from securefl.mpc.secagg.messages import DIGEST, KEY, NONCE, E
from securefl.mpc.secagg.params import Policy, Stage
from securefl.session import ReplayGuard
from securefl.wire import SESSION_BYTES, PartyId

FORMAT = "securefl-secagg-client/1"


@dataclass
class ClientRound:
    """One client's state inside one round; `stage` is the stage whose request it answers next (None: done)."""

    session: bytes
    round: int
    stage: Stage | None
    record_hash: bytes  # hash of its own advertised record (bound into its survivor-list signature)
    c_sk: bytes | None = None  # X25519 key its shares are encrypted with (until share_keys)
    s_sk: bytes | None = None  # X25519 key its pairwise masks are agreed with (until masked_input)
    s_pk: bytes | None = None  # its public half (until share_keys: no peer may advertise it)
    b: bytes | None = None  # self-mask seed (until masked_input)
    peers: np.ndarray | None = None  # neighbours whose keys it got, sorted
    enc_keys: np.ndarray | None = None  # (peers, 32): AES-GCM key of the shares exchanged with each (to masked_input)
    peer_s_pk: np.ndarray | None = None  # (peers, 32): each peer's masking public key (until masked_input)
    peer_hashes: np.ndarray | None = None  # (peers, 32): each peer's record hash (signed keys only)
    own_share: bytes | None = None  # its own shares of b and of its masking key (2E field elements)
    senders: np.ndarray | None = None  # peers whose shares it received, sorted
    rows: np.ndarray | None = None  # (senders, 2E): their shares of b and of their masking keys
    nonces: np.ndarray | None = None  # (senders, 2, NONCE): the shares' commitment nonces
    signed_list: bytes | None = None  # the survivor bitmap it signed

    def finish(self) -> None:
        """The round is answered: forget every secret and share."""
        for f in fields(self):
            if f.name not in ("session", "round", "record_hash"):
                setattr(self, f.name, None)


_BYTES = {"session": SESSION_BYTES, "record_hash": DIGEST, "c_sk": KEY, "s_sk": KEY, "s_pk": KEY, "b": KEY,
          "own_share": 2 * E * 8}
_ARRAYS = {  # name: (dtype, shape of one row, the id list its rows follow)
    "peers": ("<u4", (), None), "enc_keys": ("u1", (KEY,), "peers"), "peer_s_pk": ("u1", (KEY,), "peers"),
    "peer_hashes": ("u1", (DIGEST,), "peers"), "senders": ("<u4", (), None), "rows": ("<u8", (2 * E,), "senders"),
    "nonces": ("u1", (2, NONCE), "senders"),
}
_NEEDS = {  # fields the handler of each stage reads
    Stage.SHARE_KEYS: {"c_sk", "s_sk", "s_pk", "b"},
    Stage.MASKED_INPUT: {"s_sk", "b", "peers", "enc_keys", "peer_s_pk", "own_share"},
    Stage.CONSISTENCY_CHECK: {"peers", "senders", "rows", "nonces", "own_share"},
    Stage.UNMASKING: {"peers", "senders", "rows", "nonces", "own_share"},
}


def _b64(data: bytes | np.ndarray) -> str:
    return base64.b64encode(bytes(data) if isinstance(data, bytes) else np.ascontiguousarray(data).tobytes()).decode()


def encode_state(me: PartyId, policy: Policy, guard: ReplayGuard, rnd: ClientRound | None) -> bytes:
    """The client's state as bytes (its own storage: it holds its secrets)."""
    out: dict[str, object] = {"format": FORMAT, "party": str(me), "config": policy.config.fingerprint.hex(),
                              "guard": guard.to_dict(), "round": None}
    if rnd is not None:
        r: dict[str, object] = {"round": rnd.round, "stage": None if rnd.stage is None else rnd.stage.label}
        for f in fields(rnd):
            value = getattr(rnd, f.name)
            if f.name in _ARRAYS and value is not None:
                value = np.asarray(value).astype(_ARRAYS[f.name][0])
            if f.name not in ("round", "stage") and value is not None:
                r[f.name] = _b64(value)
        out["round"] = r
    return json.dumps(out, sort_keys=True).encode()


def decode_state(data: bytes, me: PartyId, policy: Policy) -> tuple[ReplayGuard, ClientRound | None]:
    """Inverse of encode_state; ProtocolError naming the field for anything malformed or of another party."""
    who = f"{me}: saved state"
    try:
        d = json.loads(bytes(data))
    except (TypeError, ValueError, UnicodeDecodeError):
        raise ProtocolError(f"{who}: not JSON") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise ProtocolError(f"{who}: not a SecAgg client state (format {FORMAT!r})")
    if d.get("party") != str(me) or d.get("config") != policy.config.fingerprint.hex():
        raise ProtocolError(f"{who}: belongs to {d.get('party')!r} under another configuration or party")
    if not isinstance(d.get("guard"), dict):
        raise ProtocolError(f"{who}: no replay guard")
    guard = ReplayGuard.from_dict(d["guard"])
    r = d.get("round")
    if r is None:
        return guard, None
    if not isinstance(r, dict):
        raise ProtocolError(f"{who}: malformed round")
    return guard, _decode_round(r, me, policy, who)


def _decode_round(r: dict, me: PartyId, policy: Policy, who: str) -> ClientRound:
    known = {f.name for f in fields(ClientRound)}
    if set(r) - known:
        raise ProtocolError(f"{who}: unknown fields {sorted(set(r) - known)}")
    rnd, stage = r.get("round"), r.get("stage")
    if isinstance(rnd, bool) or not isinstance(rnd, int) or not 0 <= rnd < 2**32:
        raise ProtocolError(f"{who}: round {rnd!r} is not a round number")
    stages = {s.label for s in policy.stages[1:]}  # a round starts at share_keys
    if stage is not None and (not isinstance(stage, str) or stage not in stages):
        raise ProtocolError(f"{who}: unknown stage {stage!r}")
    raw: dict[str, bytes] = {}
    for name, text in r.items():
        if name in ("round", "stage"):
            continue
        try:
            raw[name] = base64.b64decode(text, validate=True)
        except (TypeError, ValueError, binascii.Error):
            raise ProtocolError(f"{who}: field {name} is not base64") from None
    values: dict[str, object] = {}
    for name, size in _BYTES.items():
        if name in raw:
            if len(raw[name]) != size:
                raise ProtocolError(f"{who}: field {name} of {len(raw[name])} bytes, expected {size}")
            values[name] = raw[name]
    if "own_share" in values:
        shamir.decode_shares(values["own_share"], 2 * E, who)
    if "signed_list" in raw:
        if len(raw["signed_list"]) != (policy.n + 7) // 8:
            raise ProtocolError(f"{who}: signed survivor list of {len(raw['signed_list'])} bytes")
        values["signed_list"] = raw["signed_list"]
    for name, (dtype, row, follows) in _ARRAYS.items():
        if name in raw:
            values[name] = _array(raw[name], dtype, row, name, who)
            if follows is not None and len(values[name]) != len(values.get(follows, ())):
                raise ProtocolError(f"{who}: field {name} has {len(values[name])} rows for "
                                    f"{len(values.get(follows, ()))} {follows}")
    for name in ("peers", "senders"):
        a = values.get(name)
        if a is not None and a.size and (a[-1] >= policy.n or (np.diff(a) <= 0).any() or me.index in a):
            raise ProtocolError(f"{who}: field {name} holds ids out of range, repeated, unsorted or its own")
    if "rows" in values:
        shamir.decode_shares(values["rows"].tobytes(), values["rows"].size, who)
    if "record_hash" not in values or "session" not in values:
        raise ProtocolError(f"{who}: round without its session or record hash")
    out = ClientRound(round=rnd, stage=None if stage is None else Stage[stage.upper()], **values)
    need = set(_NEEDS.get(out.stage, ()))
    need |= {"peer_hashes"} if policy.signed_keys and out.stage not in (None, Stage.SHARE_KEYS) else set()
    need |= {"signed_list"} if policy.consistency_check and out.stage == Stage.UNMASKING else set()
    missing = sorted(n for n in need if getattr(out, n) is None)
    if missing:
        raise ProtocolError(f"{who}: stage {stage} without {', '.join(missing)}")
    if out.senders is not None and out.peers is not None and not np.isin(out.senders, out.peers).all():
        raise ProtocolError(f"{who}: shares from clients that are not its peers")
    return out


def _array(data: bytes, dtype: str, row: tuple[int, ...], name: str, who: str) -> np.ndarray:
    dt = np.dtype(dtype)
    width = dt.itemsize * int(np.prod(row, dtype=np.int64))
    if len(data) % width:
        raise ProtocolError(f"{who}: field {name} of {len(data)} bytes is not whole rows of {width}")
    a = np.frombuffer(data, dt).reshape(-1, *row)
    return a.astype(np.int64) if dt.kind == "u" and dt.itemsize == 4 else a.astype(dt.newbyteorder("="))
