"""CKKS aggregation with TenSEAL: clients encrypt under the key holder's public key; the key holder re-adds their
signed uploads and decrypts one checked sum per round.

The parties and their checks are securefl.he.base (client, key holder) and securefl.he.server (the
server); CKKS supplies its parameters and SEAL objects (securefl.he.ckks_seal): the smallest 128-bit
parameters for the configuration's n, layout and precision (or the option poly_modulus_degree),
two reals per complex slot, and a key holder that never releases a raw CKKS decryption (it
range-checks the sum and rounds it to the codec's grid with fresh secret randomness).

Saved state: the key holder's is its TenSEAL context with the secret key (TenSEAL's own
serialization); a client's, between setup and upload, the public context it was sent.
"""

from __future__ import annotations

import numpy as np
import tenseal as ts
from tenseal import sealapi

from securefl.dp.accounting import Accountant
from securefl.encoding import RoundCodec
from securefl.errors import ConfigError, ProtocolError
from securefl.he import base
from securefl.he.aggregator import HEAggregator
from securefl.he.ckks_seal import DEGREES, TENSEAL_ERRORS, Params, SealIO, load_context, release
from securefl.session import RoundConfig
from securefl.wire import Kind, Reader, Writer

SCHEME = "ckks"
KINDS = base.Kinds(Kind.CKKS_OPEN, Kind.CKKS_KEY, Kind.CKKS_SETUP, Kind.CKKS_READY, Kind.CKKS_REQUEST,
                   Kind.CKKS_UPLOAD, Kind.CKKS_AGGREGATE, Kind.CKKS_RESULT)


def choose(config: RoundConfig, codec: RoundCodec) -> Params:
    """The CKKS parameters of `config` (option poly_modulus_degree: None for the smallest that fits)."""
    unknown = set(config.options) - {"poly_modulus_degree"}
    if unknown:
        raise ConfigError(f"ckks: unknown options {sorted(unknown)} (it takes poly_modulus_degree)")
    degree = config.options.get("poly_modulus_degree")
    if degree is not None and degree not in DEGREES:
        raise ConfigError(f"poly_modulus_degree must be one of {DEGREES}, got {degree}")
    if codec.client_variance:
        raise ConfigError("ckks: its clients encrypt reals, not ring words, and add no distributed noise; "
                          "use dp.GaussianMechanism with it")
    return Params.choose(config.n, codec.layout, codec.fixed, degree)


def policy(config: RoundConfig, accountant: Accountant | None = None) -> base.Policy:
    """What every party of a deployment derives from `config` (`accountant`: the server's, for DP)."""
    return base.Policy.of(config, SCHEME, KINDS, choose, accountant)


class KeyHolder(base.KeyHolder):
    """Creates the CKKS context and secret key; publishes the public part, re-adds and decrypts one checked sum
    per round (see securefl.he.base)."""

    policy_of = staticmethod(policy)

    def _generate(self) -> None:
        p: Params = self.policy.params
        self._use(ts.context(ts.SCHEME_TYPE.CKKS, p.degree, coeff_mod_bit_sizes=list(p.coeff_bits), n_threads=1))
        self._ctx.global_scale = p.scale

    def _restore(self, blobs: dict[str, bytes]) -> None:
        p: Params = self.policy.params
        try:
            ctx = ts.context_from(blobs["context"], 1)
            ok = ctx.has_secret_key() and ctx.has_public_key() and ctx.global_scale == p.scale and tuple(
                ctx.seal_context().data.key_parms_id()) == p.key_level
        except (KeyError, *TENSEAL_ERRORS) as e:
            raise ProtocolError(f"{self.id}: saved state: unreadable CKKS context ({e})") from None
        if not ok:
            raise ProtocolError(f"{self.id}: saved state: a CKKS context without its secret key or for other "
                                "parameters")
        self._use(ctx)

    def _use(self, ctx: ts.Context) -> None:
        self._ctx = ctx
        self._io = SealIO(ctx)
        self._decryptor = sealapi.Decryptor(self._io.seal, ctx.secret_key().data)
        self._evaluator = sealapi.Evaluator(self._io.seal)

    def _secret_blobs(self) -> dict[str, bytes]:
        return {"context": self._ctx.serialize(save_public_key=True, save_secret_key=True, save_galois_keys=False,
                                               save_relin_keys=False)}

    def _public_bytes(self) -> bytes:
        return self._ctx.serialize(save_public_key=True, save_secret_key=False, save_galois_keys=False,
                                   save_relin_keys=False)

    def _add(self, acc: list | None, r: Reader, who: str) -> list:
        p: Params = self.policy.params
        cts = [self._io.load(blob, p, who) for blob in p.read_ciphertexts(r, who)]
        if acc is None:
            return cts
        for a, ct in zip(acc, cts, strict=True):
            self._evaluator.add_inplace(a, ct)
        return acc

    def _decrypt(self, acc: list, count: int, who: str) -> np.ndarray:
        p: Params = self.policy.params
        return release(self._io.decrypt(self._decryptor, acc, p)[: p.length], p, count, who)


class Client(base.Client):
    """Encrypts its own clipped, weight-scaled update under the key holder's public context."""

    policy_of = staticmethod(policy)

    def _take_key(self, public: bytes) -> None:
        ctx = load_context(public, self.policy.params, str(self.id))
        self._io = SealIO(ctx)
        self._encryptor = sealapi.Encryptor(self._io.seal, ctx.public_key().data)

    def _write_ciphertexts(self, w: Writer, update: object, weight: float) -> int:
        """[w * clip(floats), ints, w], one ciphertext per N values."""
        p: Params = self.policy.params
        codec = self.policy.codec
        flat, wn = codec.flatten(self.id.index, update, weight)
        p.fixed.check_ints(flat, codec.layout, self.id.index)
        buf = np.zeros(p.chunks * p.per_ciphertext)
        floats = buf[: p.floats]
        np.clip(flat.floats, -p.fixed.clip, p.fixed.clip, out=floats)
        clipped = int(np.count_nonzero(floats != flat.floats))
        floats *= wn
        buf[p.floats : p.floats + p.ints] = flat.ints
        buf[p.length - 1] = wn
        blobs = self._io.encrypt(self._encryptor, buf, p)
        w.u32(len(blobs))
        for blob in blobs:
            w.blob(blob)
        return clipped


class CKKS(HEAggregator):
    """CKKS (TenSEAL) aggregation: clients encrypt under the key holder's public key, the key holder sums and
    decrypts once per round.

    poly_modulus_degree: force a ring degree (4096 ... 32768) instead of the smallest that fits.
    min_clients and other options as securefl.he.aggregator.HEAggregator and Aggregator. Stages: "setup",
    "upload", "decrypt".
    """

    scheme = SCHEME
    distributed_dp = False  # clients encrypt reals, not ring words: only the central mechanism applies
    client_class, keyholder_class = Client, KeyHolder

    def __init__(self, *, poly_modulus_degree: int | None = None, **kwargs):
        if poly_modulus_degree is not None and poly_modulus_degree not in DEGREES:
            raise ConfigError(f"poly_modulus_degree must be one of {DEGREES}, got {poly_modulus_degree}")
        super().__init__(**kwargs)
        self.poly_modulus_degree = poly_modulus_degree

    def options(self) -> dict:
        return {"poly_modulus_degree": self.poly_modulus_degree}
