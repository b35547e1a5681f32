"""CKKS at a ResNet-18-sized state_dict: today's ciphertext path against securefl.he.ckks_io, in one run.

Workload: the 102 float tensors of torchvision's resnet18 state_dict (11,699,112 values at --width 64 and
1000 classes; --width 32 keeps the 102 tensors with a quarter of the values), n clients (--clients 10),
float32 values ~ N(0, 0.05), clipped to 8 and weighted, plus the weight slot, two reals per complex slot
(as securefl.CKKS's clients encode them). Every path gets the same inputs.

* today: the ciphertext path of securefl.he.ckks at commit 8c4e4fd: a TenSEAL context with one data prime
  and the 20-bit special prime, SEAL's encrypt, save and load through a file in /dev/shm (zstd), the
  server's load + add_inplace, the key holder's load, decrypt and decode.
* new: ckks_io: no special prime (SEAL KeyGenerator keys), packed coefficients on the wire, the server
  checks and adds them in one numba pass, the key holder rebuilds SEAL ciphertexts (to_ciphertext),
  decrypts and decodes.
* new+pre: new with the encryptions of zero made offline (offline seconds shown apart).
Client, server and key holder seconds are each party's whole work on this path, summed over clients for
"clients"; the breakdown per step is timed on --sample ciphertexts with the same primitives. "aggregate" is
checking and adding every upload (the server's job today; the key holder's in the signed-upload protocol);
its floor: one in-place pass over the bytes received (securefl.bench.floors.memory_bandwidth) plus SEAL's
add_inplace of as many ciphertexts (timed here). Wire framing, signatures and digests are in neither path:
--aggregate also runs securefl.CKKS on the same updates (the working tree's whole protocol) and estimates
its round with the new path swapped in; --profile prints cProfile's top functions of that run.

Usage: python benchmarks/bench_ckks_profile.py [--clients 10] [--width 64] [--repeats 1] [--sample 200]
[--aggregate] [--profile] [--json PATH]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import math
import os
import pstats
import statistics
import tempfile
import time

import numpy as np
import tenseal as ts
import torch
from tenseal import sealapi

from securefl.bench.floors import memory_bandwidth
from securefl.he import ckks_io as ci

CLIP, FRAC_BITS, SPECIAL_PRIME_BITS, SEED = 8.0, 16, 20, 11


def resnet18_shapes(width: int = 64, classes: int = 1000) -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes of the float tensors of torchvision's resnet18 state_dict at base width `width`."""
    shapes: list[tuple[str, tuple[int, ...]]] = [("conv1.weight", (width, 3, 7, 7))]

    def bn(name: str, c: int) -> None:
        shapes.extend((f"{name}.{s}", (c,)) for s in ("weight", "bias", "running_mean", "running_var"))

    bn("bn1", width)
    cin = width
    for li, mult in enumerate((1, 2, 4, 8), start=1):
        c = width * mult
        for b in range(2):
            pre = f"layer{li}.{b}"
            shapes.append((f"{pre}.conv1.weight", (c, cin if b == 0 else c, 3, 3)))
            bn(f"{pre}.bn1", c)
            shapes.append((f"{pre}.conv2.weight", (c, c, 3, 3)))
            bn(f"{pre}.bn2", c)
            if b == 0 and li > 1:
                shapes.append((f"{pre}.downsample.0.weight", (c, cin, 1, 1)))
                bn(f"{pre}.downsample.1", c)
        cin = c
    return [*shapes, ("fc.weight", (classes, cin)), ("fc.bias", (classes,))]


