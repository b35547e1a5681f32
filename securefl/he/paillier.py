"""Packed Paillier aggregation with phe (+gmpy2): exact integer sums, many values per ciphertext.

Packing after BatchCrypt (Zhang et al., USENIX ATC 2020): each client encodes its update with the
codec's FixedPoint ([w * clip(floats), ints, w], stochastically rounded to 2^-frac_bits, see
securefl.codec), adds a public offset B to every value so that all are in [0, 2B] (B bounds one
client's |value|: clip * 2^frac_bits plus its distributed-DP noise bound, int_bound or the weight's
2^frac_bits, plus one), and packs
values into slots of b = bit_length(n * 2B) bits, k = (key_bits - 1) // b slots per plaintext. The
sum of n clients' slots is at most n * 2B < 2^b, so no slot carries into the next, and the packed
sum stays below 2^(key_bits - 1) <= the Paillier modulus: the homomorphic sum of the ciphertexts is
the exact packed sum of every slot at once. The key holder (which re-adds the signed uploads and
decrypts one sum per round, see securefl.he.base) removes count * B per slot and releases the
codec's ring vector: the result is exact against the float64 reference within the codec's
rounding bound. The server (securefl.he.server) holds no key; it checks each upload's count and
length only.

Encryption uses phe: raw_encrypt(m, r_value=1) gives (1 + m * N) mod N^2, which is multiplied
(phe's homomorphic addition) by an encryption of zero, r^N mod N^2 from phe's raw_encrypt(0). Those
cost one 2048-bit exponentiation each and do not depend on the update, so each client precomputes
one per plaintext offline, in the setup stage (after it gets the public key), and each is used
once; online encryption is then one multiplication per plaintext. The precomputed values are part
of the client's saved state between setup and upload (restored, not recomputed), and gone once used.

Keys: 2048-bit modulus by default (about 112-bit security per NIST SP 800-57), 3072 (128-bit) or
4096 as the option key_bits; the key pair comes from phe.generate_paillier_keypair (system
randomness). The key holder's saved state holds its primes p and q. Encryption, addition and
decryption are the small functions below (precompute, encrypt, add, decrypt), so faster arithmetic
can replace them one by one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from phe import paillier
from phe.util import mulmod

from securefl.codec import FixedPoint
from securefl.dp.accounting import Accountant
from securefl.encoding import RoundCodec
from securefl.errors import ConfigError, ProtocolError
from securefl.he import base
from securefl.he.aggregator import HEAggregator
from securefl.session import RoundConfig
from securefl.wire import PARTY_HEADER_SIZE, Kind, Reader, Writer

SCHEME = "paillier"
KINDS = base.Kinds(Kind.PAILLIER_OPEN, Kind.PAILLIER_KEY, Kind.PAILLIER_SETUP, Kind.PAILLIER_READY,
                   Kind.PAILLIER_REQUEST, Kind.PAILLIER_UPLOAD, Kind.PAILLIER_AGGREGATE, Kind.PAILLIER_RESULT)
KEY_BITS = (2048, 3072, 4096)


@dataclass(frozen=True)
class Packing:
    """Public packing parameters of one round: slot width, slots per plaintext, offset."""

    key_bits: int
    slot_bits: int
    per_plaintext: int
    offset: int
    length: int
    n_clients: int
    fixed: FixedPoint

    @classmethod
    def choose(cls, n_clients: int, fixed: FixedPoint, length: int, key_bits: int, client_noise: float = 0.0
               ) -> Packing:
        """Slots wide enough for the sum of n_clients offset values; as many per plaintext as fit.

        client_noise: the largest |noise| (ring units) one client adds to a value with distributed DP (the
        mechanism's ring_headroom for one client): the offset covers it, as the ring's headroom does for the sum.
        """
        noise = math.ceil(client_noise)
        offset = max(math.floor(fixed.clip * fixed.scale) + noise, fixed.int_bound, math.floor(fixed.scale)) + 1
        slot_bits = (n_clients * 2 * offset).bit_length()
        per = (key_bits - 1) // slot_bits
        if per < 1 or slot_bits > 62:
            raise ConfigError(f"a {slot_bits}-bit slot does not fit a {key_bits}-bit Paillier plaintext")
        return cls(key_bits, slot_bits, per, offset, length, n_clients, fixed)

    @property
    def plaintexts(self) -> int:
        """Ciphertexts per client."""
        return -(-self.length // self.per_plaintext)

    @property
    def packed_bits(self) -> int:
        return self.per_plaintext * self.slot_bits

    @property
    def cipher_bytes(self) -> int:
        return 2 * self.key_bits // 8

    @property
    def plain_bytes(self) -> int:
        return -(-self.packed_bits // 8)

    def pack(self, values: np.ndarray) -> list[int]:
        """Pack `length` slot values (each < 2^slot_bits) into plaintext integers, slot 0 lowest."""
        b, rows = self.slot_bits, self.plaintexts
        padded = np.zeros(rows * self.per_plaintext, np.uint64)
        padded[: values.size] = values
        bits = np.empty((padded.size, b), np.uint8)
        for j in range(b):
            bits[:, j] = (padded >> np.uint64(j)) & np.uint64(1)
        packed = np.packbits(bits.reshape(rows, self.packed_bits), axis=1, bitorder="little")
        return [int.from_bytes(row.tobytes(), "little") for row in packed]

    def unpack(self, plaintexts: Sequence[int]) -> np.ndarray:
        """Inverse of pack: the first `length` slot values (uint64) of the plaintexts."""
        raw = b"".join(p.to_bytes(self.plain_bytes, "little") for p in plaintexts)
        rows = np.frombuffer(raw, np.uint8).reshape(len(plaintexts), self.plain_bytes)
        bits = np.unpackbits(rows, axis=1, bitorder="little")[:, : self.packed_bits].reshape(-1, self.slot_bits)
        out = np.zeros(bits.shape[0], np.uint64)
        for j in range(self.slot_bits):
            out |= bits[:, j].astype(np.uint64) << np.uint64(j)
        return out[: self.length]

    def offset_slots(self, ring: np.ndarray, who: str) -> np.ndarray:
        """A client's ring vector (two's complement) as slot values in [0, 2 * offset]; a value outside
        (noise beyond its bound: probability below 1e-80) raises rather than wraps into a neighbour slot."""
        slots = ring.view(self.fixed.signed).astype(np.int64) + self.offset
        if slots.size and (slots.min() < 0 or slots.max() > 2 * self.offset):
            raise ProtocolError(f"{who}: an encoded value falls outside the packing offset {self.offset}")
        return slots.astype(np.uint64)

    @property
    def max_upload_bytes(self) -> int:
        """Size of one client's signed upload."""
        return PARTY_HEADER_SIZE + base.DIGEST_BYTES + 4 + self.plaintexts * self.cipher_bytes + base.UPLOAD_TRAILER

    def read_ciphertexts(self, r: Reader, who: str) -> bytes:
        """An upload's ciphertexts (a count, then fixed-width integers) to the message's end, unparsed."""
        if r.u32() != self.plaintexts:
            raise ProtocolError(f"{who}: wrong number of ciphertexts")
        raw = r.raw(self.plaintexts * self.cipher_bytes)
        r.end()
        return raw

    def describe(self) -> dict:
        return {
            "key_bits": self.key_bits,
            "slot_bits": self.slot_bits,
            "slots_per_ciphertext": self.per_plaintext,
            "ciphertexts_per_client": self.plaintexts,
            "offset": self.offset,
            "ring_bits": self.fixed.ring_bits,
        }


