"""CKKS per ciphertext: where the time of one ciphertext goes, the committed primitives against securefl.he.ckks_io.

Microseconds per ciphertext of 4096 values (two reals per complex slot), on --sample ciphertexts, both paths in
one run:

* committed (securefl.he at 7a98b52): a TenSEAL context with one data prime and the 20-bit special prime,
  SEAL's encode, encrypt, save and load through a file in /dev/shm (zstd), add_inplace, decrypt, decode;
* new (securefl.he.ckks_io, what securefl.CKKS runs now): no special prime (SEAL KeyGenerator keys), encode,
  encrypt or encrypt_zero (offline) + add_plain, export (SEAL's zstd save, inflated with zstandard), pack
  (numba, planar bits), the key holder's unpack + check + add (numba), to_ciphertext (SEAL's validating load),
  decrypt, decode.

The whole-protocol comparison (rounds, bytes, the key holder against its floor, a cProfile of a round) is
benchmarks/bench_he.py (its ResNet-18-sized workload: securefl.bench.workload.resnet18_shapes).
Usage: python benchmarks/bench_ckks_profile.py [--clients 10] [--sample 200] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time

import numpy as np
import tenseal as ts
from tenseal import sealapi

from securefl.he import ckks_io as ci

CLIP, FRAC_BITS, SPECIAL_PRIME_BITS = 8.0, 16, 20


def today_bits(n: int) -> tuple[int, int]:
    """securefl.he.ckks's parameters at 8c4e4fd for n clients at N = 4096: (data prime bits, scale bits)."""
    scale_bits = FRAC_BITS + 4096 .bit_length()
    return math.ceil(math.log2(n * CLIP)) + scale_bits + 3, scale_bits


def today_context(n: int) -> tuple[ts.Context, float]:
    """That TenSEAL context (data prime and the 20-bit special prime) and its scale."""
    data, scale_bits = today_bits(n)
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, 4096, coeff_mod_bit_sizes=[data, SPECIAL_PRIME_BITS], n_threads=1)
    return ctx, 2.0**scale_bits


def steps(n: int, sample: int) -> dict[str, dict[str, float]]:
    """Microseconds per ciphertext of each step, today's primitives and ckks_io's, on `sample` ciphertexts."""
    rng = np.random.default_rng(0)
    rows = [(rng.normal(0, 0.05, 2048) * (1 + 1j)).tolist() for _ in range(sample)]
    tmp = tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    path = os.path.join(tmp.name, "ct")
    out: dict[str, dict[str, float]] = {}

    def timed(fn) -> float:
        t0 = time.perf_counter()
        for r in rows:
            fn(r)
        return (time.perf_counter() - t0) / sample * 1e6

    ctx, scale = today_context(n)
    seal = ctx.seal_context().data
    enc, ev = sealapi.CKKSEncoder(seal), sealapi.Evaluator(seal)
    encryptor = sealapi.Encryptor(seal, ctx.public_key().data)
    decryptor = sealapi.Decryptor(seal, ctx.secret_key().data)
    pt, ct, back = sealapi.Plaintext(), sealapi.Ciphertext(), sealapi.Ciphertext()
    t = {"encode": timed(lambda r: enc.encode(r, scale, pt)), "encrypt": timed(lambda _: encryptor.encrypt(pt, ct))}
    t["save (zstd, file)"] = timed(lambda _: ct.save(path))
    t["load (file, inflate, checks)"] = timed(lambda _: back.load(seal, path))
    t["add"] = timed(lambda _: ev.add_inplace(back, ct))
    t["decrypt"] = timed(lambda _: decryptor.decrypt(ct, pt))
    t["decode"] = timed(lambda _: enc.decode_complex(pt))
    with open(path, "rb") as f:
        t["bytes per value"] = len(f.read()) / 4096
    out["committed"] = t

    scheme = ci.Scheme.choose(n, CLIP, FRAC_BITS)
    codec = ci.CoefficientCodec(scheme)
    secret, public_blob = ci.keygen(codec, os.urandom(ci.SEED_BYTES))
    public = ci.load_public_key(codec, public_blob, "bench")
    enc, encryptor = sealapi.CKKSEncoder(codec.context), sealapi.Encryptor(codec.context, public)
    decryptor, ev = sealapi.Decryptor(codec.context, secret), sealapi.Evaluator(codec.context)
    zero = sealapi.Ciphertext()
    t = {"encode": timed(lambda r: enc.encode(r, scheme.scale, pt)),
         "encrypt": timed(lambda _: encryptor.encrypt(pt, ct)),
         "encrypt_zero (offline)": timed(lambda _: encryptor.encrypt_zero(zero))}
    zero.scale = scheme.scale
    t["add_plain (online, with a zero)"] = timed(lambda _: ev.add_plain_inplace(zero, pt))
    coeffs = codec.export(ct)
    t["export (zstd save, inflate)"] = timed(lambda _: codec.export(ct))
    many = np.repeat(coeffs[None], sample, axis=0)
    t0 = time.perf_counter()
    raw = codec.pack(many)
    t["pack"] = (time.perf_counter() - t0) / sample * 1e6
    acc = np.zeros((sample, *coeffs.shape), np.uint64)
    codec.add_into(raw, acc, "bench")  # compiles (numba cache)
    t0 = time.perf_counter()
    codec.add_into(raw, acc, "bench")
    t["unpack + check + add (numba)"] = (time.perf_counter() - t0) / sample * 1e6
    t["to_ciphertext (load, checks)"] = timed(lambda _: codec.to_ciphertext(coeffs, "bench"))
    t["decrypt"] = timed(lambda _: decryptor.decrypt(ct, pt))
    t["decode"] = timed(lambda _: enc.decode_complex(pt))
    t["bytes per value"] = codec.ciphertext_bytes / scheme.degree
    out["new"] = t
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=10, help="n, which sets the primes and the scale")
    ap.add_argument("--sample", type=int, default=200)
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args()
    warm = ci.CoefficientCodec(ci.Scheme.choose(args.clients, CLIP, FRAC_BITS))  # compile the numba kernels first
    warm.from_bytes(warm.pack(np.zeros((1, *warm.shape), np.uint64)), 1, "warm-up")
    step = steps(args.clients, args.sample)
    print(f"Per ciphertext of 4096 values, microseconds (on {args.sample} ciphertexts, n={args.clients}, "
          f"{os.cpu_count()} cores)")
    for path, t in step.items():
        print(f"  {path}: " + "; ".join(f"{k} {v:.1f}" if "bytes" not in k else f"{k} {v:.2f}" for k, v in t.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(step, f, indent=2)


if __name__ == "__main__":
    main()
