"""Paillier on gmpy2 (paillier_math) and signed slot packing (paillier_slots) against phe and exact integers."""

from __future__ import annotations

import secrets

import gmpy2
import numpy as np
import pytest
from gmpy2 import mpz
from hypothesis import given, settings
from hypothesis import strategies as st
from phe import paillier

from securefl.errors import ConfigError, ProtocolError
from securefl.he import paillier_math as pm
from securefl.he import paillier_slots as ps


@pytest.fixture(scope="module")
def keys():
    """A 2048-bit phe key pair, its gmpy2 public key with the DJN base, a decryptor and a fixed-base table."""
    pk, sk = paillier.generate_paillier_keypair(n_length=2048)
    pub = pm.PublicKey.of(pk.n, pm.djn_base(sk))
    return pk, sk, pub, pm.Decryptor(sk), pm.FixedBaseRandomness(pub)


def edge_plaintexts(n: int) -> list[int]:
    """0, 1, small, around phe's max_int (its "negative" encryption path) and N - 1, plus random values."""
    return [0, 1, 2, 12345, n // 3 - 1, n // 3, 2 * n // 3 + 1, n // 2, n - 2, n - 1] + [
        secrets.randbelow(n) for _ in range(6)
    ]


def test_djn_base_is_an_nth_power_of_minus_a_square(keys):
    pk, sk, pub, _, _ = keys
    pm.check_djn_base(pub, "client/0")
    # hs = h^N with h = -x^2: an N-th residue (decrypts to 0) whose residue mod N has Jacobi symbol (-1|N) = 1
    assert sk.raw_decrypt(int(pub.hs)) == 0
    assert gmpy2.jacobi(pub.hs % pub.n, pub.n) == gmpy2.jacobi(-1 % pub.n, pub.n)
    assert pm.djn_base(sk) != pm.djn_base(sk)  # fresh x each time


@pytest.mark.parametrize("bad", [0, 1, -1, "n", "n2", "n2-1"])
def test_check_djn_base_rejects_malformed(keys, bad):
    _, _, pub, _, _ = keys
    value = {"n": pub.n, "n2": pub.nsquare, "n2-1": pub.nsquare - 1}.get(bad, bad)
    with pytest.raises(ProtocolError, match="client/3"):
        pm.check_djn_base(pm.PublicKey.of(pub.n, value), "client/3")
    with pytest.raises(ProtocolError):
        pm.check_djn_base(pm.PublicKey.of(pub.n), "client/3")


def test_fixed_base_power_equals_powmod(keys):
    _, _, pub, _, fb = keys
    bits = fb.exponent_bits
    assert bits == 224  # 2 lambda for a 2048-bit key (112-bit strength)
    for e in [0, 1, 2, 255, 256, (1 << bits) - 1, 1 << (bits - 1)] + [secrets.randbits(bits) for _ in range(5)]:
        assert fb.power(e) == gmpy2.powmod(pub.hs, e, pub.nsquare)
    with pytest.raises(ConfigError):
        fb.power(1 << bits)


@pytest.mark.parametrize("window,bits", [(1, 9), (5, 23), (7, 64), (11, 30)])
def test_fixed_base_other_windows(keys, window, bits):
    """Windows that do not divide the exponent length: the last window is partial."""
    _, _, pub, _, _ = keys
    fb = pm.FixedBaseRandomness(pub, exponent_bits=bits, window=window)
    for e in (0, 1, (1 << bits) - 1, secrets.randbits(bits)):
        assert fb.power(e) == gmpy2.powmod(pub.hs, e, pub.nsquare)


def test_randomness_options_refused(keys):
    _, _, pub, _, _ = keys
    with pytest.raises(ConfigError, match="hs"):
        pm.FixedBaseRandomness(pm.PublicKey.of(pub.n))
    with pytest.raises(ConfigError, match="window"):
        pm.FixedBaseRandomness(pub, window=0)
    with pytest.raises(ConfigError, match="exponent_bits"):
        pm.FixedBaseRandomness(pm.PublicKey.of(mpz(2) ** 1000 + 1, 5))  # no security level on record


