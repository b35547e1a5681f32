"""The hardware floor: AES-CTR and memory throughput measured in the run, and each scheme's floor from them.

A party's floor is the time this machine needs just to expand the AES-CTR keystream the
scheme obliges it to expand and to add the ring words it must add, at the throughputs measured
in the same run; no implementation of the scheme can be faster than that on this machine. What a
party must expand and add is the scheme class's floor model (securefl.aggregator.Aggregator.floor);
schemes without a keystream model (the HE schemes) get the base class's: reading once the bytes the
party sends (clients) or receives (aggregating parties).
"""

from __future__ import annotations

import os
import time

import numpy as np

from securefl import schemes
from securefl.crypto.prg import Expander


def aes_ctr_throughput(nbytes: int = 64 << 20, repeats: int = 3) -> float:
    """Measured AES-128-CTR keystream bytes per second on this machine (best of `repeats`)."""
    exp = Expander(nbytes // 4, np.uint32)
    best = float("inf")
    for _ in range(repeats):
        key = os.urandom(32)
        t0 = time.perf_counter()
        exp.expand(key)
        best = min(best, time.perf_counter() - t0)
    return nbytes / best


def memory_bandwidth(nbytes: int = 32 << 20, repeats: int = 5) -> float:
    """Bytes per second moved by an in-place uint32 add (two reads and one write per word), best of `repeats`."""
    words = nbytes // 4
    acc = np.zeros(words, np.uint32)
    x = np.ones(words, np.uint32)
    np.add(acc, x, out=acc)  # touch the pages before timing
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.add(acc, x, out=acc)
        best = min(best, time.perf_counter() - t0)
    return 3 * nbytes / best


def measure_hardware(quick: bool = False) -> dict[str, float]:
    """AES-128-CTR keystream bytes/s (aes_ctr_throughput) and memory bytes/s, measured now."""
    size = (16 if quick else 64) << 20
    return {
        "aes_ctr_bytes_per_s": aes_ctr_throughput(size, repeats=3),
        "memory_bytes_per_s": memory_bandwidth(size // 2),
    }


def _party(prg: float, add: float, hw: dict[str, float], basis: str) -> dict[str, float | str]:
    """One party's floor: prg bytes at the AES-CTR rate plus add bytes at a third of the memory rate."""
    seconds = prg / hw["aes_ctr_bytes_per_s"] + 3 * add / hw["memory_bytes_per_s"]
    return {"prg_bytes": prg, "add_bytes": add, "seconds": seconds, "basis": basis}


def scheme_floor(scheme: str, n: int, m: int, survivors: int, params: dict, parties: dict[str, dict],
                 hw: dict[str, float]) -> dict[str, dict]:
    """Floor per party kind (one party of that kind) of one round of the registered `scheme`: n clients, m float
    parameters, from the scheme class's floor model (Aggregator.floor) at the throughputs `hw`.

    `parties` is a cell's per-kind summary (bytes_sent_per_party, bytes_received_per_party): the measured traffic
    the generic bytes-read floor reads.
    """
    traffic = {kind: (p["bytes_sent_per_party"], p["bytes_received_per_party"]) for kind, p in parties.items()}
    model = schemes.scheme_class(scheme).floor(n, m, survivors, params, traffic)
    return {kind: _party(prg, add, hw, basis) for kind, (prg, add, basis) in model.items()}
