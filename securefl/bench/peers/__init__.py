"""Reference lines from peer libraries, measured in the same run by the baselines that ship in this package.

Each peer is a function of securefl.bench.peers.he (TenSEAL at FLARE's defaults, phe per value) or
securefl.bench.peers.flower (Flower's SecAgg+), called at the run's base point (n, m); the
scripts in benchmarks/ use the same functions. A peer module is imported only when its peer is
measured, so the bench loads TenSEAL, phe or Flower only for the peer lines. Figures are
normalised to round_s, client_s, aggregators_s and bytes_per_param and set next to the securefl
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
from securefl.bench.workload import make_updates

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
    """What a peer is measured on: the run's base point and the securefl cells there."""

    n: int
    m: int
    dropout: float
    seed: int
    cells: dict[str, dict]  # scheme -> its ok cell at the base point (no DP)


def _flare(base: Base) -> dict:
    fn = load("he").flare_baseline
    updates = [{"update": u} for u in make_updates(base.n, base.m, base.seed)]
    fn(updates[:2], base.m)  # warm-up
    f = fn(updates, base.m)
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


def run_all(config: Config, cells: list[dict], tick: Progress) -> list[dict]:
    """Every peer at the base point; one record each (status ok, skipped, unavailable or error)."""
    here = {c["scheme"]: c for c in cells if c["status"] == "ok" and not c["dp"] and c["n"] == config.base_n
            and c["m"] == config.base_m and c["dropout"] == config.base_dropout}
    base = Base(config.base_n, config.base_m, config.base_dropout, config.seed, here)
    out = []
    for peer in PEERS:
        tick(0, f"peer {peer.name}")
        rec = {"name": peer.name, "what": peer.what, "source": peer.source, "compare": peer.compare,
               "n": base.n, "m": base.m, "dropout": base.dropout,
               "securefl": _securefl_figures(here.get(peer.compare), here.get("plaintext"))}
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
        tick(1, f"peer {peer.name}")
    return out
