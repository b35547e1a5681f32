"""CKKS's public parameters and SEAL objects: parameter choice, two reals per complex slot, ciphertexts to and
from bytes, encryption, decryption, and the key holder's rounding of a decrypted sum (the parties: securefl.he.ckks).

Parameters are public: every party derives them from its own RoundConfig (the number of clients n,
the model's layout, the precision asked, frac_bits, and the option poly_modulus_degree), at 128-bit
security:

* ring degree N: the smallest of 4096, 8192, 16384, 32768 whose bound in the homomorphic-encryption
  standard's 128-bit table (SEAL's CoeffModulus.MaxBitCount(N, tc128): 109, 218, 438, 881 bits)
  holds the coefficient modulus; SEAL refuses anything above it;
* scale 2^s, s = frac_bits + log2(N) + 1: a fresh encryption's noise has a standard deviation of
  about N/6 in scaled units (measured; taken as N/4 here), so 8 standard deviations stay below
  2^-frac_bits per client;
* coefficient modulus: data primes of ceil(log2(n * V)) + s + 3 bits in all (V: the largest |value|
  a client sends: clip, int_bound, or 1 for the weight; one bit for the sign, one because a
  coefficient can reach twice a slot's magnitude, one spare), as few primes of <= 60 bits as hold
  them, plus a 20-bit special prime that TenSEAL needs to create its (unused) key-switching keys.
  Ciphertexts live at the data level only. Example: n = 10, clip = 8, frac_bits = 16, floats only:
  N = 4096, primes [39, 20] bits (59 of the 109 allowed), scale 2^29, 4096 values per ciphertext.

Clients send [w * clip(floats), ints, w] (w: normalised weight, see securefl.encoding) zero-padded to
whole ciphertexts of N values: CKKS slots are complex, so each of the N/2 slots carries two reals
(value 2j in slot j's real part, 2j+1 in its imaginary part). This halves the encryptions and bytes
of TenSEAL's CKKSVector, which encodes one real per slot (measured, N = 4096, per value: 0.67 us
and 12 bytes against about 1.4 us and 24). TenSEAL's CKKSVector cannot encode complex values, so
the parties use the SEAL API that TenSEAL ships (tenseal.sealapi) on the TenSEAL context's SEAL
context and keys; its ciphertexts travel in SEAL's own serialization (zstd-compressed), which that
API writes to and reads from files only: the clients and the key holder bridge through a file in a
private temporary directory (ciphertexts only; the secret key stays in memory). The server holds no
context: it checks each upload's ciphertext count and SEAL headers, and only the key holder has SEAL
parse them (a ciphertext SEAL refuses there names its signed client). The public context (public key only:
no secret, relinearization or Galois keys) is sent once per round. Encryption runs one ciphertext
per call on one core: TenSEAL's thread pool only serves batched CKKSTensors, so parallelism is left
to the deployment (clients are separate machines); SEAL's API holds the GIL, so threads do not
help either (measured). The noise is the same in a slot's real and imaginary parts (measured: the
same standard deviation and tails as one real per slot). Integer tensors ride as reals at the same
scale; their sums are rounded to the nearest integer, exact because the noise of a sum of n
(sqrt(n) * 2^-frac_bits at 8 standard deviations, with the N/4 bound) stays below 0.25: rounds with
integer tensors and n * 2^-frac_bits > 0.25 are refused.

The key holder does not release raw CKKS decryptions: those carry the decryption noise, which
with the ciphertext lets a passive holder of both recover the secret key (Li and Micciancio,
EUROCRYPT 2021); and it decrypts one sum per round only, so its fresh rounding cannot be averaged
away over repeated requests. It range-checks the decrypted sums, rounds floats and the weight stochastically to
the codec's 2^-frac_bits grid with fresh secret randomness (AES-CTR keyed from os.urandom) and
integers to the nearest integer, and returns the codec's ring vector. This masks the noise; it is
a mitigation, not a proof of IND-CPA-D security. Error per coordinate of the normalised weighted
sum over k clients: at most (k + 1) * 2^-frac_bits (CKKS noise plus one rounding).
"""


from __future__ import annotations

import functools
import math
import os
import tempfile
from dataclasses import dataclass

import numpy as np
import tenseal as ts
from tenseal import sealapi

