"""The round configuration every party of a deployment holds, and the context each round is bound to.

A `RoundConfig` fixes everything a party's security and correctness rest on: the scheme and its
options, the pinned directory of identities (and so n), the model's structure, the codec's clip,
precision and weight bound, the DP mechanism, the minimum batch, and the trusted-setup seed. Each
party loads its own copy (a JSON file, no pickle) and takes these values from it, never from
another party's message. Its fingerprint (SHA-256 of the canonical JSON) is bound into every
signature, so two parties holding different configurations refuse each other.

A `RoundContext` is one round of one session under one configuration: its `digest(label)` is what
signatures bind (configuration fingerprint, session id, round number). Rounds only move forward:
`ReplayGuard` remembers, per session, the last round a party took part in and refuses any round
not greater, so a message signed in an earlier round cannot be replayed into a later one.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import secrets
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from securefl.codec import Layout, TensorSpec, float_dtypes, int_dtypes
from securefl.errors import ConfigError, ProtocolError
from securefl.jsonfile import JsonRecord, integer
from securefl.keys import Directory
from securefl.wire import SESSION_BYTES

if TYPE_CHECKING:
    import torch

CONFIG_FORMAT = "securefl-round-config/1"
SEED_BYTES = 32
_JSON_SCALARS = (str, int, float, bool, type(None))
DTYPE_NAMES = ("float16", "bfloat16", "float32", "float64", "bool", "uint8", "int8", "int16", "int32", "int64")


def _dtype(name: str) -> torch.dtype:
    return {str(d).removeprefix("torch."): d for d in float_dtypes() + int_dtypes()}[name]


@dataclass(frozen=True)
class ModelSpec:
    """The structure of one update: its kind (tensor, list, tuple, mapping), keys, and tensors' names,
    shapes and dtypes. Devices are each party's own business and are not part of it."""

    kind: str
    keys: tuple
    tensors: tuple[tuple[str, tuple[int, ...], str], ...]

    @classmethod
    def of(cls, update: object) -> ModelSpec:
        """The spec of an update (a tensor, a list/tuple of tensors, or a state_dict)."""
        return cls.from_layout(Layout.of(update))

    @classmethod
    def from_layout(cls, layout: Layout) -> ModelSpec:
        if layout.kind == "mapping" and not all(isinstance(k, str) for k in layout.keys):
            raise ConfigError("a round configuration needs string keys in a mapping update (as in a state_dict)")
        return cls(layout.kind, tuple(layout.keys),
                   tuple((s.name, tuple(s.shape), str(s.dtype).removeprefix("torch.")) for s in layout.specs))

    def layout(self) -> Layout:
        """The codec's Layout (tensors rebuilt on the CPU)."""
        specs, f_off, i_off, wide = [], 0, 0, False
        for name, shape, dtype_name in self.tensors:
            dtype = _dtype(dtype_name)
            numel = math.prod(shape)
            if dtype in int_dtypes():
                off, i_off = i_off, i_off + numel
            else:
                off, f_off = f_off, f_off + numel
                wide |= dtype_name == "float64"
            specs.append(TensorSpec(name, tuple(shape), dtype, _cpu(), off, numel))
        return Layout(self.kind, tuple(self.keys), tuple(specs), np.dtype(np.float64 if wide else np.float32),
                      f_off, i_off)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "keys": list(self.keys),
                "tensors": [[name, list(shape), dtype] for name, shape, dtype in self.tensors]}

    @classmethod
    def from_dict(cls, d: Mapping) -> ModelSpec:
        try:
            kind, keys, tensors = d["kind"], tuple(d["keys"]), d["tensors"]
            out = tuple((str(name), tuple(integer(x, "model spec: a dimension") for x in shape), str(dtype))
                        for name, shape, dtype in tensors)
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"model spec: malformed ({e})") from None
        if kind not in ("tensor", "list", "tuple", "mapping") or not out or len(keys) != len(out):
            raise ConfigError("model spec: unknown kind, no tensors, or keys that do not match the tensors")
        bad = [dt for _, _, dt in out if dt not in DTYPE_NAMES]
        if bad or any(x < 0 for _, shape, _ in out for x in shape):
            raise ConfigError(f"model spec: unsupported dtype {bad[:1]} or negative dimension")
        return cls(kind, keys, out)


DEFAULT_MIN_FRACTION = 0.5  # the default minimum batch: half the round's clients


