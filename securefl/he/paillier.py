"""Packed Paillier aggregation: exact integer sums of fixed-point updates, many ring values per ciphertext.

Packing (securefl.he.paillier_slots): each client encodes its update with the codec's FixedPoint
([w * clip(floats), ints, w], stochastically rounded to 2^-frac_bits, plus its distributed-DP noise,
see securefl.encoding) and packs the signed ring values into slots of b bits, k = (key_bits - 1) // b
per plaintext. The slot width comes from the bound on the *sum* of the n clients' values in a slot
(n * clip * 2^frac_bits plus the bound on the sum of their DP noise, the weight slot, the integers),
so no slot carries into the next and the homomorphic sum of the ciphertexts is the exact sum of every
slot at once. At the defaults (n = 100, clip 8, frac_bits 16) slots are 27 bits, 75 per 2048-bit
plaintext. The key holder (which opens the sealed, signed uploads, re-adds them and decrypts one sum
per round, see securefl.he.base) range-checks the slot sums against count clients' bounds and releases
the codec's ring vector: exact against the float64 reference within the codec's rounding bound. The
server (securefl.he.server) checks each upload's count and length only, and never sees a ciphertext.

Arithmetic (securefl.he.paillier_math) is on gmpy2 integers: phe makes the key pair and stays the
reference in the tests. Encryption is Enc(m) = (1 + m N) z mod N^2 with z an encryption of zero made
offline, in the setup stage, one per plaintext and each used once (they are part of the client's saved
state between setup and upload, restored rather than recomputed); online encryption is one
multiplication per plaintext. The key holder checks every ciphertext is a unit of Z_(N^2) (one gcd per
upload), multiplies them into the sum and decrypts by CRT.

Randomness (option `randomness`):

* "djn" (default): short-exponent randomness after Damgard, Jurik and Nielsen: the key holder publishes
  hs = h^N mod N^2 (h = -x^2 mod N) with N in its signed public key; a client checks hs, keeps a
  fixed-base table of hs for as long as the key lives and makes z = hs^r with r of 2 lambda bits (224 for
  a 2048-bit key) from os.urandom: 27 multiplications instead of a 2048-bit exponentiation, about 50x
  cheaper. It rests on an assumption beyond DCR, written out in securefl.he.paillier_math: that h^r for
  such short r is indistinguishable from a uniform element of <h>. Clients refuse a malformed hs
  (check_djn_base) but cannot detect one of small order without a proof: a key holder publishing such
  an hs could read uploads without its secret key, which is no more than it can in any case (it is sent
  every upload and holds the key: the threat model's line); the server never sees a ciphertext.
* "plain": z = r^N mod N^2 with r uniform in [1, N): DCR alone, as phe encrypts.

Keys: 2048-bit modulus by default (about 112-bit security per NIST SP 800-57), 3072 (128-bit) or 4096
(option key_bits). The key holder's saved state holds p, q and hs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from phe import paillier

from securefl.codec import FixedPoint
from securefl.dp.accounting import Accountant
from securefl.dp.mechanisms import Mechanism
from securefl.encoding import RoundCodec
from securefl.errors import ConfigError, ProtocolError
from securefl.he import base
from securefl.he import paillier_math as pm
from securefl.he import paillier_slots as ps
from securefl.he.aggregator import HEAggregator
from securefl.he.policy import Kinds, Policy
from securefl.session import RoundConfig
from securefl.wire import Kind

SCHEME = "paillier"
KINDS = Kinds(Kind.PAILLIER_OPEN, Kind.PAILLIER_KEY, Kind.PAILLIER_SETUP, Kind.PAILLIER_READY,
                   Kind.PAILLIER_REQUEST, Kind.PAILLIER_UPLOAD, Kind.PAILLIER_AGGREGATE, Kind.PAILLIER_RESULT)
KEY_BITS = (2048, 3072, 4096)
RANDOMNESS = ("djn", "plain")


@dataclass(frozen=True)
class Packing:
    """Public packing parameters of one round: slot width and count, the layout, the bounds on the sums."""

    key_bits: int
    slot_bits: int
    per_plaintext: int
    floats: int
    ints: int
    n_clients: int
    fixed: FixedPoint
    client_variance: int = 0  # distributed DP: each client's noise variance in ring units^2
    randomness: str = RANDOMNESS[0]

    @classmethod
    def choose(cls, n_clients: int, fixed: FixedPoint, floats: int, ints: int, key_bits: int,
               client_variance: int = 0, randomness: str = RANDOMNESS[0]) -> Packing:
        """Slots wide enough for the sum of n_clients ring vectors (with their DP noise); as many as fit."""
        if key_bits not in KEY_BITS:
            raise ConfigError(f"key_bits must be one of {KEY_BITS}, got {key_bits}")
        if randomness not in RANDOMNESS:
            raise ConfigError(f"randomness must be one of {RANDOMNESS}, got {randomness!r}")
        bits = ps.slot_bits(_sum_bound(n_clients, fixed, client_variance, ints))
        return cls(key_bits, bits, ps.slots_per_plaintext(key_bits, bits), floats, ints, n_clients, fixed,
                   client_variance, randomness)

    @property
    def length(self) -> int:
        """Ring values per client: floats, ints and the weight slot."""
        return self.floats + self.ints + 1

    @property
    def count(self) -> int:
        """Ciphertexts per client."""
        return -(-self.length // self.per_plaintext)

    @property
    def ciphertext_bytes(self) -> int:
        return 2 * self.key_bits // 8

    @property
    def public_bytes(self) -> int:
        """The key holder's public key: N, then hs."""
        return 3 * self.key_bits // 8

    def sum_bound(self, count: int) -> int:
        """The largest |slot sum| of `count` honest clients (ps.sum_bound with their noise)."""
        return _sum_bound(count, self.fixed, self.client_variance, self.ints)

    def check_sums(self, sums: np.ndarray, count: int, who: str) -> None:
        """ProtocolError unless the slot sums are within what `count` honest clients can reach, part by part."""
        f, v = self.fixed, self.client_variance
        noise = Mechanism.noise_bound(v, count) if v else 0.0
        floats, ints, weight = sums[: self.floats], sums[self.floats : self.length - 1], sums[self.length - 1]
        if ((floats.size and np.abs(floats).max() > count * np.ceil(f.clip * f.scale) + noise)
                or (ints.size and np.abs(ints).max() > count * f.int_bound) or not 0 <= weight <= count * f.scale):
            raise ProtocolError(f"{who}: slot sums out of range for {count} clients (not a sum of valid uploads)")

    def describe(self) -> dict:
        return {
            "key_bits": self.key_bits,
            "slot_bits": self.slot_bits,
            "slots_per_ciphertext": self.per_plaintext,
            "ciphertexts_per_client": self.count,
            "sum_bound": self.sum_bound(self.n_clients),
            "randomness": self.randomness,
            "ring_bits": self.fixed.ring_bits,
        }