from securefl._kernels import encode_fixed
from securefl.codec import FixedPoint, Layout
from securefl.crypto.prg import Expander, stream_key
from securefl.errors import ConfigError, ProtocolError
from securefl.he.base import DIGEST_BYTES, UPLOAD_TRAILER
from securefl.wire import PARTY_HEADER_SIZE, Reader

DEGREES = (4096, 8192, 16384, 32768)
MAX_PRIME_BITS = 60
SPECIAL_PRIME_BITS = 20
# what TenSEAL's and SEAL's C++ exceptions become through pybind11
TENSEAL_ERRORS = (ValueError, RuntimeError, TypeError, IndexError, OverflowError, MemoryError)
SEAL_MAGIC, SEAL_HEADER_BYTES = b"\x5e\xa1", 16  # SEALHeader: magic 0xA15E, header size, version, compr_mode, size
SEAL_COMPR_MODES = (0, 1, 2)  # none, zlib, zstd
SHM = "/dev/shm"  # memory-backed, where the OS has it: the file bridge never touches a disk


def max_coeff_bits(degree: int) -> int:
    """Largest coefficient modulus (bits) at 128-bit security for ring degree `degree` (HE standard table)."""
    return sealapi.CoeffModulus.MaxBitCount(degree, sealapi.SEC_LEVEL_TYPE.TC128)