def resolve_min_clients(n_clients: int, spec: int | float | None = None, scheme: str = "") -> int:
    """The minimum batch of a round of n_clients (the fewest clients a released sum may hold): an int as
    given, a fraction f in (0, 1] as max(2, ceil(f * n)), None as f = 0.5.

    Never below 2 (a sum of one client is that client's update); ConfigError when n_clients cannot meet it.
    """
    who = f"{scheme}: " if scheme else ""
    if isinstance(spec, bool) or not isinstance(spec, (int, np.integer, float, type(None))):
        raise ConfigError(f"{who}min_clients must be an int >= 2, a fraction in (0, 1] or None, got {spec!r}")
    if spec is None or isinstance(spec, float):
        frac = DEFAULT_MIN_FRACTION if spec is None else spec
        if not 0 < frac <= 1:
            raise ConfigError(f"{who}min_clients as a fraction must be in (0, 1], got {frac}")
        m = max(2, math.ceil(frac * n_clients))
    else:
        m = int(spec)
        if m < 2:
            raise ConfigError(f"{who}min_clients must be >= 2 (a sum of one client is that client's update), "
                              f"got {m}")
    if m > n_clients:
        raise ConfigError(f"{who}a minimum batch of {m} clients cannot be met by {n_clients} clients (at least 2 "
                          "clients are needed: a sum of one is that client's update)")
    return m


