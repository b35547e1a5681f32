"""HE rounds driven by hand through the public parties (CKKS.party, Paillier.party, .coordinator), for the party-level
and attack tests of CKKS and Paillier; hand-built messages go through wire.Channel, hand-built uploads are sealed
with securefl.he.sealing as a client seals them."""

from __future__ import annotations

from functools import cached_property

import numpy as np
import torch

from securefl import keys
from securefl.he import base, sealing
from securefl.he.ckks import CKKS
from securefl.he.paillier import Paillier
from securefl.he.policy import Kinds
from securefl.session import ModelSpec, RoundConfig
from securefl.wire import KEYHOLDER, PARTY_HEADER_SIZE, SERVER, Channel, PartyId, peek

SESSION = bytes(range(16))  # one session for every round: the key holder's replay guard must not rely on it
RECIPES = {"ckks": CKKS, "paillier": Paillier}


def make_config(scheme: str, identities: dict, template: object, min_clients: int = 0, options: dict | None = None,
                dp: dict | None = None) -> RoundConfig:
    """A configuration of these identities for updates like `template` (Paillier: a 2048-bit key by default)."""
    opts = options if options is not None else ({"key_bits": 2048} if scheme == "paillier" else {})
    return RoundConfig(scheme, keys.Directory.of(identities.values()), ModelSpec.of(template), options=opts,
                       min_clients=min_clients, dp=dp)


class Deployment:
    """A federation of n clients (pinned identities) and its key holder (one key pair), kept across rounds."""

    def __init__(self, scheme: str, n: int = 3, size: int = 50, min_clients: int = 0,
                 ups: list[torch.Tensor] | None = None, options: dict | None = None, dp: dict | None = None):
        self.scheme, self.n, self.recipe = scheme, n, RECIPES[scheme]
        self.ups = ups or [torch.randn(size, generator=torch.Generator().manual_seed(i)) for i in range(n)]
        self.identities = keys.create_identities(n, keyholder=True)
        self.config = self.make_config(min_clients=min_clients, options=options, dp=dp)
        self.keyholder = self.recipe.party(self.config, self.identities[KEYHOLDER])
        self.policy = self.keyholder.policy
        self.round = 0

    def make_config(self, identities: dict | None = None, **kwargs) -> RoundConfig:
        """A configuration of this deployment (by default its own identities)."""
        return make_config(self.scheme, identities or self.identities, self.ups[0], **kwargs)

    @property
    def params(self):
        return self.policy.params

    @property
    def kinds(self) -> Kinds:
        return self.policy.kinds

    def client(self, i: int, state: bytes | None = None):
        """A fresh (or restored) client i of this deployment."""
        return self.recipe.party(self.config, self.identities[PartyId.client(i)], state)

    def update(self, i: int):
        return lambda: (self.ups[i], 1.0)

    def open(self) -> Round:
        """The key holder opens the next round (through an honest server)."""
        self.round += 1
        return Round(self, self.round)

    def decode(self, reply: bytes, round_: int) -> np.ndarray:
        """The float sums of a key holder's reply (read without checks: what a server would learn)."""
        r = Channel(SERVER, SESSION, round_).read(reply, self.kinds.result, KEYHOLDER)
        r.raw(base.DIGEST_BYTES)
        r.array(np.uint32)
        floats, _, _ = self.policy.codec.decode(r.array(self.policy.codec.fixed.dtype))
        return floats