def _sum_bound(count: int, fixed: FixedPoint, client_variance: int, ints: int) -> int:
    noise = Mechanism.noise_bound(client_variance, count) if client_variance else 0.0
    return ps.sum_bound(count, fixed.clip, fixed.frac_bits, fixed.int_bound if ints else 0, noise)


def public_bytes(public: pm.PublicKey, key_bits: int) -> bytes:
    """The public key as it travels: N (key_bits / 8 bytes), hs (key_bits / 4), big-endian."""
    return int(public.n).to_bytes(key_bits // 8, "big") + int(public.hs).to_bytes(key_bits // 4, "big")


def load_public_key(raw: bytes, key_bits: int, who: str) -> pm.PublicKey:
    """The key holder's public key, checked: an odd key_bits-bit N and a DJN base hs that is a unit mod N^2."""
    width = key_bits // 8
    n, hs = int.from_bytes(raw[:width], "big"), int.from_bytes(raw[width:], "big")
    if len(raw) != 3 * width or n.bit_length() != key_bits or n % 2 == 0:
        raise ProtocolError(f"{who}: Paillier modulus is not an odd {key_bits}-bit number")
    public = pm.PublicKey.of(n, hs)
    pm.check_djn_base(public, who)
    return public


def choose(config: RoundConfig, codec: RoundCodec) -> Packing:
    """The packing of `config` (options key_bits, randomness), with room for the clients' distributed DP noise."""
    unknown = set(config.options) - {"key_bits", "randomness"}
    if unknown:
        raise ConfigError(f"paillier: unknown options {sorted(unknown)} (it takes key_bits, randomness)")
    return Packing.choose(config.n, codec.fixed, codec.layout.float_size, codec.layout.int_size,
                          config.options.get("key_bits", KEY_BITS[0]), codec.client_variance,
                          config.options.get("randomness", RANDOMNESS[0]))


def policy(config: RoundConfig, accountant: Accountant | None = None) -> Policy:
    """What every party of a deployment derives from `config` (`accountant`: the server's, for DP)."""
    return Policy.of(config, SCHEME, KINDS, choose, accountant)


class KeyHolder(base.KeyHolder):
    """Generates the Paillier key pair and the DJN base; publishes N and hs, re-adds the uploads (gmpy2) and
    decrypts one checked sum per round by CRT (see securefl.he.base)."""

    policy_of = staticmethod(policy)

    def _generate(self) -> None:
        _, private = paillier.generate_paillier_keypair(n_length=self.policy.params.key_bits)
        self._use(private, pm.djn_base(private))

    def _use(self, private: paillier.PaillierPrivateKey, hs: int) -> None:
        self._private = private
        self._public_key = pm.PublicKey.of(private.public_key.n, hs)
        self._decryptor = pm.Decryptor(private)

    def _restore(self, blobs: dict[str, bytes]) -> None:
        bits = self.policy.params.key_bits
        p, q, hs = (int.from_bytes(blobs.get(k, b""), "big") for k in ("p", "q", "hs"))
        if p == q or p < 3 or q < 3 or (p * q).bit_length() != bits:
            raise ProtocolError(f"{self.id}: saved state: not the primes of a {bits}-bit Paillier key")
        private = paillier.PaillierPrivateKey(paillier.PaillierPublicKey(p * q), p, q)
        self._use(private, hs)
        pm.check_djn_base(self._public_key, f"{self.id}: saved state")
        if self._decryptor.decrypt([hs]) != [0]:
            raise ProtocolError(f"{self.id}: saved state: hs is not an encryption of zero under this key")

    def _secret_blobs(self) -> dict[str, bytes]:
        width = self.policy.params.key_bits // 8
        return {"p": self._private.p.to_bytes(width, "big"), "q": self._private.q.to_bytes(width, "big"),
                "hs": int(self._public_key.hs).to_bytes(2 * width, "big")}

    def _public_bytes(self) -> bytes:
        return public_bytes(self._public_key, self.policy.params.key_bits)

    def _add(self, acc: list | None, section: memoryview, who: str) -> list:
        cts = pm.from_bytes(section, self.policy.params.count, self._public_key, who)
        if acc is None:
            return cts
        pm.add_into(acc, cts, self._public_key)
        return acc

    def _decrypt(self, acc: list, count: int, who: str) -> np.ndarray:
        """Decrypt, unpack, range-check: the ring vector of the sum of `count` uploads."""
        packing: Packing = self.policy.params
        plains = self._decryptor.decrypt(acc)
        sums = ps.unpack(plains, packing.slot_bits, packing.per_plaintext, packing.length, self._public_key.n, who)
        packing.check_sums(sums, count, who)
        return sums.astype(packing.fixed.signed).view(packing.fixed.dtype)


class Client(base.Client):
    """Encodes, packs and encrypts its own update under the key holder's public key."""

    policy_of = staticmethod(policy)
    _loaded: bytes | None = None  # the public key its randomness was built for

    def _take_key(self, public: bytes) -> None:
        packing: Packing = self.policy.params
        self._zeros: list = []
        if public == self._loaded:  # the same key as before: keep its fixed-base table
            return
        self._public_key = load_public_key(public, packing.key_bits, str(self.id))
        self._randomness = (pm.FixedBaseRandomness(self._public_key) if packing.randomness == "djn"
                            else pm.PlainRandomness(self._public_key))
        self._loaded = public

    def _prepare(self) -> None:
        """Offline: one encryption of zero per plaintext, each used once."""
        self._zeros = self._randomness.zeros(self.policy.params.count)

    def _round_blobs(self) -> dict[str, bytes]:
        return {"zeros": pm.to_bytes(self._zeros, self._public_key.cipher_bytes)}

    def _restore_round(self, blobs: dict[str, bytes]) -> None:
        self._zeros = pm.from_bytes(blobs.get("zeros", b""), self.policy.params.count, self._public_key,
                                    f"{self.id}: saved state")

    def _ciphertexts(self, update: object, weight: float) -> tuple[bytearray, int]:
        """The packed ciphertexts (writable: they are sealed in place); uses up the precomputed encryptions of zero."""
        packing: Packing = self.policy.params
        ring, clipped = self.policy.codec.encode(self.id.index, update, weight)
        values = ring.view(packing.fixed.signed).astype(np.int64)
        plains = ps.pack(values, packing.slot_bits, packing.per_plaintext, self._public_key.n)
        cts, self._zeros = pm.encrypt(self._public_key, plains, self._zeros), []
        return bytearray(pm.to_bytes(cts, self._public_key.cipher_bytes)), clipped


class Paillier(HEAggregator):
    """Packed Paillier aggregation (gmpy2 arithmetic, phe keys): exact integer sums of fixed-point updates.

    key_bits: Paillier modulus size, 2048 (default), 3072 or 4096. randomness: "djn" (default; short-exponent
    encryptions of zero from the key holder's published base, see the module docstring for the assumption it
    adds) or "plain" (r^N, DCR only, about 50x more offline work per ciphertext). min_clients and other
    options as securefl.he.aggregator.HEAggregator and Aggregator. Stages: "setup" (includes the clients'
    offline encryptions of zero), "upload", "decrypt".
    """

    scheme = SCHEME
    client_class, keyholder_class = Client, KeyHolder

    def __init__(self, *, key_bits: int = 2048, randomness: str = RANDOMNESS[0], **kwargs):
        if key_bits not in KEY_BITS:
            raise ConfigError(f"key_bits must be one of {KEY_BITS}, got {key_bits}")
        if randomness not in RANDOMNESS:
            raise ConfigError(f"randomness must be one of {RANDOMNESS}, got {randomness!r}")
        super().__init__(**kwargs)
        self.key_bits, self.randomness = key_bits, randomness

    def options(self) -> dict:
        return {"key_bits": self.key_bits, "randomness": self.randomness}
