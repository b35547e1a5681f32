"""Packed Paillier aggregation with phe (+gmpy2): exact integer sums, many values per ciphertext.

Packing after BatchCrypt (Zhang et al., USENIX ATC 2020): each client encodes its update with the
codec's FixedPoint ([w * clip(floats), ints, w], stochastically rounded to 2^-frac_bits, see
securefl.codec), adds a public offset B to every value so that all are in [0, 2B] (B bounds one
client's |value|: clip * 2^frac_bits, int_bound or the weight's 2^frac_bits, plus one), and packs
values into slots of b = bit_length(n * 2B) bits, k = (key_bits - 1) // b slots per plaintext. The
sum of n clients' slots is at most n * 2B < 2^b, so no slot carries into the next, and the packed
sum stays below 2^(key_bits - 1) <= the Paillier modulus: the homomorphic sum of the ciphertexts is
the exact packed sum of every slot at once. The server removes count * B per slot and decodes the
codec's ring vector: the result is exact against the float64 reference within the codec's
rounding bound.

Encryption uses phe: raw_encrypt(m, r_value=1) gives (1 + m * N) mod N^2, which is multiplied
(phe's homomorphic addition) by an encryption of zero, r^N mod N^2 from phe's raw_encrypt(0). Those
cost one 2048-bit exponentiation each and do not depend on the update, so each client precomputes
one per plaintext offline, in the setup stage (after it gets the public key), and each is used
once; online encryption is then one multiplication per plaintext.

Keys: 2048-bit modulus by default (about 112-bit security per NIST SP 800-57), 3072 (128-bit) or
4096 as options; the key pair comes from phe.generate_paillier_keypair (system randomness).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from phe import paillier

from securefl import wire
from securefl.aggregator import Batch
from securefl.codec import FixedPoint, Flat, Layout
from securefl.errors import ConfigError, ProtocolError
from securefl.he import (
    KEYHOLDER_ID,
    SERVER_ID,
    HEAggregator,
    Signer,
    check_digest,
    check_signed,
    digest,
    read_result,
    result_message,
    with_digest,
)
from securefl.simulation import Simulation

KIND_KEY, KIND_UPLOAD, KIND_AGGREGATE, KIND_RESULT = 50, 51, 52, 53
KEY_BITS = (2048, 3072, 4096)
FINGERPRINT_BYTES = 32


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
    def choose(cls, n_clients: int, fixed: FixedPoint, length: int, key_bits: int) -> Packing:
        """Slots wide enough for the sum of n_clients offset values; as many per plaintext as fit."""
        offset = max(math.floor(fixed.clip * fixed.scale), fixed.int_bound, math.floor(fixed.scale)) + 1
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

    def offset_slots(self, ring: np.ndarray) -> np.ndarray:
        """A client's ring vector (two's complement) as slot values in [0, 2 * offset]."""
        return (ring.view(self.fixed.signed).astype(np.int64) + self.offset).astype(np.uint64)

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


def load_public_key(
    payload: bytes, key_bits: int, verify_key: bytes, session: bytes, round_: int, who: str
) -> tuple[paillier.PaillierPublicKey, bytes]:
    """Check the key holder's signed public key; return it and its fingerprint."""
    what = f"{who}: Paillier public key"
    r = wire.Reader(check_signed(payload, verify_key, what), KIND_KEY, session, round_, what=what)
    if r.sender != KEYHOLDER_ID or r.u32() != key_bits:
        raise ProtocolError(f"{what}: not a {key_bits}-bit key from the key holder")
    raw = r.raw(key_bits // 8)
    r.end()
    n = int.from_bytes(raw, "big")
    if n.bit_length() != key_bits or n % 2 == 0:
        raise ProtocolError(f"{what}: modulus is not an odd {key_bits}-bit number")
    return paillier.PaillierPublicKey(n), digest(raw)


class KeyHolder:
    """Generates the Paillier key pair; publishes the public key and decrypts only the aggregate."""

    name = "keyholder"

    def __init__(self, key_bits: int = 2048):
        self.key_bits = key_bits
        self._public, self._private = paillier.generate_paillier_keypair(n_length=key_bits)
        self._raw = self._public.n.to_bytes(key_bits // 8, "big")
        self._fingerprint = digest(self._raw)
        self._signer = Signer()
        self.verify_key = self._signer.verify_key

    def serves(self, packing: Packing) -> bool:
        """Whether this key fits a round with these parameters."""
        return packing.key_bits == self.key_bits

    def announce(self, session: bytes, round_: int = 0) -> bytes:
        """The signed public key N (g = N + 1), for the server and the clients."""
        w = wire.Writer(KIND_KEY, session, round_, KEYHOLDER_ID).u32(self.key_bits).raw(self._raw)
        return self._signer.sign(w.finish())

    def decrypt(self, payload: bytes, packing: Packing, session: bytes, round_: int = 0,
                noise: Callable | None = None) -> bytes:
        """Decrypt the server's packed aggregate, unpack it and remove the offsets; reply with the signed ring
        vector (plus central DP noise on the float sums when `noise` is given)."""
        what = "keyholder: Paillier aggregate"
        r = wire.Reader(check_digest(payload, what), KIND_AGGREGATE, session, round_, what=what)
        if r.sender != SERVER_ID or r.raw(FINGERPRINT_BYTES) != self._fingerprint:
            raise ProtocolError(f"{what}: not the server's aggregate under this key")
        count, rows = r.u32(), r.u32()
        if not 1 <= count <= packing.n_clients or rows != packing.plaintexts:
            raise ProtocolError(f"{what}: {count} clients in {rows} ciphertexts is not this round's shape")
        cts = ciphertexts(r.raw(rows * packing.cipher_bytes), rows, self._public, what)
        r.end()
        plains = [self._private.raw_decrypt(c) for c in cts]
        if any(p >> packing.packed_bits for p in plains):
            raise ProtocolError(f"{what}: decrypts beyond the packed slots (not a sum of valid uploads)")
        slots = packing.unpack(plains)
        if slots.max() > count * 2 * packing.offset:
            raise ProtocolError(f"{what}: slot sums out of range for {count} clients")
        sums = slots.astype(np.int64) - count * packing.offset
        ring = sums.astype(packing.fixed.signed).view(packing.fixed.dtype)
        return result_message(KIND_RESULT, self._signer, ring, count, noise, session, round_)


class Client:
    """Encodes, packs and encrypts its own update under the key holder's public key."""

    def __init__(
        self,
        index: int,
        flat: Flat,
        weight: float,
        packing: Packing,
        layout: Layout,
        verify_key: bytes,
        session: bytes,
        rng: np.random.Generator,
        round_: int = 0,
    ):
        self.index, self.name = index, f"client/{index}"
        self._flat, self._weight, self._packing, self._layout = flat, weight, packing, layout
        self._verify_key, self._session, self._round, self._rng = verify_key, session, round_, rng
        self._public: paillier.PaillierPublicKey | None = None
        self._fingerprint = b""
        self._zeros: list[paillier.EncryptedNumber] = []
        self.clipped = 0

    def setup(self, payload: bytes) -> None:
        """Take the public key and precompute one encryption of zero (r^N mod N^2) per plaintext (offline)."""
        self._public, self._fingerprint = load_public_key(
            payload, self._packing.key_bits, self._verify_key, self._session, self._round, self.name
        )
        pk = self._public
        self._zeros = [paillier.EncryptedNumber(pk, pk.raw_encrypt(0)) for _ in range(self._packing.plaintexts)]

    def upload(self) -> bytes:
        """The packed ciphertexts, with a digest. Uses up the precomputed randomness."""
        p, pk = self._packing, self._public
        if pk is None or len(self._zeros) != p.plaintexts:
            raise ProtocolError(f"{self.name}: no fresh precomputed randomness (setup missing or already used)")
        ring, self.clipped = p.fixed.encode(self._flat, self._weight, self._rng, self._layout, self.index)
        plains = p.pack(p.offset_slots(ring))
        cts = [
            (paillier.EncryptedNumber(pk, pk.raw_encrypt(m, r_value=1)) + z).ciphertext(be_secure=False)
            for m, z in zip(plains, self._zeros, strict=True)
        ]
        self._zeros = []
        w = wire.Writer(KIND_UPLOAD, self._session, self._round, self.index).raw(self._fingerprint)
        return with_digest(w.u32(p.plaintexts).raw(to_bytes(cts, p.cipher_bytes)).finish())


class Server:
    """Holds the public key only: checks and multiplies the clients' ciphertexts, gets the sum decrypted."""

    name = "server"

    def __init__(self, packing: Packing, verify_key: bytes, session: bytes, round_: int = 0):
        self._packing, self._verify_key, self._session, self._round = packing, verify_key, session, round_
        self._public: paillier.PaillierPublicKey | None = None
        self._fingerprint = b""
        self._acc: list[paillier.EncryptedNumber] = []
        self.included: list[int] = []

    def setup(self, payload: bytes) -> None:
        """Take the key holder's public key."""
        self._public, self._fingerprint = load_public_key(
            payload, self._packing.key_bits, self._verify_key, self._session, self._round, self.name
        )

    def receive(self, payload: bytes) -> None:
        """Check one client's upload and add it to the encrypted sum."""
        what, p = "server: Paillier upload", self._packing
        if self._public is None:
            raise ProtocolError(f"{what} before the public key arrived")
        r = wire.Reader(check_digest(payload, what), KIND_UPLOAD, self._session, self._round, what=what)
        if not 0 <= r.sender < p.n_clients or r.sender in self.included:
            raise ProtocolError(f"{what}: unexpected or repeated sender client/{r.sender}")
        what = f"server: upload of client/{r.sender}"
        if r.raw(FINGERPRINT_BYTES) != self._fingerprint:
            raise ProtocolError(f"{what}: encrypted under another key")
        if r.u32() != p.plaintexts:
            raise ProtocolError(f"{what}: wrong number of ciphertexts")
        cts = ciphertexts(r.raw(p.plaintexts * p.cipher_bytes), p.plaintexts, self._public, what)
        r.end()
        enc = [paillier.EncryptedNumber(self._public, c) for c in cts]
        self._acc = enc if not self._acc else [a + e for a, e in zip(self._acc, enc, strict=True)]
        self.included.append(r.sender)

    def aggregate(self) -> bytes:
        """The encrypted packed sum, for the key holder."""
        if not self._acc:
            raise ProtocolError("server: no upload to aggregate")
        p = self._packing
        w = wire.Writer(KIND_AGGREGATE, self._session, self._round, SERVER_ID).raw(self._fingerprint)
        w.u32(len(self.included)).u32(p.plaintexts)
        return with_digest(w.raw(to_bytes([a.ciphertext(be_secure=False) for a in self._acc], p.cipher_bytes)).finish())

    def finish(self, payload: bytes) -> np.ndarray:
        """The key holder's signed reply: the aggregate as the codec's ring vector."""
        p = self._packing
        return read_result(payload, KIND_RESULT, self._verify_key, len(self.included), p.fixed, p.length,
                           self._session, self._round, "server: Paillier result")


class Paillier(HEAggregator):
    """Packed Paillier (phe) aggregation: exact integer sums of fixed-point updates under one key pair.

    key_bits: Paillier modulus size, 2048 (default), 3072 or 4096. Other options as Aggregator.
    Stages: "setup" (includes the clients' offline precomputation), "upload", "decrypt" (see securefl.he).
    """

    scheme = "paillier"

    def __init__(self, *, key_bits: int = 2048, **kwargs):
        if key_bits not in KEY_BITS:
            raise ConfigError(f"key_bits must be one of {KEY_BITS}, got {key_bits}")
        super().__init__(**kwargs)
        self.key_bits = key_bits

    def _params(self, batch: Batch) -> Packing:
        fixed = self.fixed_point(batch.n)
        return Packing.choose(batch.n, fixed, fixed.length(batch.layout), self.key_bits)

    def _new_keyholder(self, params: Packing) -> KeyHolder:
        return KeyHolder(self.key_bits)

    def _server(self, params: Packing, verify_key: bytes, sim: Simulation) -> Server:
        return Server(params, verify_key, sim.session)

    def _client(self, index: int, batch: Batch, params: Packing, verify_key: bytes, sim: Simulation) -> Client:
        return Client(index, batch.flats[index], float(batch.weights[index]), params, batch.layout, verify_key,
                      sim.session, sim.rng(f"client/{index}"))
