"""Paillier on gmpy2 (securefl.he.paillier_math, paillier_slots) against today's phe path, in one run.

1. Per operation, both paths alternating in the same process (median of --repeats): offline (one
   encryption of zero), online (one packed plaintext -> serialized ciphertext), server (parse, check and
   multiply one ciphertext into the sum), key holder (decrypt one ciphertext), and packing / unpacking of
   m values. Today's path is phe as securefl.he.paillier calls it (EncryptedNumber per ciphertext,
   raw_encrypt(0) per plaintext offline, raw_decrypt), timed on --subset ciphertexts.
2. The base-point round (n clients, m values) estimated from those figures for each path:
   n * client + server + key holder, all single-threaded, key generation left out.
3. --round: the base point run end to end with the new pieces (each client encodes its update with the
   codec, packs, encrypts with DJN randomness and serializes; the server parses, checks and multiplies;
   the key holder decrypts and unpacks), checked exactly against the integer sum of the ring vectors.

Usage: python benchmarks/bench_paillier_math.py [--clients 100] [--params 100000] [--key-bits 2048]
[--subset 30] [--repeats 3] [--window 8] [--round] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from gmpy2 import mpz
from phe import paillier

from securefl.codec import FixedPoint, Flat, Layout
from securefl.he import paillier_math as pm
from securefl.he import paillier_slots as ps
from securefl.he.paillier import Packing, ciphertexts, to_bytes

CLIP, FRAC_BITS, INT_BOUND = 8.0, 16, 2**16  # the aggregators' defaults


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def phe_ops(pk: paillier.PaillierPublicKey, sk: paillier.PaillierPrivateKey, plains: list[int]) -> dict:
    """Seconds per ciphertext of today's phe path."""
    k, width = len(plains), 2 * pk.n.bit_length() // 8
    t_off, zeros = timed(lambda: [paillier.EncryptedNumber(pk, pk.raw_encrypt(0)) for _ in range(k)])
    t_on, raw = timed(lambda: to_bytes([(paillier.EncryptedNumber(pk, pk.raw_encrypt(m, r_value=1)) + z)
                                        .ciphertext(be_secure=False) for m, z in zip(plains, zeros, strict=True)],
                                       width))
    acc = [paillier.EncryptedNumber(pk, c) for c in ciphertexts(raw, k, pk, "bench")]

    def server() -> None:
        enc = [paillier.EncryptedNumber(pk, c) for c in ciphertexts(raw, k, pk, "bench")]
        acc[:] = [a + e for a, e in zip(acc, enc, strict=True)]

    t_srv, _ = timed(server)
    t_dec, out = timed(lambda: [sk.raw_decrypt(a.ciphertext(be_secure=False)) for a in acc])
    assert out == [2 * m % pk.n for m in plains]
    return {"offline": t_off / k, "online": t_on / k, "server": t_srv / k, "decrypt": t_dec / k}


