"""HE peer baselines: TenSEAL CKKS at NVIDIA FLARE's defaults and phe Paillier with one encryption per value.

Used by `securefl bench` (its peer lines) and by benchmarks/bench_he.py; they ship with the package so
an installed securefl measures them too. Imports TenSEAL and phe, so load it only to measure a peer.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

import numpy as np
import tenseal as ts
import torch
from phe import paillier

from securefl.errors import AggregatorError


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Silence C++ writes to stdout (TenSEAL warns on every CKKSVector longer than one ciphertext)."""
    saved = os.dup(1)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 1)
        try:
            yield
        finally:
            os.dup2(saved, 1)
            os.close(saved)


def reference_mean(updates: list[dict[str, torch.Tensor]]) -> dict[str, np.ndarray]:
    """The float64 mean of updates given as {layer name: tensor}."""
    return {k: sum(u[k].double() for u in updates).numpy() / len(updates) for k in updates[0]}


def max_error(mean: dict, ref: dict) -> float:
    """Largest absolute difference between a mean and the reference, over all layers."""
    return max(float(np.abs(np.asarray(mean[k], dtype=np.float64).ravel() - ref[k].ravel()).max()) for k in ref)


def flare_baseline(updates: list[dict[str, torch.Tensor]], m: int) -> dict[str, float]:
    """TenSEAL at NVIDIA FLARE's defaults: encrypt each layer, flattened, as one CKKSVector, add, decrypt."""
    cpu = time.process_time()
    t0 = time.perf_counter()
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[60, 40, 40])
    ctx.global_scale = 2.0**40
    public_ctx = ctx.copy()
    public_ctx.make_context_public()
    public = public_ctx.serialize()
    server_ctx = ts.context_from(public)
    setup = time.perf_counter() - t0
    client_s = server_s = 0.0
    upload_bytes = []
    acc: dict[str, ts.CKKSVector] = {}
    for u in updates:
        t0 = time.perf_counter()
        cctx = ts.context_from(public)
        with quiet_stdout():
            blobs = {k: ts.ckks_vector(cctx, v.numpy().ravel()).serialize() for k, v in u.items()}
        client_s += time.perf_counter() - t0
        upload_bytes.append(len(public) + sum(len(b) for b in blobs.values()))
        t0 = time.perf_counter()
        for k, b in blobs.items():
            vec = ts.ckks_vector_from(server_ctx, b)
            if k in acc:
                acc[k] += vec
            else:
                acc[k] = vec
        server_s += time.perf_counter() - t0
    t0 = time.perf_counter()
    sums = {k: v.serialize() for k, v in acc.items()}
    server_s += time.perf_counter() - t0
    t0 = time.perf_counter()
    mean = {k: np.asarray(ts.ckks_vector_from(ctx, b).decrypt()) / len(updates) for k, b in sums.items()}
    keyholder_s = time.perf_counter() - t0
    per_client = float(np.mean(upload_bytes))
    return {
        "cpu_s": time.process_time() - cpu,
        "client_upload_s": client_s / len(updates),
        "server_s": server_s,
        "keyholder_s": keyholder_s,
        "setup_s": setup,
        "work_s": client_s + server_s + keyholder_s,
        "upload_bytes": per_client,
        "context_bytes": len(public),
        "bytes_per_param": per_client / m,
        "max_error": max_error(mean, reference_mean(updates)),
    }


def per_value_paillier(key_bits: int, n: int, m: int, subset: int) -> dict[str, float]:
    """One phe encryption per value, timed on `subset` values and extrapolated to m values, n clients."""
    t0 = time.perf_counter()
    pk, sk = paillier.generate_paillier_keypair(n_length=key_bits)
    keygen = time.perf_counter() - t0
    values = np.random.default_rng(0).normal(0, 0.05, subset)
    t0 = time.perf_counter()
    enc = [pk.encrypt(float(v)) for v in values]
    t_enc = (time.perf_counter() - t0) / subset
    other = [pk.encrypt(float(v)) for v in values]
    t0 = time.perf_counter()
    total = [a + b for a, b in zip(enc, other, strict=True)]
    t_add = (time.perf_counter() - t0) / subset
    t0 = time.perf_counter()
    out = [sk.decrypt(c) for c in total]
    t_dec = (time.perf_counter() - t0) / subset
    if not np.allclose(out, 2 * values):
        raise AggregatorError("phe per-value baseline: the decrypted sums differ from the plaintext sums")
    client = m * t_enc
    server = (n - 1) * m * t_add
    keyholder = m * t_dec
    return {
        "client_upload_s": client,
        "server_s": server,
        "keyholder_s": keyholder,
        "setup_s": keygen,
        "work_s": n * client + server + keyholder,
        "upload_bytes": m * 2 * key_bits / 8,
        "bytes_per_param": 2 * key_bits / 8,
        "per_value_encrypt_s": t_enc,
    }