def to_bytes(values: Sequence[int], width: int) -> bytes:
    """Fixed-width big-endian concatenation."""
    return b"".join(v.to_bytes(width, "big") for v in values)


def ciphertexts(raw: bytes, count: int, public_key: paillier.PaillierPublicKey, who: str) -> list[int]:
    """Parse `count` fixed-width ciphertexts; each must be a unit modulo N^2."""
    width = len(raw) // count
    out = [int.from_bytes(raw[j * width : (j + 1) * width], "big") for j in range(count)]
    for c in out:
        if not 0 < c < public_key.nsquare or math.gcd(c, public_key.n) != 1:
            raise ProtocolError(f"{who}: ciphertext outside Z*_(N^2)")
    return out


def load_public_key(public: bytes, key_bits: int, who: str) -> paillier.PaillierPublicKey:
    """The key holder's public key N (g = N + 1), checked: an odd key_bits-bit modulus."""
    n = int.from_bytes(public, "big")
    if len(public) != key_bits // 8 or n.bit_length() != key_bits or n % 2 == 0:
        raise ProtocolError(f"{who}: Paillier modulus is not an odd {key_bits}-bit number")
    return paillier.PaillierPublicKey(n)


def precompute(public_key: paillier.PaillierPublicKey, count: int) -> list[int]:
    """`count` fresh encryptions of zero, r^N mod N^2 (phe's raw_encrypt(0): system randomness), one per plaintext."""
    return [public_key.raw_encrypt(0) for _ in range(count)]