@pytest.mark.parametrize("kind", ["djn", "plain"])
def test_encrypt_then_phe_decrypts(keys, kind):
    pk, sk, pub, _, fb = keys
    ms = edge_plaintexts(pk.n)
    zeros = fb.zeros(len(ms)) if kind == "djn" else pm.PlainRandomness(pub).zeros(len(ms))
    assert len(set(zeros)) == len(ms)  # fresh randomness per ciphertext
    assert all(sk.raw_decrypt(int(z)) == 0 for z in zeros)
    cts = pm.encrypt(pub, ms, zeros)
    assert [sk.raw_decrypt(int(c)) for c in cts] == ms
    assert pm.encrypt(pub, ms, fb.zeros(len(ms))) != cts  # probabilistic


def test_encrypt_refuses_out_of_range(keys):
    pk, _, pub, _, fb = keys
    for m in (-1, pk.n):
        with pytest.raises(ConfigError, match="plaintext"):
            pm.encrypt(pub, [m], fb.zeros(1))
    with pytest.raises(ConfigError):
        pm.encrypt(pub, [1, 2], fb.zeros(1))


def test_phe_encrypt_then_crt_decrypts(keys):
    pk, sk, _, dec, _ = keys
    ms = edge_plaintexts(pk.n)
    cts = [pk.raw_encrypt(m) for m in ms]
    assert dec.decrypt(cts) == ms
    assert dec.decrypt(cts) == [sk.raw_decrypt(c) for c in cts]


def test_homomorphic_sum_matches_phe(keys):
    """Products of ours and phe's ciphertexts: the same integers as phe's additions, the sum mod N decrypted."""
    pk, sk, pub, dec, fb = keys
    rows = [[secrets.randbelow(pk.n) for _ in range(4)] for _ in range(5)]
    ours = [pm.encrypt(pub, r, fb.zeros(4)) if i % 2 else [mpz(pk.raw_encrypt(m)) for m in r]
            for i, r in enumerate(rows)]
    acc = list(ours[0])
    for cts in ours[1:]:
        pm.add_into(acc, cts, pub)
    phe_sum = [sum((paillier.EncryptedNumber(pk, int(cts[j])) for cts in ours[1:]),
                   paillier.EncryptedNumber(pk, int(ours[0][j]))).ciphertext(be_secure=False) for j in range(4)]
    assert [int(a) for a in acc] == phe_sum
    expected = [sum(col) % pk.n for col in zip(*rows, strict=True)]
    assert dec.decrypt(acc) == expected == [sk.raw_decrypt(c) for c in phe_sum]
    with pytest.raises(ConfigError):
        pm.add_into(acc, ours[1][:3], pub)


def test_bytes_round_trip_and_checks(keys):
    pk, _, pub, _, fb = keys
    cts = pm.encrypt(pub, [5, 6, 7], fb.zeros(3))
    raw = pm.to_bytes(cts, pub.cipher_bytes)
    assert len(raw) == 3 * 512
    assert pm.from_bytes(raw, 3, pub, "server") == cts
    with pytest.raises(ProtocolError, match="bytes"):
        pm.from_bytes(raw[:-1], 3, pub, "server")
    w = pub.cipher_bytes
    for bad in (0, pk.n, 3 * pk.n, pub.nsquare, pub.nsquare + 1):
        forged = raw[:w] + int(bad).to_bytes(w, "big") + raw[2 * w :]
        with pytest.raises(ProtocolError, match="server"):
            pm.from_bytes(forged, 3, pub, "server")


# -- slot packing --------------------------------------------------------------------------------------------


MODULUS = (1 << 2047) + 1155  # any odd N >= 2^(key_bits - 1) serves packing, which never decrypts


