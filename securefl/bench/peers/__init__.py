"""Reference lines from peer libraries, measured in the same run by the baselines that ship in this package.

Each peer is a function of securefl.bench.peers.he (TenSEAL at FLARE's defaults, phe per value) or
securefl.bench.peers.flower (Flower's SecAgg+), called at the run's base point (n, m) and at each
special point that lists it (config.Special.peers: the same updates as the securefl cells there, a
model-shaped state_dict included); the scripts in benchmarks/ use the same functions. A peer module
is imported only when its peer is measured, so the bench loads TenSEAL, phe or Flower only for the
peer lines. Figures are normalised to round_s, client_s, aggregators_s and bytes_per_param and set next to the securefl
scheme's cell at the same point. A peer whose library is missing is listed as unavailable with the
reason; one that raises records its error; neither stops the run.
"""

from __future__ import annotations

import importlib
import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from securefl.bench.config import Config, Progress
from securefl.bench.workload import make_state_dicts, make_updates, model_shapes
from securefl.errors import InputError

FLOWER_TIMEOUT_S = 900
FLOWER_DROP_EVERY = 10  # with dropout at the base point, clients 0, 10, 20, ... fail in Flower's round


class Unavailable(Exception):
    """A peer's library is not installed here."""


def load(name: str) -> ModuleType:
    """The peer module securefl.bench.peers.`name`; Unavailable when a library it needs is missing."""
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ImportError as e:
        raise Unavailable(f"{__name__}.{name}: {e}") from None


@dataclass(frozen=True)
class Base:
    """What a peer is measured on: a point of the run (the base point or a special one) and the securefl cells
    there."""

    n: int
    m: int
    dropout: float
    seed: int
    cells: dict[str, dict]  # scheme -> its ok cell at the point (no DP)
    model: str = ""  # the securefl cells' updates are state_dicts of this model at `width` ("": flat vectors)
    width: int = 0

    def state_dicts(self) -> list[dict]:
        """The point's updates as the securefl cells got them, a flat one as {"update": it}."""
        if self.model:
            return make_state_dicts(self.n, model_shapes(self.model, self.width), self.seed)
        return [{"update": u} for u in make_updates(self.n, self.m, self.seed)]


def _flare(base: Base) -> dict:
    fn = load("he").flare_baseline
    fn([{"update": make_updates(1, 8, 0)[0]}] * 2, 8)  # warm-up: TenSEAL loaded, its first context made
    f = fn(base.state_dicts(), base.m)
    return f | {"round_s": f["work_s"], "client_s": f["client_upload_s"],
                "aggregators_s": f["server_s"] + f["keyholder_s"]}


def _phe(base: Base) -> dict:
    fn = load("he").per_value_paillier
    key_bits = base.cells.get("paillier", {}).get("params", {}).get("key_bits", 2048)
    f = fn(key_bits, base.n, base.m, min(base.m, 100))
    return f | {"key_bits": key_bits, "round_s": f["work_s"], "client_s": f["client_upload_s"],
                "aggregators_s": f["server_s"] + f["keyholder_s"]}


def _flower_round(base: Base, num_shares: int | None) -> float:
    """Seconds of Flower's last round in its own process (Ray); SecAgg+ with num_shares, None: plain FedAvg."""
    if importlib.util.find_spec("flwr") is None:
        raise Unavailable("flwr is not installed (pip install 'securefl[flower]')")
    flower = load("flower")
    drop_every = FLOWER_DROP_EVERY if base.dropout > 0 else 0
    return flower.round_seconds_in_subprocess(base.n, base.m, 2, num_shares, 0.6, drop_every, FLOWER_TIMEOUT_S)


def _flower(base: Base) -> dict:
    secure, plain = _flower_round(base, base.n), _flower_round(base, None)
    dropped = len(range(0, base.n, FLOWER_DROP_EVERY)) if base.dropout > 0 else 0
    return {"round_s": secure, "plain_round_s": plain, "protocol_s": secure - plain, "num_shares": base.n,
            "threshold": 0.6, "dropped_fraction": dropped / base.n}


@dataclass(frozen=True)
class Peer:
    """A reference line: `measure(base)` -> figures, set against the securefl scheme `compare`."""

    name: str
    what: str
    source: str
    compare: str
    measure: Callable[[Base], dict]
    quick: bool = True  # measured in --quick runs too


