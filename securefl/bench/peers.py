"""Reference lines from peer libraries, measured in the same run by the baseline functions of benchmarks/*.py.

Each peer is a function written with the scheme it compares against (benchmarks/bench_he.py,
benchmarks/flower_secaggplus.py), imported from the script's file and called at the run's base
point (n, m). Its figures are normalised to round_s, client_s, aggregators_s and bytes_per_param
and set next to the securefl scheme's cell at the same point. A peer whose script, function or
library is missing is listed as unavailable with the reason; one that raises records its error;
neither stops the run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from securefl.bench.harness import Config, Progress

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
FLOWER_TIMEOUT_S = 900


class Unavailable(Exception):
    """A peer's script, function or library is not installed here."""


def load(script: str) -> ModuleType:
    """Import a benchmark script by file path (benchmarks/ is not a package; peers run from a checkout)."""
    path = BENCHMARKS / script
    if not path.is_file():
        raise Unavailable(f"{path} not found (peers run from a source checkout)")
    name = f"_securefl_bench_peer_{path.stem}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except ImportError as e:
            raise Unavailable(f"benchmarks/{script}: {e}") from None
        sys.modules[name] = module
    return sys.modules[name]


def baseline(script: str, function: str) -> Callable:
    """The function `function` of benchmarks/`script`."""
    fn = getattr(load(script), function, None)
    if fn is None:
        raise Unavailable(f"benchmarks/{script} has no function {function}")
    return fn


@dataclass(frozen=True)
class Base:
    """What a peer is measured on: the run's base point and the securefl cells there."""

    n: int
    m: int
    dropout: float
    seed: int
    cells: dict[str, dict]  # scheme -> its ok cell at the base point (no DP)


def _flare(base: Base) -> dict:
    from securefl.bench.harness import make_updates

    fn = baseline("bench_he.py", "flare_baseline")
    updates = [{"update": u} for u in make_updates(base.n, base.m, base.seed)]
    fn(updates[:2], base.m)  # warm-up
    f = fn(updates, base.m)
    return f | {"round_s": f["work_s"], "client_s": f["client_upload_s"],
                "aggregators_s": f["server_s"] + f["keyholder_s"]}


def _phe(base: Base) -> dict:
    fn = baseline("bench_he.py", "per_value_paillier")
    key_bits = base.cells.get("paillier", {}).get("params", {}).get("key_bits", 2048)
    f = fn(key_bits, base.n, base.m, min(base.m, 100))
    return f | {"key_bits": key_bits, "round_s": f["work_s"], "client_s": f["client_upload_s"],
                "aggregators_s": f["server_s"] + f["keyholder_s"]}


_FLOWER_CHILD = """
import json, sys
from securefl.bench.peers import load
mod = load("flower_secaggplus.py")
n, m, drop, config = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
mod.N = n
mod.CONFIGS["bench"] = {"num_shares": n, "threshold": 0.6, "drop": drop}
print("RESULT " + json.dumps(mod.flower_round_seconds(config, m, 2)), flush=True)
"""


def _flower_round(base: Base, config: str) -> float:
    """Seconds of Flower's last round in its own process (Ray), from flower_secaggplus.flower_round_seconds."""
    baseline("flower_secaggplus.py", "flower_round_seconds")  # present and importable here
    args = [str(base.n), str(base.m), "1" if base.dropout > 0 else "0", config]
    p = subprocess.run([sys.executable, "-c", _FLOWER_CHILD, *args], capture_output=True, text=True,
                       timeout=FLOWER_TIMEOUT_S, env=os.environ | {"RAY_DEDUP_LOGS": "0"})
    lines = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
    if not lines:
        tail = " | ".join((p.stdout + p.stderr).strip().splitlines()[-5:])
        raise RuntimeError(f"flower {config}: no result (exit {p.returncode}): {tail}")
    return float(json.loads(lines[-1][len("RESULT "):]))


def _flower(base: Base) -> dict:
    secure, plain = _flower_round(base, "bench"), _flower_round(base, "plain")
    return {"round_s": secure, "plain_round_s": plain, "protocol_s": secure - plain, "num_shares": base.n,
            "threshold": 0.6, "dropped_fraction": len(range(0, base.n, 10)) / base.n if base.dropout > 0 else 0.0}


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
         "benchmarks/bench_he.py:flare_baseline", "ckks", _flare),
    Peer("phe-per-value", "phe Paillier, one encryption per value (timed on <= 100 values, extrapolated)",
         "benchmarks/bench_he.py:per_value_paillier", "paillier", _phe),
    Peer("flower-secaggplus", "Flower SecAggPlusWorkflow, num_shares = n, threshold 0.6, Ray simulation",
         "benchmarks/flower_secaggplus.py:flower_round_seconds", "secagg", _flower, quick=False),
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
