"""CKKS without the special prime and its packed-coefficient wire format (securefl.he.ckks_io) against SEAL itself."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tenseal import sealapi

from securefl.errors import ConfigError, ProtocolError
from securefl.he import ckks_io as ci


@pytest.fixture(scope="module")
def setup():
    """The n = 10 scheme at the aggregators' defaults (clip 8, frac_bits 16), a key pair, an encrypter."""
    scheme = ci.Scheme.choose(10, 8.0, 16)
    codec = ci.CoefficientCodec(scheme)
    secret, public_blob = ci.keygen(codec, os.urandom(ci.SEED_BYTES))
    public = ci.load_public_key(codec, public_blob, "client/0")
    return codec, secret, public_blob, ci.Encrypter(codec, public), ci.Decrypter(codec, secret)


def test_scheme_choice():
    s = ci.Scheme.choose(10, 8.0, 16)
    assert (s.degree, s.prime_bits, s.scale_bits) == (4096, (43,), 33)  # no special prime; 4 more scale bits
    big = ci.Scheme.choose(1000, 2.0**16, 30)
    assert sum(big.prime_bits) <= ci.max_coeff_bits(big.degree) and max(big.prime_bits) <= ci.MAX_PRIME_BITS
    assert big.prime_bits == (38, 38)  # 26 + 47 + 3 = 76 bits of data: two primes of <= 60 bits
    with pytest.raises(ConfigError, match="no 128-bit"):
        ci.Scheme.choose(2**20, 2.0**40, 52, degree=4096)


def random_coeffs(codec: ci.CoefficientCodec, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 2**63, (k, *codec.shape), dtype=np.uint64) % codec.primes[None, None, :, None])


@settings(max_examples=20, deadline=None)
@given(k=st.integers(0, 4), seed=st.integers(0, 2**32 - 1))
def test_packed_bytes_round_trip(setup, k, seed):
    codec = setup[0]
    x = random_coeffs(codec, k, seed)
    if k:
        x[0, 0, 0, :2] = [0, codec.primes[0] - 1]  # the extremes
    raw = codec.pack(x).tobytes()
    assert len(raw) == k * codec.ciphertext_bytes == k * 2 * 43 * 4096 // 8
    assert (codec.from_bytes(raw, k, "server") == x).all()


def test_two_primes_round_trip():
    codec = ci.CoefficientCodec(ci.Scheme(8192, (50, 50), 40))
    x = random_coeffs(codec, 3, 1)
    assert (codec.from_bytes(codec.pack(x), 3, "server") == x).all()


def test_from_bytes_rejects(setup):
    codec = setup[0]
    x = random_coeffs(codec, 2, 0)
    raw = codec.pack(x).tobytes()
    with pytest.raises(ProtocolError, match="server"):
        codec.from_bytes(raw[:-1], 2, "server")
    with pytest.raises(ProtocolError, match="server"):
        codec.from_bytes(raw, 3, "server")
    x[1, 1, 0, 7] = codec.primes[0]  # fits the bits, not the prime
    with pytest.raises(ProtocolError, match="not reduced"):
        codec.from_bytes(codec.pack(x), 2, "server")


def test_export_and_back_is_the_same_ciphertext(setup):
    codec, secret, _, enc, dec = setup
    values = np.random.default_rng(0).uniform(-8, 8, codec.scheme.degree)
    pt, ct = sealapi.Plaintext(), sealapi.Ciphertext()
    encoder = sealapi.CKKSEncoder(codec.context)
    encoder.encode(values.view(np.complex128).tolist(), codec.scheme.scale, pt)
    sealapi.Encryptor(codec.context, ci.load_public_key(codec, setup[2], "c")).encrypt(pt, ct)
    coeffs = codec.export(ct)
    back = codec.to_ciphertext(coeffs, "keyholder")
    assert (codec.export(back) == coeffs).all()
    out, ref = sealapi.Plaintext(), sealapi.Plaintext()
    decryptor = sealapi.Decryptor(codec.context, secret)
    decryptor.decrypt(back, out)
    decryptor.decrypt(ct, ref)
    assert encoder.decode_complex(out) == encoder.decode_complex(ref)


def test_seal_refuses_what_from_bytes_would_refuse(setup):
    """to_ciphertext goes through SEAL's validating load: an unreduced coefficient raises ProtocolError."""
    codec = setup[0]
    x = random_coeffs(codec, 1, 3)[0]
    x[0, 0, 5] = codec.primes[0]
    with pytest.raises(ProtocolError, match="keyholder"):
        codec.to_ciphertext(x, "keyholder")