PEERS: tuple[Peer, ...] = (
    Peer("tenseal-flare", "TenSEAL CKKS at NVIDIA FLARE's defaults (degree 8192, [60, 40, 40], scale 2^40)",
         "securefl.bench.peers.he:flare_baseline", "ckks", _flare),
    Peer("phe-per-value", "phe Paillier, one encryption per value (timed on <= 100 values, extrapolated)",
         "securefl.bench.peers.he:per_value_paillier", "paillier", _phe),
    Peer("flower-secaggplus", "Flower SecAggPlusWorkflow, num_shares = n, threshold 0.6, Ray simulation",
         "securefl.bench.peers.flower:round_seconds", "secagg", _flower, quick=False),
)


def _securefl_figures(cell: dict | None, plain: dict | None) -> dict | None:
    if cell is None:
        return None
    out = {"round_s": cell["wall_s"], "client_s": cell["parties"]["client"]["seconds_per_party"],
           "aggregators_s": cell["aggregator_seconds"], "bytes_per_param": cell["bytes_per_param"]}
    if plain is not None:
        out["protocol_s"] = cell["wall_s"] - plain["wall_s"]
    return out


def named(names: tuple[str, ...]) -> tuple[Peer, ...]:
    """The peers of these names; InputError naming an unknown one."""
    known = {p.name: p for p in PEERS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InputError(f"unknown peers {', '.join(unknown)}; known: {', '.join(known)}")
    return tuple(known[n] for n in names)


def check(config: Config) -> None:
    """Every peer a special point lists exists (InputError otherwise)."""
    for sp in config.specials:
        named(sp.peers)


def units(config: Config, planned: set[str]) -> int:
    """Peer lines of a run whose points belong to the sweeps `planned`: every peer at the base point, and each
    special point's own where that point is measured."""
    return len(PEERS) + sum(len(sp.peers) for sp in config.specials if sp.name in planned)


def _here(cells: list[dict], at: Callable[[dict], bool]) -> dict[str, dict]:
    return {c["scheme"]: c for c in cells if c["status"] == "ok" and not c["dp"] and at(c)}


def _sites(config: Config, cells: list[dict]) -> list[tuple[str, Base, tuple[Peer, ...]]]:
    """(point name, what the peers are measured on, which peers): the base point, then the special points measured."""
    at_base = _here(cells, lambda c: c["n"] == config.base_n and c["m"] == config.base_m and not c["model"]
                    and c["dropout"] == config.base_dropout)
    out = [("base", Base(config.base_n, config.base_m, config.base_dropout, config.seed, at_base), PEERS)]
    for sp in config.specials:
        there = [c for c in cells if sp.name in c["sweeps"]]
        if there and sp.peers:
            base = Base(sp.n, there[0]["m"], sp.dropout, config.seed, _here(there, lambda c: True), sp.model,
                        sp.width if sp.model else 0)
            out.append((sp.name, base, named(sp.peers)))
    return out


def run_all(config: Config, cells: list[dict], tick: Progress) -> list[dict]:
    """Every peer at the base point and at the special points that list it; one record each (status ok, skipped,
    unavailable or error)."""
    out = []
    for point, base, which in _sites(config, cells):
        for peer in which:
            tick(0, f"peer {peer.name} ({point})")
            rec = {"name": peer.name, "point": point, "what": peer.what, "source": peer.source,
                   "compare": peer.compare, "n": base.n, "m": base.m, "dropout": base.dropout,
                   "securefl": _securefl_figures(base.cells.get(peer.compare), base.cells.get("plaintext"))}
            if config.quick and not peer.quick:
                rec |= {"status": "skipped", "error": "measured in the full run only (Ray start-up takes minutes)"}
            else:
                try:
                    t0 = time.perf_counter()
                    figures = peer.measure(base)
                    rec |= {"status": "ok", "wall_s": time.perf_counter() - t0, "figures": figures}
                except Unavailable as e:
                    rec |= {"status": "unavailable", "error": str(e)}
                except Exception as e:  # a failing peer must not end the run
                    rec |= {"status": "error", "error": f"{type(e).__name__}: {e}"}
            out.append(rec)
            tick(1, f"peer {peer.name} ({point})")
    return out
