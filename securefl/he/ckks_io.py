"""CKKS on SEAL's API without the special prime, with ciphertexts on the wire as bit-packed RNS coefficients
(the parties: securefl.he.ckks; the parameters' choice and error bound: securefl.he.ckks_params).

Where a round's time went (notes/ckks-profile.md) and what this module does about it:

* Encryption is most of a client's time. SEAL encrypts under the public key at the key level and then
  divides by the special prime; without a special prime (key level = data level, no key switching: the
  protocol never rotates or relinearizes) a public-key encryption is about 1.5x cheaper. TenSEAL refuses
  such a context, so the key holder makes its keys with SEAL's KeyGenerator on a SEALContext built from
  the public parameters (seal_context). The fresh-encryption noise is then not divided by the special
  prime: measured sigma about 2.6 N per real part of a slot (N/6 with it), so the scale takes 4 more
  bits (Scheme.choose: 8 sigma with sigma <= 4 N stays below 2^-frac_bits).
* The wire carries each ciphertext's 2 x L x N coefficients, each packed in the bit length of its prime,
  planar order (bitpack): 43 bits at n = 10, 10.75 bytes per value against 12.0 for SEAL's zstd of 39-bit
  coefficients. Whoever adds the uploads needs no SEAL: one numba pass per upload unpacks, checks every
  coefficient against its prime (what SEAL's load checks of a coefficient) and adds into uint64 sums
  (Accumulator), reduced modulo the primes before they could overflow: what SEAL's add does, at about
  the cost of reading the bytes.
* A client gets its coefficients through SEAL's save (TenSEAL's API writes files, always zstd, no mode
  to choose) and inflates them with zstandard: that costs it less than SEAL's save and load of a
  compressed ciphertext. The key holder turns each summed ciphertext back into an uncompressed SEAL blob
  that SEAL's load validates (parameters, NTT form, size, every coefficient reduced) before decrypting.
* Encryptions of zero depend on the public key only: Encrypter.precompute makes them offline (before
  the update exists, e.g. during local training); online is then encode + add + export. They take the
  memory of the uncompressed upload (16 bytes per value per prime) until used.
* The key holder's keys come from a BLAKE2xb PRNG keyed by 64 bytes from os.urandom (keygen): its saved
  state is that seed, and its secret key never leaves memory (the file bridge carries ciphertexts and
  public keys only).
"""

from __future__ import annotations

import functools
import math
import os
import struct
import tempfile
from dataclasses import dataclass

import numpy as np
import zstandard
from tenseal import sealapi

from securefl.errors import ConfigError, ProtocolError
from securefl.he import bitpack

SEAL_MAGIC = b"\x5e\xa1"
HEADER = struct.Struct("<2sBBBBHQ")  # magic, header size (16), version major, minor, compr_mode, reserved, size
# SEAL 4 Ciphertext body: parms_id, is_ntt_form, size, poly_modulus_degree, coeff_modulus_size, scale,
# correction_factor; then the coefficient DynArray as its own SEAL blob: header, u64 count, count x u64
META = struct.Struct("<4QBQQQdQ")
COUNT = struct.Struct("<Q")
COMPR_NONE, COMPR_ZSTD = 0, 2
DEGREES = (4096, 8192, 16384, 32768)
MAX_PRIME_BITS = 60
NOISE_SIGMAS, NOISE_PER_DEGREE = 8, 4  # 8 standard deviations of fresh noise, sigma <= 4 N (measured 2.6 N)
BLOCK = 256  # ciphertexts exported and packed together (bounds the client's uncompressed buffer)
SEED_BYTES = 64  # the key holder's key seed: SEAL's Blake2xbPRNGFactory takes 8 x 64 bits
SHM = "/dev/shm"  # memory-backed, where the OS has it: the file bridge never touches a disk
# what TenSEAL's and SEAL's C++ exceptions become through pybind11
SEAL_ERRORS = (ValueError, RuntimeError, TypeError, IndexError, OverflowError, MemoryError)


