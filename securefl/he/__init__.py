"""Homomorphic-encryption aggregation: CKKS (securefl.he.ckks) and packed Paillier (securefl.he.paillier).

Both schemes run the same round between three kinds of party, each its own object holding only
its own secrets and speaking bytes:

* ``KeyHolder`` ("keyholder"): creates the key pair and an Ed25519 signing key, publishes the
  signed public key, and decrypts only the aggregate ciphertext the server sends it.
* ``Client`` ("client/i"): gets the public key (relayed by the server; the signature is checked
  against the key holder's verification key, provisioned out of band, so a server cannot swap in
  a key of its own), and uploads its encrypted update.
* ``Server`` ("server"): holds no secret key; checks and adds the ciphertexts, asks the key holder
  to decrypt the sum and decodes it into the round's totals.

Stages (for ``dropped``): "setup" (the public key reaches the clients; a client dropped here never
gets it and sends nothing), "upload" (a client dropped here sends no ciphertext), "decrypt" (a
client dropped here has already uploaded and stays in the sum). Any number of clients may drop;
a round in which nobody uploads raises DropoutError.

Weighted mean: each client multiplies its clipped floats by its normalised weight (weight /
weight_bound, in [0, 1]) before encrypting and appends that weight as one more slot. The server
and the key holder learn the weighted sums of the floats, the exact sums of the integer tensors,
the sum of the normalised weights and who took part, never a single client's update or weight;
an individual update is exposed only if the key holder and the server collude (the key holder
decrypts whatever it is sent: it trusts the server to send sums, as in every HE aggregation with
a separate decryptor). With central DP (dp.GaussianMechanism) the key holder adds the noise before
it releases the sum, so the server never sees the exact aggregate. Uploads carry a BLAKE2b-256
digest over the whole message (corruption or tampering in transit raises ProtocolError); the key
holder's messages are signed.
"""

from __future__ import annotations

import hashlib
import hmac
from abc import abstractmethod
from collections.abc import Callable
from typing import Protocol

import numpy as np

from securefl import wire
from securefl.aggregator import Aggregator, Batch, Totals
from securefl.codec import FixedPoint
from securefl.crypto import SIGNATURE_BYTES, ed25519_keypair, verify
from securefl.errors import DropoutError, ProtocolError
from securefl.simulation import Simulation

SERVER_ID = 0xFFFFFFFF
KEYHOLDER_ID = 0xFFFFFFFE
DIGEST_BYTES = 32
STAGES = ("setup", "upload", "decrypt")


def digest(data: bytes | memoryview) -> bytes:
    """BLAKE2b-256 (the fastest cryptographic hash in hashlib on CPUs without SHA extensions)."""
    return hashlib.blake2b(data, digest_size=DIGEST_BYTES).digest()


def with_digest(message: bytes) -> bytes:
    """The message followed by its digest."""
    return message + digest(message)


def check_digest(payload: bytes, who: str) -> memoryview:
    """The message without its digest; ProtocolError when the digest does not match."""
    if not isinstance(payload, (bytes, bytearray)) or len(payload) < DIGEST_BYTES:
        raise ProtocolError(f"{who}: expected a message with a digest")
    body = memoryview(payload)[:-DIGEST_BYTES]
    if not hmac.compare_digest(digest(body), bytes(payload[-DIGEST_BYTES:])):
        raise ProtocolError(f"{who}: digest mismatch (corrupted or tampered in transit)")
    return body


def check_signed(payload: bytes, verify_key: bytes, who: str) -> memoryview:
    """The message without its Ed25519 signature; ProtocolError when it does not verify."""
    if not isinstance(payload, (bytes, bytearray)) or len(payload) < SIGNATURE_BYTES:
        raise ProtocolError(f"{who}: expected a signed message")
    body = memoryview(payload)[:-SIGNATURE_BYTES]
    verify(verify_key, bytes(payload[-SIGNATURE_BYTES:]), body, who)
    return body


class Signer:
    """The key holder's Ed25519 identity: signs what it publishes."""

    def __init__(self) -> None:
        self._sk, self.verify_key = ed25519_keypair()

    def sign(self, message: bytes) -> bytes:
        """The message followed by its signature."""
        return message + self._sk.sign(message)


