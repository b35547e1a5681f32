"""Real SecAgg parties of one deployment, driven stage by stage so tests can intercept, forge or restore.

A `Deployment` is what a real one holds: identities, one RoundConfig, one Client per identity (built
by SecAgg.party from that configuration). Updates sit on the fixed-point grid (multiples of 2^-16,
weight 1), so stochastic rounding is exact and a client's ring vector is known to the test. A
`Round` runs an honest server (SecAgg.coordinator) and lets a test stop at any stage. The `Forge`
writes a malicious server's messages through a Channel, as any transport would deliver them.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from securefl import keys, wire
from securefl.crypto import shamir
from securefl.crypto.prg import Expander
from securefl.keys import Directory
from securefl.mpc.secagg import SecAgg, ShareKind, Stage
from securefl.mpc.secagg import messages as msg
from securefl.mpc.secagg.params import SETUP, Policy
from securefl.mpc.secagg.state import ClientRound, decode_state
from securefl.session import ModelSpec, RoundConfig
from securefl.wire import SERVER, Channel, Kind, PartyId

FRAC = 16
E = shamir.ELEMS


def cid(i: int) -> PartyId:
    return PartyId.client(i)


class Deployment:
    """n clients (identities, configuration, long-lived Client objects) and their grid-valued updates."""

    def __init__(self, n=6, m=5, seed=0, *, min_clients=0, ids=None, setup_seed=None, scheme="secagg",
                 **options):
        self.n = n
        self.ids = ids or keys.create_identities(n)
        extra = {} if setup_seed is None else {"setup_seed": setup_seed}
        self.config = RoundConfig(scheme, Directory.of(self.ids.values()), ModelSpec.of(torch.zeros(m)),
                                  options=options, min_clients=min_clients, frac_bits=FRAC, **extra)
        self.policy = Policy.from_config(self.config)
        g = torch.Generator().manual_seed(seed)
        self.ups = [torch.randint(-2 * 2**FRAC, 2 * 2**FRAC, (m,), generator=g).float() / 2**FRAC for _ in range(n)]
        self.clients = {i: self.party(i) for i in range(n)}

    def party(self, i, state=None):
        return SecAgg.party(self.config, self.ids[cid(i)], state)

    def update(self, i):
        return lambda: (self.ups[i], 1.0)

    def encoded(self, i) -> np.ndarray:
        """Client i's exact ring vector (its update is on the grid: rounding draws nothing)."""
        return self.clients[i].codec.encode(i, self.ups[i], 1.0)[0]

    def answer(self, i, message):
        return self.clients[i].handle(message, self.update(i))

    def secrets(self, i) -> ClientRound:
        """What client i stores (a corrupt client's storage is the adversary's)."""
        return decode_state(self.clients[i].state_dict(), cid(i), self.policy)[1]


class Round:
    """One round: an honest server and the deployment's clients, driven stage by stage."""

    def __init__(self, dep: Deployment, session=None, round_=1, clients=None):
        self.dep = dep
        self.session, self.round = session or os.urandom(16), round_
        self.server = SecAgg.coordinator(dep.config, self.session, round_, clients)
        self.inbox = {p.index: m for p, m in self.server.start().items()}
        self.stages = list(dep.policy.stages)
        self.sent: dict[Stage, dict[int, bytes]] = {}
        self.replies: dict[Stage, dict[int, bytes]] = {}

    @property
    def stage(self) -> Stage:
        return self.stages[len(self.replies)]

    def answer(self, drop=()):
        """The clients' replies to the current inbox (the dropped ones stay silent)."""
        stage = self.stage
        self.sent[stage] = dict(self.inbox)
        self.replies[stage] = {i: self.dep.answer(i, m) for i, m in self.inbox.items() if i not in drop}
        return self.replies[stage]

    def deliver(self, replies):
        """Hand replies {client: bytes} to the server; the next inbox."""
        self.inbox = {p.index: m for p, m in self.server.step({cid(i): m for i, m in replies.items()}).items()}
        return self.inbox

    def step(self, drop=()):
        return self.deliver(self.answer(drop))

    def run_to(self, stage: Stage, drop=()):
        """Run every stage before `stage` (clients in `drop` silent from the first); the inbox then holds
        the server's requests of `stage`."""
        while self.stage != stage:
            self.step(drop)
        return self.inbox

    def finish(self, drop=()):
        """Run to the end; the server's Totals."""
        while self.inbox:
            self.step(drop)
        return self.server.result()