def max_coeff_bits(degree: int) -> int:
    """Largest coefficient modulus (bits) at 128-bit security for ring degree `degree` (HE standard table)."""
    return sealapi.CoeffModulus.MaxBitCount(degree, sealapi.SEC_LEVEL_TYPE.TC128)


@dataclass(frozen=True)
class Scheme:
    """Public CKKS parameters without a special prime: ring degree, data primes (bits), scale 2^scale_bits."""

    degree: int
    prime_bits: tuple[int, ...]
    scale_bits: int

    @classmethod
    def choose(cls, n_clients: int, peak: float, frac_bits: int, degree: int | None = None) -> Scheme:
        """The smallest 128-bit parameters that hold the sum of n_clients values of |v| <= peak to 2^-frac_bits
        per client: scale 2^(frac_bits + log2 N + 5) puts 8 sigma of fresh noise (sigma <= 4 N) below
        2^-frac_bits; the primes hold log2(n * peak) bits of sum, the scale, a sign bit, one for a coefficient
        twice a slot's magnitude and one spare."""
        value_bits = max(0, math.ceil(math.log2(n_clients * max(peak, 1.0))))
        tried = []
        for deg in (degree,) if degree else DEGREES:
            scale_bits = frac_bits + math.ceil(math.log2(NOISE_SIGMAS * NOISE_PER_DEGREE * deg))
            data = value_bits + scale_bits + 3
            count = math.ceil(data / MAX_PRIME_BITS)
            bits = (math.ceil(data / count),) * count
            if sum(bits) <= max_coeff_bits(deg):
                return cls(deg, bits, scale_bits)
            tried.append(f"N={deg} needs {sum(bits)} > {max_coeff_bits(deg)} bits")
        raise ConfigError(f"no 128-bit CKKS parameters hold the sum of {n_clients} clients ({'; '.join(tried)})")

    @property
    def scale(self) -> float:
        return 2.0**self.scale_bits