def noise_hook(aggregator: Aggregator, fixed: FixedPoint, floats: int, rng: np.random.Generator) -> Callable | None:
    """The key holder's central-DP step, or None: adds N(0, (z clip)^2) to the `floats` float sums of a
    ring vector, in ring units (the ring's headroom includes it: Aggregator.central_noise_in_ring)."""
    dp = aggregator.dp
    if dp is None or dp.kind != "central":
        return None
    return lambda ring: dp.add_ring_noise(ring[:floats].view(fixed.signed), fixed.frac_bits, rng)


def result_message(kind: int, signer: Signer, ring: np.ndarray, count: int, noise: Callable | None,
                   session: bytes, round_: int) -> bytes:
    """The key holder's signed reply: the aggregate of `count` clients as the codec's ring vector, with the
    central DP noise (if any) added first, so nobody but the key holder sees the exact sum."""
    if noise is not None:
        noise(ring)
    return signer.sign(wire.Writer(kind, session, round_, KEYHOLDER_ID).u32(count).array(ring).finish())


def read_result(payload: bytes, kind: int, verify_key: bytes, count: int, fixed: FixedPoint, length: int,
                session: bytes, round_: int, what: str) -> np.ndarray:
    """The server's side of result_message: the signed ring vector of its `count` clients."""
    r = wire.Reader(check_signed(payload, verify_key, what), kind, session, round_, what=what)
    if r.sender != KEYHOLDER_ID or r.u32() != count:
        raise ProtocolError(f"{what}: not the key holder's reply for {count} clients")
    vec = r.array(fixed.dtype, length)
    r.end()
    return vec


class RoundParams(Protocol):
    """What a scheme's public round parameters offer the shared driver."""

    fixed: FixedPoint

    def describe(self) -> dict: ...


class HEAggregator(Aggregator):
    """Shared round driver of the HE schemes: setup (signed public key), upload, decrypt the sum."""

    stages = STAGES
    input_stage = "upload"
    threat_model = "only the key holder together with the server (the key holder decrypts sums only)"
    output_party = "keyholder"  # it decrypts the sum and, with central DP, releases it only with noise added
    central_noise_in_ring = True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._keyholder = None  # kept across rounds while its parameters fit (keys are set up once)

    @abstractmethod
    def _params(self, batch: Batch) -> RoundParams:
        """The round's public parameters."""

    @abstractmethod
    def _new_keyholder(self, params: RoundParams):
        """A key holder with fresh keys for these parameters."""

    @abstractmethod
    def _server(self, params: RoundParams, verify_key: bytes, sim: Simulation):
        """The server party of this round."""

    @abstractmethod
    def _client(self, index: int, batch: Batch, params: RoundParams, verify_key: bytes, sim: Simulation):
        """Client `index` of this round."""

    def _run(self, batch: Batch, sim: Simulation) -> tuple[Totals, dict]:
        params = self._params(batch)
        with sim.clock("setup", "keyholder"):
            if self._keyholder is None or not self._keyholder.serves(params):
                self._keyholder = self._new_keyholder(params)
            keyholder = self._keyholder
            announce = keyholder.announce(sim.session)
        server = self._server(params, keyholder.verify_key, sim)
        sim.send("keyholder", "server", announce)
        with sim.clock("setup", "server"):
            server.setup(announce)
        clients = []
        for i in range(batch.n):
            if sim.active(i, "setup"):
                client = self._client(i, batch, params, keyholder.verify_key, sim)
                sim.send("server", client.name, announce)
                with sim.clock("setup", client.name):
                    client.setup(announce)
                clients.append(client)
        clipped = 0
        for client in clients:
            if sim.active(client.index, "upload"):
                with sim.clock("upload", client.name):
                    msg = client.upload()
                clipped += client.clipped
                sim.send(client.name, "server", msg)
                with sim.clock("upload", "server"):
                    server.receive(msg)
        if not server.included:
            raise DropoutError(f"{self.scheme}: no client uploaded; there is nothing to decrypt")
        with sim.clock("decrypt", "server"):
            request = server.aggregate()
        sim.send("server", "keyholder", request)
        noise = noise_hook(self, params.fixed, batch.layout.float_size, sim.rng("keyholder"))
        with sim.clock("decrypt", "keyholder"):
            reply = keyholder.decrypt(request, params, sim.session, noise=noise)
        sim.send("keyholder", "server", reply)
        with sim.clock("decrypt", "server"):
            floats, ints, weight = params.fixed.decode(server.finish(reply), batch.layout)
        totals = Totals(floats, ints, weight, list(server.included), clipped, noised=noise is not None)
        return totals, params.describe()