class Forge:
    """A malicious server's messages for one round of `dep` (it holds nothing a client has not sent it)."""

    def __init__(self, dep: Deployment, session: bytes, round_: int):
        self.dep, self.session, self.round = dep, session, round_
        self.ch = Channel(SERVER, session, round_)
        codec = dep.clients[0].codec
        self.ring_bits, self.length = codec.fixed.ring_bits, codec.length

    def write(self, kind: Kind, to: int) -> wire.Writer:
        return self.ch.write(kind, cid(to))

    def read(self, message: bytes, kind: Kind, sender: int) -> wire.Reader:
        return self.ch.read(message, kind, cid(sender))

    def digest(self, policy: Policy | None = None) -> bytes:
        return (policy or self.dep.policy).setup_digest(self.session, self.round, self.ring_bits, self.length)

    def setup(self, to: int, policy: Policy | None = None, fields=None, digest=None) -> bytes:
        """A setup as `policy` (default: the deployment's own) would send it; `fields` overrides the values."""
        policy = policy or self.dep.policy
        fields = fields or policy.setup_fields(self.ring_bits, self.length)
        return self.write(Kind.SECAGG_SETUP, to).raw(SETUP.pack(*fields)).raw(digest or self.digest(policy)).finish()

    def key_list(self, to, peers, records) -> bytes:
        peers = sorted(peers)
        return (self.write(Kind.SECAGG_PEER_KEYS, to).array(np.array(peers, np.uint32))
                .raw(b"".join(records[v] for v in peers)).finish())

    def bundle(self, to, senders, cts) -> bytes:
        senders = sorted(senders)
        return (self.write(Kind.SECAGG_SHARE_BUNDLE, to).array(np.array(senders, np.uint32))
                .raw(b"".join(cts[v, to] for v in senders)).finish())

    def survivors(self, to, alive) -> bytes:
        return self.write(Kind.SECAGG_SURVIVORS, to).raw(bitmap(self.dep.n, alive)).finish()

    def request(self, to, alive, signers, sigs, dropped=()) -> bytes:
        signers = sorted(signers)
        return (self.write(Kind.SECAGG_UNMASK_REQUEST, to).raw(bitmap(self.dep.n, alive))
                .array(np.array(signers, np.uint32)).raw(b"".join(sigs[v] for v in signers))
                .array(np.array(sorted(dropped), np.uint32)).finish())

    def survivor_signature(self, signer, alive, records) -> bytes:
        """A corrupt client's signature of any survivor list (the adversary holds its identity key and record)."""
        rec_hash = msg.record_hash(records[signer][:msg.KEYS])
        text = msg.survivor_message(self.digest(), signer, rec_hash, bitmap(self.dep.n, alive))
        return self.dep.ids[cid(signer)].sign(text)

    def share_cts(self, owner, message) -> dict:
        """{(owner, holder): commitments and ciphertext} from a share_keys reply."""
        r = self.read(message, Kind.SECAGG_SHARES, owner)
        to = r.array(np.uint32)
        blob = r.raw(to.size * msg.SHARE_ENTRY)
        return {(owner, int(v)): blob[j * msg.SHARE_ENTRY:(j + 1) * msg.SHARE_ENTRY] for j, v in enumerate(to)}

    def revealed(self, holder, message) -> tuple[dict, dict]:
        """({owner: self-mask share}, {owner: key share}) from an unmasking reply."""
        r = self.read(message, Kind.SECAGG_REVEAL, holder)
        out = []
        for _ in ShareKind:
            ids = r.array(np.uint32)
            rows = np.frombuffer(r.raw(ids.size * msg.REVEAL_ROW), np.uint8).reshape(ids.size, msg.REVEAL_ROW)
            shares = shamir.decode_shares(rows[:, :msg.SHARE_BYTES].tobytes(), ids.size * E, "test").reshape(-1, E)
            out.append({int(u): shares[j] for j, u in enumerate(ids)})
        return out[0], out[1]

    def masked(self, message, sender) -> np.ndarray:
        return self.read(message, Kind.SECAGG_MASKED_INPUT, sender).array(np.dtype(f"<u{self.ring_bits // 8}"))


def bitmap(n, alive) -> bytes:
    mask = np.zeros(n, bool)
    mask[list(alive)] = True
    return msg.bitmap(mask)


def body(message: bytes) -> bytes:
    """A message after its header: a key record (keys, commitment, signature), a signature, ..."""
    return message[wire.PARTY_HEADER_SIZE:]


def held_share(stored: ClientRound, owner, kind: ShareKind) -> np.ndarray:
    """A holder's share of `owner`'s secret of `kind`, from the holder's stored state."""
    j = int(np.flatnonzero(stored.senders == owner)[0])
    return stored.rows[j, kind * E:(kind + 1) * E]


def secret(points: dict[int, np.ndarray]) -> bytes:
    holders = np.array([sorted(points)])
    rows = np.stack([points[h] for h in sorted(points)])[None]
    return shamir.elements_to_secrets(shamir.reconstruct(holders, rows), "attacker")[0]


def unmask(dep: Deployment, session, u, y, b_u, pair_keys) -> np.ndarray:
    """x_u from y_u, its self-mask seed and the pairwise keys {v: key} of every peer it masked with."""
    x = y.copy()
    exp = Expander(x.size, x.dtype)
    exp.sub(x, msg.self_mask_key(b_u, session, u))
    for v, key in pair_keys.items():
        (exp.sub if u < v else exp.add)(x, key)
    return x


def masking_public(record: bytes) -> bytes:
    return record[msg.KEY:2 * msg.KEY]