def encrypt(public_key: paillier.PaillierPublicKey, plains: Sequence[int], zeros: Sequence[int]) -> list[int]:
    """(1 + m N) r^N mod N^2 for each plaintext m, with a precomputed r^N: one multiplication each."""
    n, nsquare = public_key.n, public_key.nsquare
    return [mulmod(n * m + 1, z, nsquare) for m, z in zip(plains, zeros, strict=True)]


def add(acc: list[int] | None, cts: list[int], public_key: paillier.PaillierPublicKey) -> list[int]:
    """Homomorphic addition, element-wise (the first upload starts the sum)."""
    return cts if acc is None else [mulmod(a, c, public_key.nsquare) for a, c in zip(acc, cts, strict=True)]


def decrypt(private_key: paillier.PaillierPrivateKey, cts: Sequence[int]) -> list[int]:
    """The plaintexts (phe's raw_decrypt, CRT)."""
    return [private_key.raw_decrypt(c) for c in cts]


def choose(config: RoundConfig, codec: RoundCodec) -> Packing:
    """The packing of `config` (option key_bits), with room for one client's distributed DP noise."""
    unknown = set(config.options) - {"key_bits"}
    if unknown:
        raise ConfigError(f"paillier: unknown options {sorted(unknown)} (it takes key_bits)")
    key_bits = config.options.get("key_bits", KEY_BITS[0])
    if key_bits not in KEY_BITS:
        raise ConfigError(f"key_bits must be one of {KEY_BITS}, got {key_bits}")
    noise = codec.dp.ring_headroom(codec.fixed.frac_bits, 1, codec.min_survivors) if codec.client_variance else 0.0
    return Packing.choose(config.n, codec.fixed, codec.length, key_bits, noise)


def policy(config: RoundConfig, accountant: Accountant | None = None) -> base.Policy:
    """What every party of a deployment derives from `config` (`accountant`: the server's, for DP)."""
    return base.Policy.of(config, SCHEME, KINDS, choose, accountant)