def _cpu() -> torch.device:
    import torch

    return torch.device("cpu")


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True)
class RoundConfig(JsonRecord):
    """What every party of a deployment agrees on before any round (see the module docstring).

    scheme: a registered scheme name ("plaintext", "additive", "secagg", "secagg+", "ckks",
    "paillier"); options: that scheme's options (JSON scalars: threshold, neighbors, num_aggregators,
    key_bits, ...); weight_bound: public upper bound on a client's weight (weights are divided by
    it); dp: a DP mechanism's spec (its to_dict()) or None; min_clients: the fewest clients whose
    inputs any party lets into a released sum (0: the scheme's default); setup_seed: trusted-setup
    randomness (SecAgg+'s graph), drawn from the OS CSPRNG when the configuration is created;
    timeouts: seconds per stage name, for transports (Flower).
    """

    scheme: str
    directory: Directory
    model: ModelSpec
    options: Mapping[str, Any] = field(default_factory=dict)
    clip: float = 8.0
    frac_bits: int = 16
    int_bound: int = 2**16
    weight_bound: float = 1.0
    dp: Mapping[str, Any] | None = None
    min_clients: int = 0
    setup_seed: bytes = field(default_factory=lambda: secrets.token_bytes(SEED_BYTES))
    timeouts: Mapping[str, float] = field(default_factory=dict)

    record = "round configuration"

    def __post_init__(self) -> None:
        if not isinstance(self.directory, Directory):
            raise ConfigError("directory must be a securefl.keys.Directory")
        if self.directory.clients < 1:
            raise ConfigError("the directory lists no client")
        if not isinstance(self.model, ModelSpec):
            raise ConfigError("model must be a securefl.session.ModelSpec (ModelSpec.of(model.state_dict()))")
        for name, v in self.options.items():
            if not isinstance(name, str) or not isinstance(v, _JSON_SCALARS):
                raise ConfigError(f"scheme option {name!r} must be a JSON scalar, got {type(v).__name__}")
        if not (self.clip > 0 and math.isfinite(self.clip)):
            raise ConfigError(f"clip must be a positive finite number, got {self.clip}")
        if not (self.weight_bound > 0 and math.isfinite(self.weight_bound)):
            raise ConfigError(f"weight_bound must be a positive finite number, got {self.weight_bound}")
        if not isinstance(self.min_clients, int) or self.min_clients < 0:
            raise ConfigError(f"min_clients must be an integer >= 0, got {self.min_clients!r}")
        if not isinstance(self.setup_seed, bytes) or len(self.setup_seed) != SEED_BYTES:
            raise ConfigError(f"setup_seed must be {SEED_BYTES} bytes")
        if any(not (t > 0 and math.isfinite(t)) for t in self.timeouts.values()):
            raise ConfigError("every stage timeout must be a positive number of seconds")
        object.__setattr__(self, "options", dict(self.options))
        object.__setattr__(self, "timeouts", {str(k): float(v) for k, v in self.timeouts.items()})
        object.__setattr__(self, "_fingerprint", hashlib.sha256(self.to_json().encode()).digest())

    @property
    def n(self) -> int:
        """Number of clients in the directory."""
        return self.directory.clients

    @property
    def fingerprint(self) -> bytes:
        """SHA-256 of the canonical JSON encoding (32 bytes)."""
        return self._fingerprint  # type: ignore[attr-defined]

    def context(self, session: bytes, round_: int) -> RoundContext:
        """The context of round `round_` of `session` under this configuration."""
        return RoundContext(self.fingerprint, session, round_)

    def to_dict(self) -> dict:
        return {
            "format": CONFIG_FORMAT,
            "scheme": self.scheme,
            "options": dict(self.options),
            "directory": self.directory.to_dict(),
            "model": self.model.to_dict(),
            "clip": self.clip,
            "frac_bits": self.frac_bits,
            "int_bound": self.int_bound,
            "weight_bound": self.weight_bound,
            "dp": None if self.dp is None else dict(self.dp),
            "min_clients": self.min_clients,
            "setup_seed": base64.b64encode(self.setup_seed).decode(),
            "timeouts": dict(self.timeouts),
        }

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): the bytes the fingerprint is taken of."""
        return _canonical(self.to_dict())

    @classmethod
    def from_dict(cls, d: Mapping) -> RoundConfig:
        if not isinstance(d, Mapping) or d.get("format") != CONFIG_FORMAT:
            raise ConfigError(f"not a securefl round configuration (expected format {CONFIG_FORMAT!r})")
        try:
            return cls(
                scheme=str(d["scheme"]),
                directory=Directory.from_dict(d["directory"]),
                model=ModelSpec.from_dict(d["model"]),
                options=dict(d.get("options", {})),
                clip=float(d["clip"]),
                frac_bits=integer(d["frac_bits"], "frac_bits"),
                int_bound=integer(d["int_bound"], "int_bound"),
                weight_bound=float(d["weight_bound"]),
                dp=None if d.get("dp") is None else dict(d["dp"]),
                min_clients=integer(d.get("min_clients", 0), "min_clients"),
                setup_seed=base64.b64decode(d["setup_seed"], validate=True),
                timeouts=dict(d.get("timeouts", {})),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"round configuration: missing or malformed field ({e})") from None


@dataclass(frozen=True)
class RoundContext:
    """One round of one session under one configuration: what every signature of the round binds."""

    config_fingerprint: bytes
    session: bytes
    round: int

    def __post_init__(self) -> None:
        if len(self.session) != SESSION_BYTES:
            raise ConfigError(f"a session id is {SESSION_BYTES} bytes, got {len(self.session)}")
        if isinstance(self.round, bool) or not isinstance(self.round, int) or not 0 <= self.round < 2**32:
            raise ConfigError(f"round must be an integer in [0, 2^32), got {self.round!r}")

    def digest(self, label: bytes, *parts: bytes) -> bytes:
        """SHA-256 of a domain-separation label, this context and any further length-prefixed parts."""
        h = hashlib.sha256()
        for part in (label, self.config_fingerprint, self.session, struct.pack("<I", self.round), *parts):
            h.update(struct.pack("<Q", len(part)))
            h.update(part)
        return h.digest()


def new_session() -> bytes:
    """A fresh random session id."""
    return os.urandom(SESSION_BYTES)


class ReplayGuard:
    """Per session, the last round a party took part in; rounds must strictly increase.

    Part of a party's saved state: a party restored from its state keeps refusing old rounds.
    """

    def __init__(self, last: Mapping[bytes, int] | None = None):
        self._last: dict[bytes, int] = dict(last or {})

    def admit(self, session: bytes, round_: int, who: str) -> None:
        """Record that `who` takes part in (session, round_); ProtocolError if that round is not new."""
        last = self._last.get(bytes(session))
        if last is not None and round_ <= last:
            raise ProtocolError(f"{who}: round {round_} of this session is not after round {last}, "
                                "which it already took part in (replayed or reused round)")
        self._last[bytes(session)] = int(round_)

    def to_dict(self) -> dict[str, int]:
        return {s.hex(): r for s, r in self._last.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, int]) -> ReplayGuard:
        if not isinstance(d, Mapping):
            raise ProtocolError("replay guard state: not a mapping of session -> round")
        out = {}
        for session, round_ in d.items():
            try:
                key = bytes.fromhex(session)
            except (TypeError, ValueError):
                key = b""
            if len(key) != SESSION_BYTES or isinstance(round_, bool) or not isinstance(round_, int) \
                    or not 0 <= round_ < 2**32:
                raise ProtocolError(f"replay guard state: malformed entry {session!r}: {round_!r}")
            out[key] = round_
        return cls(out)