def gmpy_ops(pub: pm.PublicKey, dec: pm.Decryptor, plains: list[int], window: int) -> dict:
    """Seconds per ciphertext of the gmpy2 path (DJN offline; the plain r^N offline on fewer ciphertexts)."""
    k = len(plains)
    t_table, fixed_base = timed(lambda: pm.FixedBaseRandomness(pub, window=window))
    t_off, zeros = timed(lambda: fixed_base.zeros(k))
    t_plain, _ = timed(lambda: pm.PlainRandomness(pub).zeros(max(1, k // 4)))
    t_on, raw = timed(lambda: pm.to_bytes(pm.encrypt(pub, plains, zeros), pub.cipher_bytes))
    acc = pm.from_bytes(raw, k, pub, "bench")
    t_srv, _ = timed(lambda: pm.add_into(acc, pm.from_bytes(raw, k, pub, "bench"), pub))
    t_dec, out = timed(lambda: dec.decrypt(acc))
    assert out == [2 * m % pub.n for m in plains]
    return {"table": t_table, "offline": t_off / k, "offline_plain": t_plain / max(1, k // 4), "online": t_on / k,
            "server": t_srv / k, "decrypt": t_dec / k}


def packing_ops(n: int, m: int, key_bits: int, modulus: int) -> dict:
    """Seconds to pack one client's m values and to unpack the sum, today's Packing against paillier_slots."""
    fixed = FixedPoint.choose(n, clip=CLIP, frac_bits=FRAC_BITS, int_bound=INT_BOUND)
    today = Packing.choose(n, fixed, m + 1, key_bits)
    bits = ps.slot_bits(ps.sum_bound(n, CLIP, FRAC_BITS, INT_BOUND))
    per = ps.slots_per_plaintext(key_bits, bits)
    values = np.random.default_rng(0).integers(-int(CLIP * 2**FRAC_BITS), int(CLIP * 2**FRAC_BITS), m + 1)
    slots = (values + today.offset).astype(np.uint64)
    t_pack_old, plains = timed(lambda: today.pack(slots))
    t_unpack_old, back = timed(lambda: today.unpack(plains))
    t_pack_new, packed = timed(lambda: ps.pack(values, bits, per, modulus))
    t_unpack_new, back_new = timed(lambda: ps.unpack(packed, bits, per, m + 1, modulus, "bench"))
    assert (back == slots).all() and (back_new == values).all()
    return {"old": {"slot_bits": today.slot_bits, "per": today.per_plaintext, "cts": today.plaintexts,
                    "pack": t_pack_old, "unpack": t_unpack_old},
            "new": {"slot_bits": bits, "per": per, "cts": len(packed), "pack": t_pack_new, "unpack": t_unpack_new}}


def encode_seconds(m: int) -> float:
    """One client's codec encoding of m float32 values (the same in both paths)."""
    fixed = FixedPoint.choose(2, clip=CLIP, frac_bits=FRAC_BITS, int_bound=INT_BOUND)
    flat = Flat(np.random.default_rng(1).normal(0, 0.05, m).astype(np.float32), np.zeros(0, np.int64))
    layout = Layout.of(torch.zeros(m))
    fixed.encode(flat, 1.0, np.random.default_rng(2), layout, 0)  # Numba warm-up
    return timed(lambda: fixed.encode(flat, 1.0, np.random.default_rng(2), layout, 0))[0]


def estimate(n: int, ops: dict, pack: dict, encode: float, table: float = 0.0) -> dict:
    """Seconds of the base-point round from per-ciphertext figures (single-threaded parties)."""
    cts = pack["cts"]
    client_offline = table + cts * ops["offline"]
    client_online = encode + pack["pack"] + cts * ops["online"]
    server = n * cts * ops["server"]
    keyholder = cts * ops["decrypt"] + pack["unpack"]
    return {"client_offline_s": client_offline, "client_online_s": client_online, "server_s": server,
            "keyholder_s": keyholder, "round_s": n * (client_offline + client_online) + server + keyholder,
            "client_us_per_value": (client_offline + client_online) / (cts * pack["per"]) * 1e6,
            "offline_us_per_value": client_offline / (cts * pack["per"]) * 1e6}


def run_round(n: int, m: int, key_bits: int, window: int) -> dict:
    """The base point end to end with the gmpy2 pieces; exact against the integer sum."""
    pk, sk = paillier.generate_paillier_keypair(n_length=key_bits)
    t_base, hs = timed(lambda: pm.djn_base(sk))
    pub = pm.PublicKey.of(pk.n, hs)
    fixed = FixedPoint.choose(n, clip=CLIP, frac_bits=FRAC_BITS, int_bound=INT_BOUND)
    bits = ps.slot_bits(ps.sum_bound(n, CLIP, FRAC_BITS, INT_BOUND))
    per = ps.slots_per_plaintext(key_bits, bits)
    layout, length = Layout.of(torch.zeros(m)), m + 1
    gen = np.random.default_rng(7)
    expected = np.zeros(length, np.int64)
    client_setup, client_upload, server_s, acc = [], [], 0.0, None
    for i in range(n):
        flat = Flat(gen.normal(0, 0.05, m).astype(np.float32), np.zeros(0, np.int64))
        weight = float(gen.uniform(0.5, 1.0))
        t0 = time.perf_counter()
        pm.check_djn_base(pub, f"client/{i}")
        zeros = pm.FixedBaseRandomness(pub, window=window).zeros(-(-length // per))
        t1 = time.perf_counter()
        ring, _ = fixed.encode(flat, weight, np.random.default_rng(100 + i), layout, i)
        signed = ring.view(fixed.signed)
        upload = pm.to_bytes(pm.encrypt(pub, ps.pack(signed, bits, per, pub.n), zeros), pub.cipher_bytes)
        t2 = time.perf_counter()
        client_setup.append(t1 - t0)
        client_upload.append(t2 - t1)
        expected += signed
        t0 = time.perf_counter()
        cts = pm.from_bytes(upload, len(zeros), pub, f"client/{i}")
        if acc is None:
            acc = cts
        else:
            pm.add_into(acc, cts, pub)
        server_s += time.perf_counter() - t0
    t_dec, sums = timed(lambda: ps.unpack(pm.Decryptor(sk).decrypt(acc), bits, per, length, pub.n, "keyholder"))
    exact = bool((sums == expected).all())
    total = sum(client_setup) + sum(client_upload) + server_s + t_dec
    return {"clients": n, "params": m, "ciphertexts_per_client": len(acc), "slot_bits": bits, "slots": per,
            "keyholder_djn_base_s": t_base, "client_offline_s_median": statistics.median(client_setup),
            "client_online_s_median": statistics.median(client_upload), "server_s": server_s,
            "keyholder_s": t_dec, "round_s": total, "exact": exact}


def median_dicts(rows: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--params", type=int, default=100_000)
    ap.add_argument("--key-bits", type=int, default=2048)
    ap.add_argument("--subset", type=int, default=30, help="ciphertexts each per-operation timing runs on")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--window", type=int, default=pm.WINDOW_BITS)
    ap.add_argument("--round", action="store_true", help="also run the base point end to end (new path)")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args()
    n, m, kb = args.clients, args.params, args.key_bits
    pk, sk = paillier.generate_paillier_keypair(n_length=kb)
    pub, dec = pm.PublicKey.of(pk.n, pm.djn_base(sk)), pm.Decryptor(sk)
    fixed = FixedPoint.choose(n, clip=CLIP, frac_bits=FRAC_BITS, int_bound=INT_BOUND)
    today = Packing.choose(n, fixed, args.subset * Packing.choose(n, fixed, 1, kb).per_plaintext, kb)
    slots = np.random.default_rng(3).integers(0, 2 * today.offset + 1, today.length).astype(np.uint64)
    plains = today.pack(slots)  # plaintexts as today's clients make them
    rows_old, rows_new, rows_pack = [], [], []
    for _ in range(args.repeats):
        rows_old.append(phe_ops(pk, sk, plains))
        rows_new.append(gmpy_ops(pub, dec, [mpz(p) for p in plains], args.window))
        rows_pack.append(packing_ops(n, m, kb, pk.n))
    old, new = median_dicts(rows_old), median_dicts(rows_new)
    pack_old = median_dicts([r["old"] for r in rows_pack])
    pack_new = median_dicts([r["new"] for r in rows_pack])
    enc = encode_seconds(m)
    print(f"Paillier per operation: {kb}-bit key, {args.subset} ciphertexts, median of {args.repeats} alternating runs")
    print(f"  {'seconds per ciphertext':<44}{'phe (today)':>14}{'gmpy2 (new)':>14}{'ratio':>9}")
    for label, key in (("offline: encryption of zero", "offline"), ("online: encrypt + serialize", "online"),
                       ("server: parse + check + multiply", "server"), ("key holder: decrypt", "decrypt")):
        print(f"  {label:<44}{old[key] * 1e6:>12.1f}us{new[key] * 1e6:>12.1f}us{old[key] / new[key]:>8.1f}x")
    print(f"  {'offline, plain r^N option (gmpy2)':<44}{'':>14}{new['offline_plain'] * 1e6:>12.1f}us")
    print(f"  fixed-base table (once per key, window {args.window}): {new['table']:.3f} s")
    print(f"  packing {m + 1:,} values: today {pack_old['slot_bits']}-bit slots x {pack_old['per']} "
          f"({pack_old['cts']} ciphertexts), pack {pack_old['pack'] * 1e3:.1f} ms, unpack "
          f"{pack_old['unpack'] * 1e3:.1f} ms; new {pack_new['slot_bits']}-bit x {pack_new['per']} "
          f"({pack_new['cts']}), pack {pack_new['pack'] * 1e3:.1f} ms, unpack {pack_new['unpack'] * 1e3:.1f} ms")
    est_old = estimate(n, old, pack_old, enc)
    est_new = estimate(n, new, pack_new, enc, table=new["table"])
    print(f"\nBase-point round estimate (n={n}, m={m:,}, codec encode {enc * 1e3:.1f} ms per client)")
    print(f"  {'':<44}{'phe (today)':>14}{'gmpy2 (new)':>14}{'ratio':>9}")
    for label, key in (("client offline s", "client_offline_s"), ("client online s", "client_online_s"),
                       ("server s", "server_s"), ("key holder s", "keyholder_s"), ("round s (all parties)", "round_s"),
                       ("client us per value (offline+online)", "client_us_per_value"),
                       ("client us per value (offline only)", "offline_us_per_value")):
        print(f"  {label:<44}{est_old[key]:>14.3f}{est_new[key]:>14.3f}{est_old[key] / est_new[key]:>8.1f}x")
    print(f"  targets: round <= 300 s and >= 6x faster: {est_new['round_s']:.1f} s, "
          f"{est_old['round_s'] / est_new['round_s']:.1f}x; client per value >= 20x cheaper than today's offline "
          f"{est_old['offline_us_per_value']:.1f} us: {est_new['client_us_per_value']:.2f} us, "
          f"{est_old['offline_us_per_value'] / est_new['client_us_per_value']:.1f}x")
    out = {"per_op_old": old, "per_op_new": new, "pack_old": pack_old, "pack_new": pack_new, "encode_s": enc,
           "estimate_old": est_old, "estimate_new": est_new}
    if args.round:
        r = run_round(n, m, kb, args.window)
        out["round"] = r
        print(f"\nBase point run end to end (new path): {r['clients']} clients x {r['params']:,} values, "
              f"{r['ciphertexts_per_client']} ciphertexts of {r['slots']} {r['slot_bits']}-bit slots each")
        print(f"  client offline (check hs, table, zeros) median {r['client_offline_s_median']:.3f} s; online "
              f"(encode, pack, encrypt, serialize) median {r['client_online_s_median']:.3f} s")
        print(f"  server {r['server_s']:.2f} s; key holder decrypt + unpack {r['keyholder_s']:.2f} s; "
              f"sum over all parties {r['round_s']:.1f} s; exact: {r['exact']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