class KeyHolder(base.KeyHolder):
    """Generates the Paillier key pair; publishes the public key, re-adds and decrypts one checked sum per round
    (see securefl.he.base)."""

    policy_of = staticmethod(policy)

    def _generate(self) -> None:
        self._public_key, self._private = paillier.generate_paillier_keypair(n_length=self.policy.params.key_bits)

    def _restore(self, blobs: dict[str, bytes]) -> None:
        bits = self.policy.params.key_bits
        p, q = (int.from_bytes(blobs.get(k, b""), "big") for k in ("p", "q"))
        if p == q or p < 3 or q < 3 or (p * q).bit_length() != bits:
            raise ProtocolError(f"{self.id}: saved state: not the primes of a {bits}-bit Paillier key")
        self._public_key = paillier.PaillierPublicKey(p * q)
        self._private = paillier.PaillierPrivateKey(self._public_key, p, q)

    def _secret_blobs(self) -> dict[str, bytes]:
        width = self.policy.params.key_bits // 8
        return {"p": self._private.p.to_bytes(width, "big"), "q": self._private.q.to_bytes(width, "big")}

    def _public_bytes(self) -> bytes:
        return self._public_key.n.to_bytes(self.policy.params.key_bits // 8, "big")

    def _add(self, acc: list[int] | None, r: Reader, who: str) -> list[int]:
        packing: Packing = self.policy.params
        cts = ciphertexts(packing.read_ciphertexts(r, who), packing.plaintexts, self._public_key, who)
        return add(acc, cts, self._public_key)

    def _decrypt(self, acc: list[int], count: int, who: str) -> np.ndarray:
        """Decrypt, unpack, remove the offsets: the ring vector of the sum of `count` uploads."""
        packing: Packing = self.policy.params
        plains = decrypt(self._private, acc)
        if any(p >> packing.packed_bits for p in plains):
            raise ProtocolError(f"{who}: decrypts beyond the packed slots (not a sum of valid uploads)")
        slots = packing.unpack(plains)
        if slots.max() > count * 2 * packing.offset:
            raise ProtocolError(f"{who}: slot sums out of range for {count} clients")
        sums = slots.astype(np.int64) - count * packing.offset
        return sums.astype(packing.fixed.signed).view(packing.fixed.dtype)


class Client(base.Client):
    """Encodes, packs and encrypts its own update under the key holder's public key."""

    policy_of = staticmethod(policy)

    def _take_key(self, public: bytes) -> None:
        self._public_key = load_public_key(public, self.policy.params.key_bits, str(self.id))
        self._zeros: list[int] = []

    def _prepare(self) -> None:
        """Offline: one encryption of zero per plaintext, each used once."""
        self._zeros = precompute(self._public_key, self.policy.params.plaintexts)

    def _round_blobs(self) -> dict[str, bytes]:
        return {"zeros": to_bytes(self._zeros, self.policy.params.cipher_bytes)}

    def _restore_round(self, blobs: dict[str, bytes]) -> None:
        packing: Packing = self.policy.params
        raw = blobs.get("zeros", b"")
        if len(raw) != packing.plaintexts * packing.cipher_bytes:
            raise ProtocolError(f"{self.id}: saved state: {len(raw)} bytes of precomputed randomness, expected "
                                f"{packing.plaintexts * packing.cipher_bytes}")
        self._zeros = ciphertexts(raw, packing.plaintexts, self._public_key, f"{self.id}: saved state")

    def _write_ciphertexts(self, w: Writer, update: object, weight: float) -> int:
        """The packed ciphertexts. Uses up the precomputed randomness."""
        packing: Packing = self.policy.params
        ring, clipped = self.policy.codec.encode(self.id.index, update, weight)
        plains = packing.pack(packing.offset_slots(ring, str(self.id)))
        cts, self._zeros = encrypt(self._public_key, plains, self._zeros), []
        w.u32(packing.plaintexts).raw(to_bytes(cts, packing.cipher_bytes))
        return clipped


class Paillier(HEAggregator):
    """Packed Paillier (phe) aggregation: exact integer sums of fixed-point updates under one key pair.

    key_bits: Paillier modulus size, 2048 (default), 3072 or 4096. min_clients and other options as
    securefl.he.aggregator.HEAggregator and Aggregator. Stages: "setup" (includes the clients' offline
    precomputation), "upload", "decrypt".
    """

    scheme = SCHEME
    client_class, keyholder_class = Client, KeyHolder

    def __init__(self, *, key_bits: int = 2048, **kwargs):
        if key_bits not in KEY_BITS:
            raise ConfigError(f"key_bits must be one of {KEY_BITS}, got {key_bits}")
        super().__init__(**kwargs)
        self.key_bits = key_bits

    def options(self) -> dict:
        return {"key_bits": self.key_bits}