def test_rejected_upload_leaves_the_sum_as_it_was(setup):
    codec = setup[0]
    acc = ci.Accumulator(codec, 2)
    good = random_coeffs(codec, 2, 8)
    acc.add(codec.pack(good), "server")
    bad = random_coeffs(codec, 2, 9)
    bad[1, 1, 0, -1] = codec.primes[0] + 5
    with pytest.raises(ProtocolError, match="client/4"):
        acc.add(codec.pack(bad), "client/4")
    assert (acc.result() == good).all()


def test_accumulator_reduces_before_overflow():
    """With 60-bit primes the words hold only 15 unreduced terms: 40 adds must still give the exact sum mod q."""
    codec = ci.CoefficientCodec(ci.Scheme(4096, (60,), 40))
    acc = ci.Accumulator(codec, 1)
    terms = [random_coeffs(codec, 1, s) for s in range(40)]
    for t in terms:
        acc.add(codec.pack(t), "server")
    q = int(codec.primes[0])
    exact = np.array([sum(int(t[0, p, 0, i]) for t in terms) % q for p in range(2) for i in range(50)], np.uint64)
    assert (acc.result()[0, :, 0, :50].reshape(-1) == exact).all()


@pytest.mark.parametrize("precompute", [False, True])
def test_round_sum_within_the_noise_bound(setup, precompute):
    """10 clients' values at the clip: the decrypted sum is within 10 * 2^-frac_bits (8 sigma per client)."""
    codec, _, public_blob, _, dec = setup
    n, chunks = 10, 3
    rng = np.random.default_rng(5)
    vals = rng.uniform(-8, 8, (n, chunks * codec.scheme.degree))
    vals[:, :4] = [8, -8, 8, -8]
    acc = ci.Accumulator(codec, chunks)
    for v in vals:
        enc = ci.Encrypter(codec, ci.load_public_key(codec, public_blob, "client"))
        if precompute:
            enc.precompute(chunks)
        acc.add(enc.encrypt(v), "server")
    err = dec.decrypt(acc.result(), "keyholder") - vals.sum(axis=0)
    assert np.abs(err).max() < n * 2.0**-16
    assert np.abs(err).std() > 0  # noise is there: not a plaintext path


def test_precomputed_zeros_are_used_once(setup):
    codec, _, _, enc, dec = setup
    enc.precompute(2)
    v = np.ones(2 * codec.scheme.degree)
    a, b = enc.encrypt(v), enc.encrypt(v)  # the second encrypts afresh: no zero is reused
    assert a.shape == (2, codec.ciphertext_words) and not np.array_equal(a, b)
    for raw in (a, b):
        assert np.abs(dec.decrypt(codec.from_bytes(raw, 2, "s"), "kh") - v).max() < 2.0**-16


def test_public_key_checks(setup):
    codec, _, public_blob, _, _ = setup
    with pytest.raises(ProtocolError):
        ci.load_public_key(codec, b"\x00" * 40, "client/1")
    with pytest.raises(ProtocolError, match="client/1"):
        ci.load_public_key(codec, public_blob[:-1], "client/1")
    other = ci.CoefficientCodec(ci.Scheme(8192, (43,), 33))
    with pytest.raises(ProtocolError, match="client/1"):
        ci.load_public_key(other, public_blob, "client/1")


def test_keys_come_from_the_seed(setup):
    """The key holder's keys are a function of its 64-byte seed (its saved state): the same seed, the same keys; the
    secret key decrypts what the public key encrypts."""
    codec = setup[0]
    seed = os.urandom(ci.SEED_BYTES)
    (s1, p1), (s2, p2) = ci.keygen(codec, seed), ci.keygen(codec, seed)
    assert p1 == p2 and codec.bridge.save(s1) == codec.bridge.save(s2)
    assert ci.keygen(codec, os.urandom(ci.SEED_BYTES))[1] != p1
    v = np.linspace(-8, 8, codec.scheme.degree)
    raw = ci.Encrypter(codec, ci.load_public_key(codec, p1, "c")).encrypt(v)
    assert np.abs(ci.Decrypter(codec, s2).decrypt(codec.from_bytes(raw, 1, "s"), "kh") - v).max() < 2.0**-16
    with pytest.raises(ConfigError, match="64 bytes"):
        ci.keygen(codec, bytes(32))
