"""Paillier per operation: gmpy2 (securefl.he.paillier_math, what securefl.Paillier runs now) against the committed
phe path, both in one run.

Per ciphertext, both paths alternating in the same process (median of --repeats): offline (one encryption of
zero: phe's raw_encrypt(0), r^N, against the DJN fixed-base table and the plain r^N option on gmpy2), online
(one packed plaintext -> serialized ciphertext), the key holder's re-adding (parse, check, multiply one
ciphertext into the sum) and its decryption; the fixed-base table's cost per --window. The committed path
is phe as securefl.he.paillier at 7a98b52 called it (an EncryptedNumber per ciphertext, one gcd per
ciphertext), timed on --subset ciphertexts. The whole protocol at the base point, beside the committed path
and phe's per-value peer: benchmarks/bench_he.py.
Usage: python benchmarks/bench_paillier_math.py [--clients 100] [--key-bits 2048] [--subset 30] [--repeats 3]
[--window 8] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable

import numpy as np
from gmpy2 import mpz
from phe import paillier

from securefl.he import paillier_math as pm
from securefl.he import paillier_slots as ps


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def phe_parse(raw: bytes, k: int, pk: paillier.PaillierPublicKey) -> list[int]:
    """The committed path's parsing: fixed-width integers, each checked to be a unit modulo N^2 (one gcd each)."""
    width = len(raw) // k
    out = [int.from_bytes(raw[j * width : (j + 1) * width], "big") for j in range(k)]
    if not all(0 < c < pk.nsquare and math.gcd(c, pk.n) == 1 for c in out):
        raise ValueError("not a unit")
    return out


def phe_ops(pk: paillier.PaillierPublicKey, sk: paillier.PaillierPrivateKey, plains: list[int]) -> dict:
    """Seconds per ciphertext of the committed phe path."""
    k, width = len(plains), 2 * pk.n.bit_length() // 8
    t_off, zeros = timed(lambda: [paillier.EncryptedNumber(pk, pk.raw_encrypt(0)) for _ in range(k)])
    t_on, raw = timed(lambda: b"".join((paillier.EncryptedNumber(pk, pk.raw_encrypt(m, r_value=1)) + z).ciphertext(
        be_secure=False).to_bytes(width, "big") for m, z in zip(plains, zeros, strict=True)))
    acc = [paillier.EncryptedNumber(pk, c) for c in phe_parse(raw, k, pk)]

    def server() -> None:
        enc = [paillier.EncryptedNumber(pk, c) for c in phe_parse(raw, k, pk)]
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


def median_dicts(rows: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=100, help="n, which sets the slot width")
    ap.add_argument("--key-bits", type=int, default=2048)
    ap.add_argument("--subset", type=int, default=30, help="ciphertexts each per-operation timing runs on")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--window", type=int, default=pm.WINDOW_BITS)
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args()
    n, kb = args.clients, args.key_bits
    pk, sk = paillier.generate_paillier_keypair(n_length=kb)
    pub, dec = pm.PublicKey.of(pk.n, pm.djn_base(sk)), pm.Decryptor(sk)
    bits = ps.slot_bits(ps.sum_bound(n, 8.0, 16, 0))
    per = ps.slots_per_plaintext(kb, bits)
    values = np.random.default_rng(3).integers(-8 * 2**16, 8 * 2**16, args.subset * per)
    plains = [int(p) for p in ps.pack(values, bits, per, pk.n)]  # plaintexts as the clients make them
    rows_old, rows_new = [], []
    for _ in range(args.repeats):
        rows_old.append(phe_ops(pk, sk, plains))
        rows_new.append(gmpy_ops(pub, dec, [mpz(p) for p in plains], args.window))
    old, new = median_dicts(rows_old), median_dicts(rows_new)
    print(f"Paillier per operation: {kb}-bit key, {args.subset} ciphertexts of {per} {bits}-bit slots, median of "
          f"{args.repeats} alternating runs")
    print(f"  {'seconds per ciphertext':<44}{'phe (committed)':>16}{'gmpy2 (new)':>14}{'ratio':>9}")
    for label, key in (("offline: encryption of zero", "offline"), ("online: encrypt + serialize", "online"),
                       ("key holder: parse + check + multiply", "server"), ("key holder: decrypt", "decrypt")):
        print(f"  {label:<44}{old[key] * 1e6:>14.1f}us{new[key] * 1e6:>12.1f}us{old[key] / new[key]:>8.1f}x")
    print(f"  {'offline, plain r^N option (gmpy2)':<44}{'':>16}{new['offline_plain'] * 1e6:>12.1f}us")
    print(f"  fixed-base table (once per key, window {args.window}): {new['table']:.3f} s; per value offline: phe "
          f"{old['offline'] / per * 1e6:.1f} us, DJN {new['offline'] / per * 1e6:.2f} us")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"per_op_old": old, "per_op_new": new, "slot_bits": bits, "slots": per}, f, indent=2)


if __name__ == "__main__":
    main()