@functools.lru_cache(maxsize=16)
def seal_context(degree: int, prime_bits: tuple[int, ...]) -> sealapi.SEALContext:
    """SEAL's context for these parameters (primes are deterministic, so every party builds the same one)."""
    parms = sealapi.EncryptionParameters(sealapi.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(degree)
    parms.set_coeff_modulus(sealapi.CoeffModulus.Create(degree, list(prime_bits)))
    ctx = sealapi.SEALContext(parms, True, sealapi.SEC_LEVEL_TYPE.TC128)
    if not ctx.parameters_set():
        raise ConfigError(f"SEAL refuses N={degree} with primes {prime_bits}")
    return ctx


class FileBridge:
    """TenSEAL's SEAL API saves and loads through files only: one file in a private directory (in memory where
    the OS has /dev/shm), removed with this object. Ciphertexts and public keys only, never a secret key."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="securefl-ckks-", dir=SHM if os.path.isdir(SHM) else None)
        self._path = os.path.join(self._dir.name, "blob")

    def save(self, obj: object) -> bytes:
        obj.save(self._path)
        with open(self._path, "rb") as f:
            return f.read()

    def load(self, obj: object, context: sealapi.SEALContext, blob: bytes, who: str) -> None:
        """SEAL's load (which validates every coefficient against its prime); ProtocolError on anything it refuses."""
        with open(self._path, "wb") as f:
            f.write(blob)
        try:
            obj.load(context, self._path)
        except SEAL_ERRORS as e:
            raise ProtocolError(f"{who}: SEAL refuses the object ({e})") from None


def read_header(blob: bytes | memoryview, who: str) -> tuple[bytes, int]:
    """(version bytes, compression mode) of a SEAL blob whose declared size is its length; else ProtocolError."""
    if len(blob) < HEADER.size:
        raise ProtocolError(f"{who}: not a SEAL object (too short)")
    magic, size, major, minor, mode, reserved, total = HEADER.unpack_from(blob)
    if magic != SEAL_MAGIC or size != HEADER.size or reserved or total != len(blob):
        raise ProtocolError(f"{who}: not a SEAL object of {len(blob)} bytes (bad header)")
    return bytes((major, minor)), mode


class CoefficientCodec:
    """Ciphertexts of one Scheme as (2, L, N) uint64 coefficient arrays, and those arrays as packed bytes."""

    def __init__(self, scheme: Scheme):
        self.scheme = scheme
        self.context = seal_context(scheme.degree, scheme.prime_bits)
        data = self.context.first_context_data()
        self.primes = np.array([m.value() for m in data.parms().coeff_modulus()], np.uint64)
        self.parms_id = tuple(data.parms_id())
        self.shape = (2, len(self.primes), scheme.degree)
        self._bits = [int(q).bit_length() for q in self.primes]
        self._row_bytes = [8 * bitpack.words(b, scheme.degree) for b in self._bits]
        self.bridge = FileBridge()
        self._inflate = zstandard.ZstdDecompressor()
        self._version = read_header(self.bridge.save(sealapi.Ciphertext(self.context)), "codec")[0]

    @property
    def ciphertext_bytes(self) -> int:
        """Bytes of one packed ciphertext."""
        return 2 * sum(self._row_bytes)

    @property
    def _body_bytes(self) -> int:
        return META.size + HEADER.size + COUNT.size + 8 * math.prod(self.shape)

    def export(self, ct: sealapi.Ciphertext) -> np.ndarray:
        """A ciphertext of this scheme (two polynomials in NTT form at the data level) as (2, L, N) coefficients."""
        blob = self.bridge.save(ct)
        _, mode = read_header(blob, "export")
        if mode == COMPR_ZSTD:
            body = self._inflate.decompress(blob[HEADER.size :], max_output_size=self._body_bytes)
        elif mode == COMPR_NONE:
            body = blob[HEADER.size :]
        else:
            raise ConfigError(f"SEAL saved with compression mode {mode}; only none and zstd are read")
        *pid, ntt, size, degree, count, scale, _ = META.unpack_from(body)
        if (tuple(pid), ntt, size, degree, count, scale) != (self.parms_id, 1, 2, *self.shape[2:], len(self.primes),
                                                              self.scheme.scale) or len(body) != self._body_bytes:
            raise ConfigError("a ciphertext not of this scheme's data level, size, NTT form or scale")
        return np.frombuffer(body, "<u8", math.prod(self.shape), META.size + HEADER.size + COUNT.size).reshape(
            self.shape)

    @property
    def ciphertext_words(self) -> int:
        return self.ciphertext_bytes // 8

    def pack(self, coeffs: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(k, 2, L, N) coefficients -> (k, ciphertext_words) uint64, for each ciphertext: polynomial, prime,
        coefficient order (into `out` when given)."""
        k = coeffs.shape[0]
        out = np.empty((k, self.ciphertext_words), np.uint64) if out is None else out
        rows, start = out.reshape(k, 2, self.ciphertext_words // 2), 0
        for j, (b, rb) in enumerate(zip(self._bits, self._row_bytes, strict=True)):
            if k:  # (k, 2) rows merge into 2k rows of a view: packed in place
                bitpack.pack_planar(coeffs[:, :, j, :].reshape(2 * k, -1), b,
                                    rows[:, :, start : start + rb // 8].reshape(2 * k, -1))
            start += rb // 8
        return out

    def add_into(self, raw: bytes | memoryview, acc: np.ndarray, who: str) -> None:
        """Add the packed ciphertexts in raw to acc (k, 2, L, N) in one pass (numba); ProtocolError, with acc left as
        it was, on a wrong length or a coefficient >= its prime (what SEAL's load checks; the parameters
        themselves are the round's, not the sender's)."""
        count, size = acc.shape[0], memoryview(raw).nbytes
        if size != count * self.ciphertext_bytes:
            raise ProtocolError(f"{who}: {size} bytes do not hold {count} ciphertexts")
        if count == 0:
            return
        words = np.frombuffer(raw, "<u8").reshape(count, 2, -1)
        parts, start = [], 0
        for j, (b, rb) in enumerate(zip(self._bits, self._row_bytes, strict=True)):
            part = words[:, :, start : start + rb // 8].reshape(2 * count, -1)
            parts.append((part, b, acc[:, :, j, :].reshape((2 * count, -1), copy=False), int(self.primes[j])))
            start += rb // 8
        if not all([bitpack.add_planar(*p) for p in parts]):  # a list: every prime's words are added
            for p in parts:
                bitpack.add_planar(*p, negate=True)
            raise ProtocolError(f"{who}: a coefficient is not reduced modulo its prime")

    def from_bytes(self, raw: bytes | memoryview, count: int, who: str) -> np.ndarray:
        """Inverse of pack for `count` ciphertexts, checked as add_into checks."""
        out = np.zeros((count, *self.shape), np.uint64)
        self.add_into(raw, out, who)
        return out

    def to_ciphertext(self, coeffs: np.ndarray, who: str) -> sealapi.Ciphertext:
        """(2, L, N) coefficients as a SEAL ciphertext of this scheme, through SEAL's own (validating) load."""
        data = np.ascontiguousarray(coeffs, "<u8").tobytes()
        inner = HEADER.pack(SEAL_MAGIC, HEADER.size, *self._version, COMPR_NONE, 0, HEADER.size + COUNT.size
                            + len(data)) + COUNT.pack(coeffs.size) + data
        body = META.pack(*self.parms_id, 1, 2, self.scheme.degree, len(self.primes), self.scheme.scale, 1) + inner
        ct = sealapi.Ciphertext()
        self.bridge.load(ct, self.context, HEADER.pack(SEAL_MAGIC, HEADER.size, *self._version, COMPR_NONE, 0,
                                                        HEADER.size + len(body)) + body, who)
        return ct


class Accumulator:
    """A sum of packed uploads (the key holder's): uint64 adds, reduced modulo each prime before they could
    overflow."""

    def __init__(self, codec: CoefficientCodec, chunks: int):
        self._codec, self._primes = codec, codec.primes[None, None, :, None]
        self._acc = np.zeros((chunks, *codec.shape), np.uint64)
        self._room = int((2**64 - 1) // int(codec.primes.max())) - 1  # unreduced terms the words can hold
        self._terms = 0

    def add(self, raw: bytes | memoryview, who: str) -> None:
        """Add one upload's packed ciphertexts (checked: CoefficientCodec.add_into)."""
        if self._terms == self._room:
            np.remainder(self._acc, self._primes, out=self._acc)
            self._terms = 1
        self._codec.add_into(raw, self._acc, who)
        self._terms += 1

    def result(self) -> np.ndarray:
        """The sum, every coefficient reduced modulo its prime: the coefficients of the sum ciphertexts (reduced in
        place, a view of the accumulator)."""
        np.remainder(self._acc, self._primes, out=self._acc)
        self._terms = 1
        return self._acc


def keygen(codec: CoefficientCodec, seed: bytes) -> tuple[sealapi.SecretKey, bytes]:
    """The key holder's secret key and its public key in SEAL's serialization, both from SEAL's BLAKE2xb PRNG
    keyed by `seed` (64 bytes from os.urandom; the same seed gives the same keys). No relinearization or
    Galois keys: without a special prime SEAL makes none."""
    if len(seed) != SEED_BYTES:
        raise ConfigError(f"a CKKS key seed is {SEED_BYTES} bytes, got {len(seed)}")
    parms = sealapi.EncryptionParameters(sealapi.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(codec.scheme.degree)
    parms.set_coeff_modulus(codec.context.key_context_data().parms().coeff_modulus())
    parms.set_random_generator(sealapi.Blake2xbPRNGFactory(list(struct.unpack("<8Q", seed))))
    gen = sealapi.KeyGenerator(sealapi.SEALContext(parms, True, sealapi.SEC_LEVEL_TYPE.TC128))
    public = sealapi.PublicKey()
    gen.create_public_key(public)
    secret = gen.secret_key()
    if tuple(secret.parms_id()) != tuple(codec.context.key_parms_id()):
        raise ConfigError("keys made for other parameters than the scheme's")
    return secret, codec.bridge.save(public)


def load_public_key(codec: CoefficientCodec, blob: bytes, who: str) -> sealapi.PublicKey:
    """A client's check of the key holder's public key: SEAL's load (which validates it), at this scheme's key
    level."""
    read_header(blob, who)
    public = sealapi.PublicKey()
    codec.bridge.load(public, codec.context, blob, who)
    if tuple(public.parms_id()) != tuple(codec.context.key_parms_id()):
        raise ProtocolError(f"{who}: public key not of this round's parameters")
    return public


class Encrypter:
    """A client's CKKS encryption of reals, two per complex slot, into packed ciphertexts."""

    def __init__(self, codec: CoefficientCodec, public: sealapi.PublicKey):
        self._codec = codec
        self._encoder = sealapi.CKKSEncoder(codec.context)
        self._encryptor = sealapi.Encryptor(codec.context, public)
        self._evaluator = sealapi.Evaluator(codec.context)
        self._zeros: list[sealapi.Ciphertext] = []

    def precompute(self, count: int) -> None:
        """Offline: `count` fresh encryptions of zero (SEAL's randomness), each used once by encrypt."""
        for _ in range(count):
            ct = sealapi.Ciphertext()
            self._encryptor.encrypt_zero(ct)
            self._zeros.append(ct)

    def encrypt(self, values: np.ndarray) -> np.ndarray:
        """(k, ciphertext_words) packed ciphertexts of `values` (float64, k N reals): value 2j in slot j's real
        part, 2j + 1 in its imaginary part. Uses precomputed encryptions of zero while there are enough."""
        codec, scheme = self._codec, self._codec.scheme
        rows = values.view(np.complex128).reshape(-1, scheme.degree // 2)
        use_zeros = len(self._zeros) >= len(rows)
        pt, fresh = sealapi.Plaintext(), sealapi.Ciphertext()
        out = np.empty((len(rows), codec.ciphertext_words), np.uint64)
        block = np.empty((min(BLOCK, len(rows)), *codec.shape), np.uint64)
        for i, z in enumerate(rows):
            self._encoder.encode(z.tolist(), scheme.scale, pt)  # a list: pybind11 converts it faster than an array
            if use_zeros:
                ct = self._zeros.pop()
                ct.scale = scheme.scale  # an encryption of zero carries no scale until a plaintext is added
                self._evaluator.add_plain_inplace(ct, pt)
            else:
                ct = fresh
                self._encryptor.encrypt(pt, ct)
            block[i % BLOCK] = codec.export(ct)
            if i % BLOCK == BLOCK - 1 or i == len(rows) - 1:
                codec.pack(block[: i % BLOCK + 1], out[i - i % BLOCK : i + 1])
        return out


class Decrypter:
    """The key holder's decryption of summed coefficients into reals."""

    def __init__(self, codec: CoefficientCodec, secret: sealapi.SecretKey):
        self._codec = codec
        self._encoder = sealapi.CKKSEncoder(codec.context)
        self._decryptor = sealapi.Decryptor(codec.context, secret)

    def decrypt(self, sums: np.ndarray, who: str) -> np.ndarray:
        """(k, 2, L, N) summed coefficients -> the k * N reals they hold."""
        degree = self._codec.scheme.degree
        out = np.empty(sums.shape[0] * degree)
        pt = sealapi.Plaintext()
        for row, coeffs in zip(out.view(np.complex128).reshape(-1, degree // 2), sums, strict=True):
            self._decryptor.decrypt(self._codec.to_ciphertext(coeffs, who), pt)
            row[:] = self._encoder.decode_complex(pt)
        return out