class Round:
    """One opened round: the key holder's signed key, its clients (each set up, uploading once), honest servers."""

    def __init__(self, dep: Deployment, number: int):
        self.dep, self.number = dep, number
        server = dep.recipe.coordinator(dep.config, SESSION, number)
        self.open_message = server.start()[KEYHOLDER]
        self.key_reply = dep.keyholder.handle(self.open_message)
        self.sealing_key = dep.keyholder._seal  # the key holder's own (private, public) sealing key of this round
        self.setups = server.step({KEYHOLDER: self.key_reply})

    @property
    def ch(self) -> Channel:
        """The server's channel of this round (to hand-build its messages)."""
        return Channel(SERVER, SESSION, self.number)

    @property
    def ctx(self):
        return self.dep.config.context(SESSION, self.number)

    @cached_property
    def key(self) -> bytes:
        """The round key the key holder signed: its HE public key, then this round's sealing key."""
        r = Channel(SERVER, SESSION, self.number).read(self.key_reply, self.dep.kinds.key, KEYHOLDER)
        return base.read_key(r, self.dep.policy, self.ctx)[0]

    def seal(self, ciphertexts: bytes, index: int) -> bytes:
        """A sealed section of these ciphertexts, as client `index` seals it for this round."""
        buf = bytearray(ciphertexts)
        ephemeral, tag = sealing.seal(self.key[-sealing.KEY_BYTES :], buf, self.ctx, index)
        return ephemeral + bytes(buf) + tag

    def opened(self, upload: bytes) -> bytes:
        """The ciphertexts of an upload, opened with the key holder's sealing key as it opens them."""
        sealed = section_of(upload)
        opener = sealing.Opener(*self.sealing_key, self.ctx, sealing.buffer(len(sealed) - sealing.OVERHEAD))
        return bytes(opener.open(memoryview(sealed), peek(upload).sender.index, "test"))

    def client(self, i: int, setup: bytes | None = None):
        """A fresh client i, set up with this round's SETUP (or the one given)."""
        c = self.dep.client(i)
        c.handle(self.setups[PartyId.client(i)] if setup is None else setup)
        return c

    def request_message(self, i: int) -> bytes:
        return self.ch.write(self.dep.kinds.request, PartyId.client(i)).finish()

    def upload(self, i: int, client=None) -> bytes:
        """Client i's upload (a fresh client set up with this round's key unless one is given)."""
        c = client or self.client(i)
        return c.handle(self.request_message(i), self.dep.update(i))

    @cached_property
    def uploads(self) -> list[bytes]:
        return [self.upload(i) for i in range(self.dep.n)]

    def ready(self, i: int) -> bytes:
        return Channel(PartyId.client(i), SESSION, self.number).write(self.dep.kinds.ready, SERVER).finish()

    def server(self, ready: list[int] | None = None):
        """An honest server of this round, past the setup (the key holder's key taken, these clients ready)."""
        s = self.dep.recipe.coordinator(self.dep.config, SESSION, self.number)
        s.start()
        s.step({KEYHOLDER: self.key_reply})
        clients = range(self.dep.n) if ready is None else ready
        s.step({PartyId.client(i): self.ready(i) for i in clients})
        return s

    def request(self, clients: list[int] | None = None) -> bytes:
        """An honest server's AGGREGATE with these clients' uploads (all by default)."""
        clients = list(range(self.dep.n)) if clients is None else clients
        s = self.server(clients)
        return s.step({PartyId.client(i): self.uploads[i] for i in clients})[KEYHOLDER]

    def forged_request(self, uploads: list[bytes], fingerprint: bytes | None = None) -> bytes:
        """A malicious server's AGGREGATE: any uploads it likes, in the request format."""
        w = self.ch.write(self.dep.kinds.aggregate, KEYHOLDER).raw(fingerprint or self.dep.config.fingerprint)
        return base.write_uploads(w, uploads)


def rewrite_header(message: bytes, kind, sender: PartyId, receiver: PartyId, round_: int,
                   session: bytes = SESSION) -> bytes:
    """The message with another header (what a malicious relay can do to unsigned header fields)."""
    return Channel(sender, session, round_).write(kind, receiver).finish() + message[PARTY_HEADER_SIZE:]


def upload_body(rnd: Round, ciphertexts: bytes, sender: int = 0, fingerprint: bytes | None = None,
                count: int | None = None) -> bytes:
    """An upload's body in the signed layout: header from client `sender`, round key fingerprint (the round's
    unless given), ciphertext count (the round's unless given), the ciphertexts sealed for `sender`."""
    return sealed_body(rnd, rnd.seal(ciphertexts, sender), sender, fingerprint, count)


def sealed_body(rnd: Round, sealed: bytes, sender: int, fingerprint: bytes | None = None,
                count: int | None = None) -> bytes:
    """upload_body around a section sealed already (by whomever: replayed, relabelled, tampered)."""
    dep = rnd.dep
    w = Channel(PartyId.client(sender), SESSION, rnd.number).write(dep.kinds.upload, SERVER)
    w.raw(fingerprint or base.digest(rnd.key)).u32(dep.params.count if count is None else count)
    return w.raw(sealed).finish()


def section_of(upload: bytes) -> bytes:
    """The sealed section of a signed upload (ephemeral key, sealed ciphertexts, tag)."""
    return upload[base.UPLOAD_PREFIX : -base.UPLOAD_TRAILER]


def sign_upload(dep: Deployment, body: bytes, signer: int, round_: int, index: int | None = None) -> bytes:
    """An upload body with its digest and client `signer`'s signature (for client `index`, default the signer)."""
    d = base.digest(body)
    ctx = dep.config.context(SESSION, round_)
    sk = dep.identities[PartyId.client(signer)]
    return body + d + sk.sign(base.upload_digest(ctx, signer if index is None else index, d))
