"""CKKS aggregation on SEAL (through TenSEAL's sealapi): clients encrypt under the key holder's public key; the key
holder opens their sealed, signed uploads, re-adds them and decrypts one checked sum per round.

The parties and their checks are securefl.he.base (client, key holder) and securefl.he.server (the
server); CKKS supplies its parameters (securefl.he.ckks_params: the smallest 128-bit parameters for
the configuration's n, layout and precision, or the option poly_modulus_degree; no special prime) and
its ciphertexts (securefl.he.ckks_io: two reals per complex slot, bit-packed RNS coefficients on the
wire, one raw section per upload).

What is checked where:

* client: SEAL loads and validates the key holder's public key (its parameters are the round's);
* server: each upload's signature, round key fingerprint, ciphertext count and section length; it never
  sees a coefficient (uploads are sealed to the key holder, securefl.he.sealing);
* key holder: every coefficient of every upload is below its prime, in the same pass that adds it
  (ckks_io.Accumulator; a refused upload is a ProtocolError naming its client, and the sum is left as
  it was); each summed ciphertext then goes through SEAL's own load, which validates its parameters,
  NTT form, size and every coefficient, before SEAL decrypts it; the decrypted values are range-checked
  and rounded (ckks_params.release).

Option precompute (False by default): clients make their encryptions of zero in the setup stage, which
a deployment can run before the update exists (during local training); online work is then about a
third. They take 16 bytes per value per prime until used, and are not saved in a client's state: a
client restored between setup and upload encrypts afresh.

Saved state: the key holder's is the 64-byte seed its keys come from (ckks_io.keygen), with the
sealing key of a round it has open; a client's, between setup and upload, the round key it was sent.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from securefl.aggregator import Floor
from securefl.dp.accounting import Accountant
from securefl.encoding import RoundCodec
from securefl.errors import ConfigError, ProtocolError
from securefl.he import base
from securefl.he import ckks_io as ci
from securefl.he.aggregator import HEAggregator
from securefl.he.ckks_params import Params, release
from securefl.he.policy import Kinds, Policy
from securefl.session import RoundConfig
from securefl.wire import Kind

SCHEME = "ckks"
KINDS = Kinds(Kind.CKKS_OPEN, Kind.CKKS_KEY, Kind.CKKS_SETUP, Kind.CKKS_READY, Kind.CKKS_REQUEST,
                   Kind.CKKS_UPLOAD, Kind.CKKS_AGGREGATE, Kind.CKKS_RESULT)
DEGREES = ci.DEGREES


def check_options(degree: int | None, distributed_noise: bool) -> None:
    """ConfigError for a ring degree CKKS does not offer, or for distributed DP noise (clients encrypt reals,
    not ring words: only the central mechanism applies)."""
    if degree is not None and degree not in DEGREES:
        raise ConfigError(f"poly_modulus_degree must be one of {DEGREES}, got {degree}")
    if distributed_noise:
        raise ConfigError(f"{SCHEME}: its clients encrypt reals, not ring words, and add no distributed noise; "
                          "use dp.GaussianMechanism (--dp central) with it")


def choose(config: RoundConfig, codec: RoundCodec) -> Params:
    """The CKKS parameters of `config` (options poly_modulus_degree: None for the smallest that fits; precompute)."""
    unknown = set(config.options) - {"poly_modulus_degree", "precompute"}
    if unknown:
        raise ConfigError(f"ckks: unknown options {sorted(unknown)} (it takes poly_modulus_degree, precompute)")
    degree = config.options.get("poly_modulus_degree")
    check_options(degree, bool(codec.client_variance))
    return Params.choose(config.n, codec.layout, codec.fixed, degree, config.options.get("precompute", False))


def policy(config: RoundConfig, accountant: Accountant | None = None) -> Policy:
    """What every party of a deployment derives from `config` (`accountant`: the server's, for DP)."""
    return Policy.of(config, SCHEME, KINDS, choose, accountant)


class KeyHolder(base.KeyHolder):
    """Makes the CKKS key pair (from a seed of OS randomness); publishes the public key, re-adds the uploads and
    decrypts one checked sum per round (see securefl.he.base and the module docstring)."""

    policy_of = staticmethod(policy)

    def _generate(self) -> None:
        self._use(os.urandom(ci.SEED_BYTES))

    def _restore(self, blobs: dict[str, bytes]) -> None:
        seed = blobs.get("seed", b"")
        if len(seed) != ci.SEED_BYTES:
            raise ProtocolError(f"{self.id}: saved state: a key seed of {len(seed)} bytes, expected {ci.SEED_BYTES}")
        self._use(seed)

    def _use(self, seed: bytes) -> None:
        p: Params = self.policy.params
        self._seed, self._codec = seed, ci.CoefficientCodec(p.scheme)
        secret, self._public_blob = ci.keygen(self._codec, seed)
        self._decrypter = ci.Decrypter(self._codec, secret)

    def _secret_blobs(self) -> dict[str, bytes]:
        return {"seed": self._seed}

    def _public_bytes(self) -> bytes:
        return self._public_blob

    def _add(self, acc: ci.Accumulator | None, section: memoryview, who: str) -> ci.Accumulator:
        if acc is None:
            acc = ci.Accumulator(self._codec, self.policy.params.count)
        acc.add(section, who)
        return acc

    def _decrypt(self, acc: ci.Accumulator, count: int, who: str) -> np.ndarray:
        p: Params = self.policy.params
        return release(self._decrypter.decrypt(acc.result(), who)[: p.values], p, count, who)


class Client(base.Client):
    """Encrypts its own clipped, weight-scaled update under the key holder's public key."""

    policy_of = staticmethod(policy)
    _codec: ci.CoefficientCodec | None = None

    def _take_key(self, public: bytes) -> None:
        if self._codec is None:
            self._codec = ci.CoefficientCodec(self.policy.params.scheme)
        self._encrypter = ci.Encrypter(self._codec, ci.load_public_key(self._codec, public, f"{self.id}: key"))

    def _prepare(self) -> None:
        """Offline, with the option precompute: the encryptions of zero of this round's upload."""
        if self.policy.params.precompute:
            self._encrypter.precompute(self.policy.params.count)

    def _ciphertexts(self, update: object, weight: float) -> tuple[np.ndarray, int]:
        """[w * clip(floats), ints, F w x R], N values per ciphertext, packed; w on the 2^-frac_bits grid, so the
        key holder rounds the weight slots' mean back to the exact weight sum (a zero sum stays zero)."""
        p: Params = self.policy.params
        codec = self.policy.codec
        flat, wn = codec.flatten(self.id.index, update, weight)
        wn = round(wn * p.fixed.scale) / p.fixed.scale
        p.fixed.check_ints(flat, codec.layout, self.id.index)
        buf = np.zeros(p.count * p.per_ciphertext)
        floats = buf[: p.floats]
        np.clip(flat.floats, -p.fixed.clip, p.fixed.clip, out=floats)
        clipped = int(np.count_nonzero(floats != flat.floats))
        floats *= wn
        buf[p.floats : p.floats + p.ints] = flat.ints
        buf[p.floats + p.ints : p.values] = wn * p.weight_scale
        return self._encrypter.encrypt(buf), clipped


class CKKS(HEAggregator):
    """CKKS (SEAL) aggregation: clients encrypt under the key holder's public key, the key holder sums and
    decrypts once per round.

    poly_modulus_degree: force a ring degree (4096 ... 32768) instead of the smallest that fits.
    precompute: clients make their encryptions of zero in the setup stage (offline; see the module docstring).
    min_clients and other options as securefl.he.aggregator.HEAggregator and Aggregator. Stages: "setup",
    "upload", "decrypt".
    """

    scheme = SCHEME
    client_class, keyholder_class = Client, KeyHolder

    def __init__(self, *, poly_modulus_degree: int | None = None, precompute: bool = False, **kwargs):
        dp = kwargs.get("dp")
        check_options(poly_modulus_degree, dp is not None and bool(dp.client_variance(kwargs.get("frac_bits", 16), 1)))
        super().__init__(**kwargs)
        self.poly_modulus_degree, self.precompute = poly_modulus_degree, bool(precompute)

    def options(self) -> dict:
        return {"poly_modulus_degree": self.poly_modulus_degree, "precompute": self.precompute}

    @classmethod
    def floor(cls, n: int, m: int, survivors: int, params: Mapping[str, Any],
              traffic: Mapping[str, tuple[float, float]]) -> dict[str, Floor]:
        """Clients write their uploads and the server reads what it forwards (the base model); the key holder reads
        the uploads once and adds their coefficients: 2 x primes x N words of 64 bits per ciphertext and upload,
        what SEAL's add_inplace adds."""
        out = super().floor(n, m, survivors, params, traffic)
        if "keyholder" in out:
            words = 2 * len(params["coeff_mod_bit_sizes"]) * params["poly_modulus_degree"]
            prg, read, _ = out["keyholder"]
            out["keyholder"] = (prg, read + 8 * words * params["ciphertexts_per_client"] * survivors,
                                "read the uploads once, add their coefficients")
        return out
