"""Red-team harness: real deployments built only through the public API, driven message by message.

A `Fed` holds what a real deployment holds (identities, one RoundConfig per party -- here the same
one -- and every party built by `Scheme.party(config, identity)`), with updates on the fixed-point
grid (multiples of 2^-16, weight 1) so that a client's exact contribution is known to the test. The
attacks in tests/test_redteam_*.py play the coordinator (or a coalition) by hand: they take the
honest coordinator's messages where that is convenient and rewrite, withhold or replay them as any
transport could.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping

import numpy as np
import torch

from securefl import keys
from securefl.errors import ProtocolError, SecureFLError
from securefl.keys import Directory
from securefl.protocol import Coordinator, Party, Totals
from securefl.session import new_session
from securefl.wire import PartyId, Role

FRAC = 16


def grid_updates(n: int, m: int, seed: int = 0, bound: float = 2.0) -> list[torch.Tensor]:
    """n float32 updates of m values, each a multiple of 2^-16 in [-bound, bound): exact under the codec."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(int(-bound * 2**FRAC), int(bound * 2**FRAC), (m,), generator=g).float() / 2**FRAC
            for _ in range(n)]


class Fed:
    """One deployment of `agg` (an Aggregator instance) with n clients: config, identities, parties, updates."""

    def __init__(self, agg, n: int, m: int = 6, seed: int = 0, **config_changes):
        self.agg, self.n, self.m = agg, n, m
        helpers, keyholder = agg.roles()
        self.ids = keys.create_identities(n, helpers, keyholder)
        config = agg.config(torch.zeros(m), n, directory=Directory.of(self.ids.values()), weight_bound=1.0)
        self.config = dataclasses.replace(config, **config_changes) if config_changes else config
        self.parties: dict[PartyId, Party] = {p: agg.party(self.config, i) for p, i in self.ids.items()}
        self.updates = grid_updates(n, m, seed)
        self.session = new_session()
        self.round = 0

    def client(self, i: int) -> Party:
        return self.parties[PartyId.client(i)]

    def restore(self, pid: PartyId, state: bytes) -> Party:
        """The party `pid` rebuilt from a saved state (a process restart), replacing the live one."""
        self.parties[pid] = self.agg.party(self.config, self.ids[pid], state)
        return self.parties[pid]

    def coordinator(self, clients=None, round_: int | None = None, session: bytes | None = None) -> Coordinator:
        if round_ is None:
            self.round += 1
            round_ = self.round
        return self.agg.coordinator(self.config, session or self.session, round_, clients)

    def source(self, pid: PartyId, values: Mapping[int, torch.Tensor] | None = None):
        """The update callback a transport hands client `pid` (None for other roles)."""
        if pid.role != Role.CLIENT:
            return None
        ups = self.updates if values is None else values
        return lambda i=pid.index: (ups[i], 1.0)

    def deliver(self, outbox: Mapping[PartyId, bytes], skip=()) -> dict[PartyId, bytes]:
        """Every message to its party; the replies (parties in `skip` stay silent: dropped)."""
        return {p: self.parties[p].handle(m, self.source(p)) for p, m in outbox.items() if p not in skip}

    def run(self, coord: Coordinator, tamper: Callable[[str, dict], dict] | None = None) -> Totals:
        """Drive a whole round; `tamper(stage, outbox)` may rewrite each stage's outbox before delivery."""
        outbox = coord.start()
        while outbox:
            if tamper is not None:
                outbox = tamper(coord.stage, outbox)
            outbox = coord.step(self.deliver(outbox))
        return coord.result()

    def ring(self, indices) -> np.ndarray:
        """The exact float sum (weight 1) of the listed clients' updates, float64."""
        return np.sum([self.updates[i].double().numpy() for i in indices], axis=0)


def answers_once(fed: Fed, index: int, request: bytes) -> None:
    """Client `index` answers `request` once: a replay is refused, and so it is after a restart from its saved
    state (a client restored from state_dict() cannot be made to answer again)."""
    import pytest

    who = PartyId.client(index)
    fed.client(index).handle(request, fed.source(who))
    with pytest.raises(ProtocolError):
        fed.client(index).handle(request, fed.source(who))
    fed.restore(who, fed.client(index).state_dict())
    with pytest.raises(ProtocolError):
        fed.client(index).handle(request, fed.source(who))


def mutations(data: bytes, rng: np.random.Generator, count: int, protect: int = 0) -> list[bytes]:
    """Malformed variants of a valid message: truncations, extensions, bit flips and overwritten length words
    (the first `protect` bytes -- usually the header -- kept, so the body's decoder is reached)."""
    out = [b"", data[:1], data[:protect], data[: len(data) // 2], data[:-1], data + b"\x00", data + data[-64:]]
    for _ in range(count):
        b = bytearray(data)
        kind = rng.integers(4)
        pos = int(rng.integers(protect, len(b))) if len(b) > protect else 0
        if kind == 0:
            b[pos] ^= 1 << int(rng.integers(8))
        elif kind == 1:  # a plausible huge or small length/count word
            word = int(rng.choice([0, 1, 2, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF]))
            b[pos : pos + 4] = word.to_bytes(4, "little")
        elif kind == 2:
            b = b[:pos] + b[pos + int(rng.integers(1, 9)) :]
        else:
            b[pos:pos] = rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
        out.append(bytes(b))
    return out


def only_securefl_errors(fn: Callable[[], object]) -> object:
    """Run fn; a SecureFLError is a refusal (returned), anything else escapes to fail the test."""
    try:
        return fn()
    except SecureFLError as e:
        return e


def clone(obj):
    """A deep copy of a coordinator mid-round (to replay one stage against many malformed replies)."""
    return copy.deepcopy(obj)


_JUNK = [None, 0, -1, 2**40, 1.5, float("inf"), "", "zz", "00", [], [1], {}, {"a": 1}, True]


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


def json_variants(doc):
    """(path, document) for every field of a JSON document replaced by each junk value, or deleted."""
    for path in _paths(doc):
        for junk in _JUNK:
            out = copy.deepcopy(doc)
            if not path:
                yield path, junk
                continue
            cur = out
            for p in path[:-1]:
                cur = cur[p]
            cur[path[-1]] = junk
            yield path, out
        if path and isinstance(path[-1], str):
            out = copy.deepcopy(doc)
            cur = out
            for p in path[:-1]:
                cur = cur[p]
            del cur[path[-1]]
            yield (*path, "<deleted>"), out


def escapes(fn: Callable[[bytes], object], docs) -> dict[str, list]:
    """Exceptions other than SecureFLError that fn raises on each (path, document) (JSON-encoded), by type."""
    import json

    out: dict[str, list] = {}
    for path, doc in docs:
        try:
            fn(json.dumps(doc).encode())
        except SecureFLError:
            pass
        except Exception as e:  # noqa: BLE001 - what the test reports
            out.setdefault(f"{type(e).__name__}: {str(e)[:60]}", []).append(path)
    return out


def non_bytes_escapes(handle: Callable[[object], object]) -> dict[str, str]:
    """What handle(junk) raises, other than a SecureFLError, for messages that are not bytes at all."""
    out = {}
    for junk in ("text", None, 7):
        try:
            handle(junk)
        except SecureFLError:
            pass
        except Exception as e:  # noqa: BLE001 - what the test reports
            out[repr(junk)] = f"{type(e).__name__}: {e}"
    return out