def naive_pack(values: np.ndarray, bits: int, per: int, n: int) -> list[int]:
    rows = -(-len(values) // per)
    return [sum(int(v) << (bits * j) for j, v in enumerate(values[r * per : (r + 1) * per])) % n for r in range(rows)]


@settings(max_examples=60, deadline=None)
@given(bits=st.integers(2, 62), length=st.integers(1, 400), data=st.data())
def test_pack_equals_naive_and_round_trips(bits, length, data):
    per = ps.slots_per_plaintext(2048, bits)
    half = 1 << (bits - 1)
    seed = data.draw(st.integers(0, 2**32 - 1))
    v = np.random.default_rng(seed).integers(-half + 1, half, length)
    v[: min(length, 2)] = [half - 1, -half + 1][: min(length, 2)]  # the extremes
    packed = ps.pack(v, bits, per, MODULUS)
    assert [int(p) for p in packed] == naive_pack(v, bits, per, MODULUS)
    assert (ps.unpack(packed, bits, per, length, MODULUS, "kh") == v).all()


@settings(max_examples=40, deadline=None)
@given(bits=st.integers(3, 62), clients=st.integers(1, 9), length=st.integers(1, 300), data=st.data())
def test_sums_of_packs_unpack_to_slot_sums(bits, clients, length, data):
    """Whenever every |slot sum| < 2^(bits-1), the plaintext sum mod N unpacks to the exact slot sums."""
    per = ps.slots_per_plaintext(2048, bits)
    bound = ((1 << (bits - 1)) - 1) // clients
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    vs = rng.integers(-bound, bound + 1, (clients, length))
    sums = [sum(col) % MODULUS for col in zip(*(ps.pack(v, bits, per, MODULUS) for v in vs), strict=True)]
    assert (ps.unpack(sums, bits, per, length, MODULUS, "kh") == vs.sum(axis=0)).all()


def test_pack_edges():
    assert ps.slot_bits(0) == 1 and ps.slot_bits(1) == 2 and ps.slot_bits(2**26) == 28
    assert ps.slots_per_plaintext(2048, 27) == 75
    with pytest.raises(ConfigError):
        ps.slot_bits(1 << 62)
    with pytest.raises(ConfigError):
        ps.slot_bits(-1)
    with pytest.raises(ConfigError):
        ps.slots_per_plaintext(16, 17)
    with pytest.raises(ConfigError, match="slot"):
        ps.pack(np.array([0, 1 << 9]), 10, 4, MODULUS)
    with pytest.raises(ConfigError, match="slot"):
        ps.pack(np.array([-(1 << 9)]), 10, 4, MODULUS)
    assert ps.pack(np.zeros(0, np.int64), 10, 4, MODULUS) == []


def test_unpack_rejects_what_is_no_sum_of_packs():
    per = ps.slots_per_plaintext(2048, 20)
    packed = ps.pack(np.arange(per + 1), 20, per, MODULUS)
    with pytest.raises(ProtocolError, match="kh"):
        ps.unpack(packed[:1], 20, per, per + 1, MODULUS, "kh")
    # the top slot's sum reached 2^(bits-1): it carries beyond the packed slots
    overflow = [(packed[0] + (1 << (20 * (per - 1) + 19))) % MODULUS, packed[1]]
    with pytest.raises(ProtocolError, match="beyond"):
        ps.unpack(overflow, 20, per, per + 1, MODULUS, "kh")


def test_sum_bound_is_the_bound_on_the_sum():
    # n = 100 at the defaults: |sum| <= 100 * 8 * 2^16 = 52,428,800 -> 27-bit slots, 75 per 2048-bit plaintext
    assert ps.sum_bound(100, 8.0, 16, 2**16) == 100 * 8 * 2**16
    assert ps.slot_bits(ps.sum_bound(100, 8.0, 16, 2**16)) == 27
    assert ps.sum_bound(3, 0.3, 4, 0) == max(3 * 5, 3 * 16)  # ceil(0.3 * 16) = 5 per client; the weight slot wins
    assert ps.sum_bound(2, 1.0, 16, 2**20, noise_bound=10.5) == 2 * 2**20
    assert ps.sum_bound(4, 1.0, 16, 0, noise_bound=1e6) == 4 * 2**16 + 1_000_000


def test_packed_round_trip_through_encryption(keys):
    """Clients' signed ring values, packed, encrypted with DJN randomness, multiplied and CRT-decrypted."""
    pk, _, pub, dec, fb = keys
    n_clients, length = 5, 500
    bits = ps.slot_bits(ps.sum_bound(n_clients, 8.0, 16, 2**16))
    per = ps.slots_per_plaintext(2048, bits)
    rng = np.random.default_rng(0)
    vs = rng.integers(-8 * 2**16, 8 * 2**16 + 1, (n_clients, length))
    vs[:, 0] = 8 * 2**16  # every client at the bound: the sum is at its largest
    vs[:, 1] = -8 * 2**16
    acc = None
    for v in vs:
        packed = ps.pack(v, bits, per, pk.n)
        cts = pm.from_bytes(pm.to_bytes(pm.encrypt(pub, packed, fb.zeros(len(packed))), pub.cipher_bytes),
                            len(packed), pub, "server")
        acc = cts if acc is None else (pm.add_into(acc, cts, pub) or acc)
    sums = ps.unpack(dec.decrypt(acc), bits, per, length, pk.n, "keyholder")
    assert (sums == vs.sum(axis=0)).all()