def update(shapes: list, client: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(SEED + client)
    return {k: torch.randn(s, generator=g) * 0.05 for k, s in shapes}


def weight(client: int) -> float:
    return 0.5 + 0.5 * (client + 1) / 16


def client_buffer(shapes: list, client: int, degree: int) -> np.ndarray:
    """[w * clip(floats), w], zero-padded to whole ciphertexts of `degree` reals (as a CKKS client builds it)."""
    floats = torch.cat([t.reshape(-1) for t in update(shapes, client).values()]).numpy()
    buf = np.zeros(-(-(floats.size + 1) // degree) * degree)
    np.clip(floats, -CLIP, CLIP, out=buf[: floats.size])
    w = weight(client)
    buf[: floats.size] *= w
    buf[floats.size] = w
    return buf


class Clock:
    """Seconds per (party, step), accumulated."""

    def __init__(self) -> None:
        self.s: dict[str, float] = {}

    def add(self, key: str, t0: float) -> float:
        t = time.perf_counter()
        self.s[key] = self.s.get(key, 0.0) + t - t0
        return t


def today_bits(n: int) -> tuple[int, int]:
    """securefl.he.ckks's parameters at 8c4e4fd for n clients at N = 4096: (data prime bits, scale bits)."""
    scale_bits = FRAC_BITS + 4096 .bit_length()
    return math.ceil(math.log2(n * CLIP)) + scale_bits + 3, scale_bits


def today_context(n: int) -> tuple[ts.Context, float]:
    """That TenSEAL context (data prime and the 20-bit special prime) and its scale."""
    data, scale_bits = today_bits(n)
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, 4096, coeff_mod_bit_sizes=[data, SPECIAL_PRIME_BITS], n_threads=1)
    return ctx, 2.0**scale_bits


def run_today(shapes: list, n: int, ref: np.ndarray) -> dict:
    ctx, scale = today_context(n)
    seal = ctx.seal_context().data
    public = ctx.copy()
    public.make_context_public()
    pub_ctx = ts.context_from(public.serialize())
    tmp = tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    path = os.path.join(tmp.name, "ct")
    clock, acc, sent = Clock(), None, 0

    def dump(ct: sealapi.Ciphertext) -> bytes:
        ct.save(path)
        with open(path, "rb") as f:
            return f.read()

    def load(blob: bytes, context: sealapi.SEALContext) -> sealapi.Ciphertext:
        with open(path, "wb") as f:
            f.write(blob)
        ct = sealapi.Ciphertext()
        ct.load(context, path)
        return ct

    server_seal = pub_ctx.seal_context().data
    evaluator = sealapi.Evaluator(server_seal)
    encoder = sealapi.CKKSEncoder(pub_ctx.seal_context().data)
    encryptor = sealapi.Encryptor(pub_ctx.seal_context().data, pub_ctx.public_key().data)
    for i in range(n):
        buf = client_buffer(shapes, i, 4096)
        t0 = time.perf_counter()
        pt, ct, blobs = sealapi.Plaintext(), sealapi.Ciphertext(), []
        for z in buf.view(np.complex128).reshape(-1, 2048):
            encoder.encode(z.tolist(), scale, pt)
            encryptor.encrypt(pt, ct)
            blobs.append(dump(ct))
        t0 = clock.add("clients", t0)
        sent += sum(len(b) for b in blobs)
        cts = [load(b, server_seal) for b in blobs]
        if acc is None:
            acc = cts
        else:
            for a, c in zip(acc, cts, strict=True):
                evaluator.add_inplace(a, c)
        clock.add("aggregate", t0)
    t0 = time.perf_counter()
    request = [dump(a) for a in acc]
    t0 = clock.add("forward", t0)
    decryptor, dec_encoder = sealapi.Decryptor(seal, ctx.secret_key().data), sealapi.CKKSEncoder(seal)
    out = np.empty(len(request) * 4096)
    pt = sealapi.Plaintext()
    for row, blob in zip(out.view(np.complex128).reshape(-1, 2048), request, strict=True):
        decryptor.decrypt(load(blob, seal), pt)
        row[:] = dec_encoder.decode_complex(pt)
    clock.add("keyholder", t0)
    return {**clock.s, "upload_bytes": sent / n, "ciphertexts": len(acc), "received_bytes": sent,
            "max_error": float(np.abs(out[: ref.size] - ref).max())}


def run_new(shapes: list, n: int, ref: np.ndarray, precompute: bool) -> dict:
    scheme = ci.Scheme.choose(n, CLIP, FRAC_BITS)
    codec = ci.CoefficientCodec(scheme)
    secret, public_blob = ci.keygen(codec)
    clock, acc, sent, chunks = Clock(), None, 0, 0
    for i in range(n):
        buf = client_buffer(shapes, i, scheme.degree)
        chunks = buf.size // scheme.degree
        t0 = time.perf_counter()
        enc = ci.Encrypter(codec, ci.load_public_key(codec, public_blob, f"client/{i}"))
        if precompute:
            enc.precompute(chunks)
            t0 = clock.add("clients_offline", t0)
        upload = enc.encrypt(buf)
        t0 = clock.add("clients", t0)
        sent += len(upload)
        if acc is None:
            acc = ci.Accumulator(codec, chunks)
        acc.add(upload, "server")
        clock.add("aggregate", t0)
    t0 = time.perf_counter()
    request = codec.to_bytes(acc.result())
    t0 = clock.add("forward", t0)
    out = ci.Decrypter(codec, secret).decrypt(codec.from_bytes(request, chunks, "keyholder"), "keyholder")
    clock.add("keyholder", t0)
    return {**clock.s, "upload_bytes": sent / n, "ciphertexts": chunks, "received_bytes": sent,
            "max_error": float(np.abs(out[: ref.size] - ref).max()), "degree": scheme.degree,
            "prime_bits": list(scheme.prime_bits), "scale_bits": scheme.scale_bits}


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
    out["today"] = t

    scheme = ci.Scheme.choose(n, CLIP, FRAC_BITS)
    codec = ci.CoefficientCodec(scheme)
    secret, public_blob = ci.keygen(codec)
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
    raw = codec.to_bytes(many)
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


def aggregate_run(shapes: list, n: int, profile: bool) -> tuple[dict, str]:
    from securefl.he.ckks import CKKS

    updates = [update(shapes, i) for i in range(n)]
    agg = CKKS(seed=1)
    agg.aggregate([{"w": torch.zeros(5000)}] * 2)  # warm-up (Numba, TenSEAL)
    prof = cProfile.Profile() if profile else None
    t0 = time.perf_counter()
    if prof:
        prof.enable()
    res = agg.aggregate(updates, weights=[weight(i) for i in range(n)])
    if prof:
        prof.disable()
    wall = time.perf_counter() - t0
    rep = res.report
    text = ""
    if prof:
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(22)
        text = s.getvalue()
    kinds = {k: rep.kind_seconds(k) for k in ("client", "server", "keyholder")}
    return {"wall_s": wall, **{f"{k}_s": v for k, v in kinds.items()},
            "upload_bytes": rep.mean_bytes_sent("client"), "seconds": rep.seconds}, text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--sample", type=int, default=200)
    ap.add_argument("--aggregate", action="store_true")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args()
    n, shapes = args.clients, resnet18_shapes(args.width)
    m = sum(math.prod(s) for _, s in shapes)
    ref = sum(client_buffer(shapes, i, 4096)[: m + 1] for i in range(n))
    print(f"CKKS: {len(shapes)} float tensors, m = {m:,} values, n = {n} clients, {os.cpu_count()} cores, "
          f"median of {args.repeats} alternating runs")
    warm = ci.CoefficientCodec(ci.Scheme.choose(n, CLIP, FRAC_BITS))  # compile the numba kernel before timing
    warm.from_bytes(warm.to_bytes(np.zeros((1, *warm.shape), np.uint64)), 1, "warm-up")
    runs: dict[str, list[dict]] = {"today": [], "new": [], "new+pre": []}
    for _ in range(args.repeats):
        runs["today"].append(run_today(shapes, n, ref))
        runs["new"].append(run_new(shapes, n, ref, precompute=False))
        runs["new+pre"].append(run_new(shapes, n, ref, precompute=True))
    med = {k: {f: statistics.median(r[f] for r in v) for f in v[0] if not isinstance(v[0][f], list)}
           for k, v in runs.items()}
    add_rate = steps(n, 50)["today"]["add"] * 1e-6  # SEAL's add_inplace per ciphertext, for the floor
    mem = memory_bandwidth()
    new = runs["new"][0]
    print(f"  new scheme: N={new['degree']}, primes {new['prime_bits']} bits (no special prime), "
          f"scale 2^{new['scale_bits']}; today: N=4096, primes [{today_bits(n)[0]}, {SPECIAL_PRIME_BITS}], "
          f"scale 2^{today_bits(n)[1]}")
    print(f"  {'':<40}" + "".join(f"{k:>14}" for k in med))
    for label, key, fmt in (("clients s (all, online)", "clients", "{:.2f}"),
                            ("clients s offline (zeros)", "clients_offline", "{:.2f}"),
                            ("aggregate s (check + add every upload)", "aggregate", "{:.2f}"),
                            ("forward s (serialize the sum)", "forward", "{:.2f}"),
                            ("key holder s (parse, decrypt, decode)", "keyholder", "{:.2f}"),
                            ("upload bytes per value", "upload_bytes", "{:.2f}"),
                            ("max |error| of the sum", "max_error", "{:.2e}")):
        cells = []
        for r in med.values():
            v = r.get(key, 0.0)
            cells.append(fmt.format(v / m if key == "upload_bytes" else v))
        print(f"  {label:<40}" + "".join(f"{c:>14}" for c in cells))
    totals = {k: r["clients"] + r.get("clients_offline", 0.0) + r["aggregate"] + r["forward"] + r["keyholder"]
              for k, r in med.items()}
    print(f"  {'round s (all parties, offline included)':<40}" + "".join(f"{totals[k]:>14.2f}" for k in med))
    print(f"  {'upload / float32':<40}" + "".join(f"{r['upload_bytes'] / m / 4:>14.2f}" for r in med.values()))
    floors = {k: 3 * r["received_bytes"] / mem + (n - 1) * r["ciphertexts"] * add_rate for k, r in med.items()}
    print(f"  {'aggregation floor s (read + SEAL adds)':<40}" + "".join(f"{floors[k]:>14.3f}" for k in med))
    print(f"  {'aggregate / floor':<40}" + "".join(f"{med[k]['aggregate'] / floors[k]:>14.1f}" for k in med))
    print(f"  speed-up of the round: new {totals['today'] / totals['new']:.2f}x, new+pre "
          f"{totals['today'] / totals['new+pre']:.2f}x (online only: "
          f"{totals['today'] / (totals['new+pre'] - med['new+pre']['clients_offline']):.2f}x)")
    step = steps(n, args.sample)
    print(f"\nPer ciphertext of 4096 values, microseconds (on {args.sample} ciphertexts)")
    for path, t in step.items():
        print(f"  {path}: " + "; ".join(f"{k} {v:.1f}" if "bytes" not in k else f"{k} {v:.2f}" for k, v in t.items()))
    out = {"m": m, "clients": n, "runs": runs, "median": med, "round_s": totals, "server_floor_s": floors,
           "steps_us": step, "memory_bytes_per_s": mem}
    if args.aggregate or args.profile:
        agg, text = aggregate_run(shapes, n, args.profile)
        out["aggregate"] = agg
        swapped = agg["wall_s"] - totals["today"] + totals["new"]
        print(f"\nsecurefl.CKKS.aggregate (working tree): {agg['wall_s']:.1f} s wall (clients {agg['client_s']:.1f}, "
              f"server {agg['server_s']:.1f}, key holder {agg['keyholder_s']:.1f}), upload "
              f"{agg['upload_bytes'] / m / 4:.2f}x float32; with the new path swapped in: about {swapped:.1f} s "
              f"({agg['wall_s'] / swapped:.2f}x)")
        if text:
            print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2, default=str)


if __name__ == "__main__":
    main()