@functools.lru_cache(maxsize=16)
def parms_ids(degree: int, coeff_bits: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """SEAL's (key level, data level) parameter ids for these parameters (deterministic: primes are chosen so)."""
    parms = sealapi.EncryptionParameters(sealapi.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(degree)
    parms.set_coeff_modulus(sealapi.CoeffModulus.Create(degree, list(coeff_bits)))
    ctx = sealapi.SEALContext(parms, True, sealapi.SEC_LEVEL_TYPE.TC128)
    return tuple(ctx.key_parms_id()), tuple(ctx.first_parms_id())


@dataclass(frozen=True)
class Params:
    """Public CKKS parameters of one round."""

    degree: int
    coeff_bits: tuple[int, ...]  # data primes, then the special prime
    scale_bits: int
    n_clients: int
    floats: int
    ints: int
    fixed: FixedPoint

    @classmethod
    def choose(cls, n_clients: int, layout: Layout, fixed: FixedPoint, degree: int | None = None) -> Params:
        """The smallest 128-bit parameters that hold the sum of n_clients updates at the precision asked."""
        if layout.int_size and n_clients * 2.0**-fixed.frac_bits > 0.25:
            raise ConfigError(
                f"CKKS cannot sum integer tensors exactly for {n_clients} clients at frac_bits={fixed.frac_bits}: "
                "raise frac_bits so that n * 2^-frac_bits <= 0.25"
            )
        peak = max(fixed.clip if layout.float_size else 0.0, float(fixed.int_bound) if layout.int_size else 0.0, 1.0)
        value_bits = max(0, math.ceil(math.log2(n_clients * peak)))
        tried = []
        for deg in (degree,) if degree else DEGREES:
            scale_bits = fixed.frac_bits + deg.bit_length()  # frac_bits + log2(N) + 1
            data = value_bits + scale_bits + 3
            count = math.ceil(data / MAX_PRIME_BITS)
            bits = (math.ceil(data / count),) * count + (SPECIAL_PRIME_BITS,)
            if sum(bits) <= max_coeff_bits(deg):
                return cls(deg, bits, scale_bits, n_clients, layout.float_size, layout.int_size, fixed)
            tried.append(f"N={deg} needs {sum(bits)} > {max_coeff_bits(deg)} bits")
        raise ConfigError(
            f"no 128-bit CKKS parameters hold the sum of {n_clients} clients ({'; '.join(tried)}): "
            "lower frac_bits, clip or int_bound"
        )

    @property
    def slots(self) -> int:
        """Complex slots per ciphertext."""
        return self.degree // 2

    @property
    def per_ciphertext(self) -> int:
        """Real values per ciphertext: two per complex slot."""
        return self.degree

    @property
    def length(self) -> int:
        """Values per client: floats, ints and the weight slot."""
        return self.floats + self.ints + 1

    @property
    def chunks(self) -> int:
        """Ciphertexts per client."""
        return -(-self.length // self.per_ciphertext)

    @property
    def scale(self) -> float:
        return 2.0**self.scale_bits

    @property
    def he(self) -> tuple:
        """What the key holder's context fixes."""
        return self.degree, self.coeff_bits, self.scale_bits

    @property
    def key_level(self) -> tuple[int, ...]:
        """SEAL's parameter id of the key level (all primes)."""
        return parms_ids(self.degree, self.coeff_bits)[0]

    @property
    def level(self) -> tuple[int, ...]:
        """SEAL's parameter id of the data level, where every ciphertext of the round lives."""
        return parms_ids(self.degree, self.coeff_bits)[1]

    @property
    def max_ciphertext_bytes(self) -> int:
        """Upper bound on one serialized ciphertext (uncompressed, plus SEAL's header and metadata)."""
        return 2 * self.degree * (len(self.coeff_bits) - 1) * 8 + 1024

    @property
    def max_upload_bytes(self) -> int:
        """Upper bound on one client's signed upload."""
        return (PARTY_HEADER_SIZE + DIGEST_BYTES + 4 + self.chunks * (4 + self.max_ciphertext_bytes)
                + UPLOAD_TRAILER)

    def read_ciphertexts(self, r: Reader, who: str) -> list[bytes]:
        """An upload's serialized ciphertexts (a count, then each length-prefixed) to the message's end, with
        their SEAL headers checked (the server stops here; the key holder then has SEAL parse them)."""
        if r.u32() != self.chunks:
            raise ProtocolError(f"{who}: wrong number of ciphertexts")
        blobs = [r.blob(self.max_ciphertext_bytes) for _ in range(self.chunks)]
        r.end()
        for blob in blobs:
            check_header(blob, who)
        return blobs

    def sum_error_bound(self, k: int) -> float:
        """Bound on |error| per coordinate of the normalised weighted sum over k clients."""
        return (k + 1) * 2.0**-self.fixed.frac_bits

    def describe(self) -> dict:
        return {
            "poly_modulus_degree": self.degree,
            "coeff_mod_bit_sizes": list(self.coeff_bits),
            "scale_bits": self.scale_bits,
            "security_bits": 128,
            "max_coeff_bits": max_coeff_bits(self.degree),
            "values_per_ciphertext": self.per_ciphertext,
            "ciphertexts_per_client": self.chunks,
            "ring_bits": self.fixed.ring_bits,
            "sum_error_bound": self.sum_error_bound(self.n_clients),
        }


def check_header(blob: bytes, who: str) -> None:
    """Check SEAL's serialization header before the C++ parser sees the bytes: magic, header size,
    compression mode, and a declared size equal to the blob's."""
    if len(blob) < SEAL_HEADER_BYTES or blob[:2] != SEAL_MAGIC or blob[2] != SEAL_HEADER_BYTES:
        raise ProtocolError(f"{who}: not a SEAL ciphertext (bad header)")
    if blob[5] not in SEAL_COMPR_MODES or blob[6:8] != b"\0\0":
        raise ProtocolError(f"{who}: SEAL header with unknown compression mode {blob[5]}")
    size = int.from_bytes(blob[8:16], "little")
    if size != len(blob):
        raise ProtocolError(f"{who}: truncated or padded ciphertext ({len(blob)} bytes, header says {size})")


class SealIO:
    """One party's SEAL objects for the round's context: the complex encoder, ciphertexts to and from bytes.

    TenSEAL's SEAL API saves and loads ciphertexts through files only, so ciphertexts (never keys)
    pass through one file in a private temporary directory, removed with this object.
    """

    def __init__(self, ctx: ts.Context):
        self.seal = ctx.seal_context().data
        self.encoder = sealapi.CKKSEncoder(self.seal)
        self._dir = tempfile.TemporaryDirectory(prefix="securefl-ckks-", dir=SHM if os.path.isdir(SHM) else None)
        self._path = os.path.join(self._dir.name, "ciphertext")

    def dump(self, ct: sealapi.Ciphertext) -> bytes:
        """SEAL's serialization of one ciphertext."""
        ct.save(self._path)
        with open(self._path, "rb") as f:
            return f.read()

    def load(self, blob: bytes, p: Params, who: str) -> sealapi.Ciphertext:
        """Parse one serialized ciphertext of this round; anything malformed raises ProtocolError."""
        check_header(blob, who)
        with open(self._path, "wb") as f:
            f.write(blob)
        ct = sealapi.Ciphertext()
        try:
            ct.load(self.seal, self._path)  # SEAL checks the parameters and that every coefficient is reduced
            ok = (ct.size() == 2 and ct.is_ntt_form() and ct.scale == p.scale and tuple(ct.parms_id()) == p.level)
        except TENSEAL_ERRORS as e:
            raise ProtocolError(f"{who}: unreadable ciphertext ({e})") from None
        if not ok:
            raise ProtocolError(f"{who}: ciphertext of size {ct.size()}, scale {ct.scale} or level not of this round")
        return ct

    def encrypt(self, encryptor: sealapi.Encryptor, values: np.ndarray, p: Params) -> list[bytes]:
        """Encrypt `chunks * per_ciphertext` reals, two per complex slot; one serialized ciphertext per chunk."""
        pt, ct = sealapi.Plaintext(), sealapi.Ciphertext()
        blobs = []
        for z in values.view(np.complex128).reshape(p.chunks, p.slots):
            self.encoder.encode(z.tolist(), p.scale, pt)  # a list: pybind11 converts it faster than an array
            encryptor.encrypt(pt, ct)
            blobs.append(self.dump(ct))
        return blobs

    def decrypt(self, decryptor: sealapi.Decryptor, cts: list[sealapi.Ciphertext], p: Params) -> np.ndarray:
        """The `chunks * per_ciphertext` reals the ciphertexts hold."""
        out = np.empty(p.chunks * p.per_ciphertext)
        pt = sealapi.Plaintext()
        for row, ct in zip(out.view(np.complex128).reshape(p.chunks, p.slots), cts, strict=True):
            decryptor.decrypt(ct, pt)
            row[:] = self.encoder.decode_complex(pt)
        return out


def load_context(public: bytes, params: Params, who: str) -> ts.Context:
    """The key holder's public context, checked: public key only, this round's parameters."""
    what = f"{who}: CKKS public context"
    try:
        ctx = ts.context_from(public, 1)
        ok = ctx.is_public() and not ctx.has_secret_key() and ctx.has_public_key()
        ids = tuple(ctx.seal_context().data.key_parms_id())
    except TENSEAL_ERRORS as e:
        raise ProtocolError(f"{what}: unreadable ({e})") from None
    if not ok:
        raise ProtocolError(f"{what}: must hold the public key and no secret key")
    if ids != params.key_level or ctx.global_scale != params.scale:
        raise ProtocolError(f"{what}: encryption parameters differ from this round's")
    return ctx


def release(values: np.ndarray, params: Params, count: int, who: str) -> np.ndarray:
    """Range-check decrypted sums of `count` clients and round them into the codec's ring vector.

    Floats and the weight are rounded stochastically to 2^-frac_bits with secret randomness, ints to
    the nearest integer; out-of-range values (not a sum of valid uploads) raise ProtocolError.
    """
    fixed, nf, ni = params.fixed, params.floats, params.ints
    slack = count * 2.0**-fixed.frac_bits
    floats, ints, weight = values[:nf], values[nf : nf + ni], values[nf + ni :]
    rounded = np.rint(ints)
    if (
        (nf and np.abs(floats).max() > count * fixed.clip + slack)
        or not -slack <= weight[0] <= count + slack
        or (ni and (np.abs(ints - rounded).max() > 0.25 or np.abs(rounded).max() > count * fixed.int_bound))
    ):
        raise ProtocolError(f"{who}: decrypted values out of range for a sum of {count} clients")
    words = Expander(nf + 1, np.uint64).expand(stream_key(os.urandom(32), b"securefl/ckks/release", b""))
    uniform = (words >> np.uint64(11)) * 2.0**-53
    out = np.empty(params.length, fixed.dtype)
    signed = out.view(fixed.signed)
    encode_fixed(floats, uniform[:nf], np.inf, fixed.scale, signed[:nf])
    signed[nf : nf + ni] = rounded
    encode_fixed(weight, uniform[nf:], np.inf, fixed.scale, signed[nf + ni :])
    return out
