"""The server's last step: recover the needed secrets from the revealed shares, check them, strip the masks.

Every needed secret comes from one batched Lagrange interpolation of its first t shares and is
checked against its owner's key record: b_u against its commitment, a masking key against its
public key. Only a secret that fails has its shares checked against their commitments: a failing
share names its holder, and shares that all match name the dealer (a wrong share cannot give a
secret that passes, so an honest round checks no share). A wrong reconstruction raises; it never
gives a wrong sum.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from securefl import crypto
from securefl.crypto import shamir
from securefl.crypto.prg import Expander
from securefl.errors import DropoutError, ProtocolError
from securefl.mpc.secagg import messages as msg
from securefl.mpc.secagg.messages import DIGEST, KEY, KEYS, SHARE_BYTES
from securefl.mpc.secagg.params import Policy, ShareKind

if TYPE_CHECKING:
    from securefl.mpc.secagg.server import ServerState

Secret = bytes | X25519PrivateKey


@dataclass
class Revealed:
    """Every revealed share of a round, one row each: whose secret, which kind, who revealed it, the share's
    field elements and its raw row (share and commitment nonce)."""

    owners: list | np.ndarray = field(default_factory=list)
    kinds: list | np.ndarray = field(default_factory=list)
    holders: list | np.ndarray = field(default_factory=list)
    rows: list | np.ndarray = field(default_factory=list)
    raws: list | np.ndarray = field(default_factory=list)

    def add(self, owners: np.ndarray, kind: ShareKind, holder: int, rows: np.ndarray, raws: np.ndarray) -> None:
        self.owners.append(owners)
        self.kinds.append(np.full(owners.size, int(kind)))
        self.holders.append(np.full(owners.size, holder))
        self.rows.append(rows)
        self.raws.append(raws)

    def joined(self) -> Revealed:
        return Revealed(*(np.concatenate(x) for x in (self.owners, self.kinds, self.holders, self.rows, self.raws)))


def recover(policy: Policy, state: ServerState, digest: bytes, session: bytes, rev: Revealed
            ) -> dict[tuple[ShareKind, int], Secret]:
    """Every needed secret (b of survivors, masking keys of `gone` clients), checked against its owner's record."""
    n, t = policy.n, policy.t
    need_key = np.concatenate([np.flatnonzero(state.survivors), np.flatnonzero(state.gone)])
    need_kind = np.concatenate([np.full(state.survivors.sum(), int(ShareKind.SELF_MASK)),
                                np.full(state.gone.sum(), int(ShareKind.MASKING_KEY))])
    group = rev.kinds * n + rev.owners
    order = np.lexsort((rev.holders, group))
    group, owners, holders, rows, raws = (x[order] for x in (group, rev.owners, rev.holders, rev.rows, rev.raws))
    want = need_kind * n + need_key
    starts = np.searchsorted(group, want)
    counts = np.searchsorted(group, want, side="right") - starts
    if (counts < t).any():
        j = int(np.flatnonzero(counts < t)[0])
        raise DropoutError(f"secagg: only {counts[j]} shares of client {need_key[j]}'s "
                           f"{ShareKind(need_kind[j]).label}, t={t}")
    idx = starts[:, None] + np.arange(t)[None, :]
    elems = shamir.reconstruct(holders[idx], rows[idx])
    valid = shamir.valid_secrets(elems)
    values = iter(shamir.elements_to_secrets(elems[valid], "server"))
    out: dict[tuple[ShareKind, int], Secret] = {}
    for j, (kind, u) in enumerate(zip(need_kind.tolist(), need_key.tolist(), strict=True)):
        kind = ShareKind(kind)
        secret = _verified(state, session, kind, u, next(values)) if valid[j] else None
        if secret is None:
            _blame(policy, state, digest, idx[j], holders, raws, kind, u)
        out[kind, u] = secret
    return out


def _verified(state: ServerState, session: bytes, kind: ShareKind, u: int, s: bytes) -> Secret | None:
    """b_u if it matches u's commitment, u's masking key if it matches u's public key; else None."""
    record = state.records[u]
    if kind == ShareKind.SELF_MASK:
        return s if msg.self_mask_commitment(s, session, u) == record[2 * KEY : KEYS].tobytes() else None
    sk = X25519PrivateKey.from_private_bytes(s)
    return sk if sk.public_key().public_bytes_raw() == record[KEY : 2 * KEY].tobytes() else None


def _blame(policy: Policy, state: ServerState, digest: bytes, used: np.ndarray, holders: np.ndarray,
           raws: np.ndarray, kind: ShareKind, u: int) -> None:
    """ProtocolError naming who made client u's secret fail: a holder whose share fails its commitment (or
    that was never sent it), else u, which dealt shares that do not lie on one polynomial."""
    prefix = msg.commit_prefix(digest)
    for i in used.tolist():
        h = int(holders[i])
        if h == u:  # its own share: no commitment, and the blame is u's either way
            continue
        at = int(np.searchsorted(state.edges, h * policy.n + u))
        if at == state.edges.size or state.edges[at] != h * policy.n + u:
            raise ProtocolError(f"server: client/{h} revealed a share of client {u} that it was never sent")
        row, commitment = raws[i], state.commitments[at, kind * DIGEST : (kind + 1) * DIGEST].tobytes()
        if msg.share_commitment(prefix, u, h, kind, row[:SHARE_BYTES].tobytes(), row[SHARE_BYTES:].tobytes()) \
                != commitment:
            raise ProtocolError(f"server: client/{h} revealed a share that fails its commitment (its share of "
                                f"client {u}'s {kind.label}); client/{h} lied")
    raise ProtocolError(f"server: client/{u} dealt inconsistent shares of its {kind.label}: shares that all match "
                        f"their commitments reconstruct a value that does not match its "
                        f"{'commitment' if kind == ShareKind.SELF_MASK else 'public key'}")


def strip_masks(policy: Policy, state: ServerState, session: bytes, secrets: dict[tuple[ShareKind, int], Secret],
                expander: Expander) -> np.ndarray:
    """state.total with every mask removed in one pass: self masks of survivors, pairwise masks of `gone` clients
    with their surviving neighbours (except those that reported them: they left them out of their masks)."""
    add, sub = [], []
    loaded: dict[int, X25519PublicKey] = {}  # survivors' masking keys, each loaded once
    reported = set(map(tuple, state.reports.tolist()))  # (holder, dealer)
    for (kind, u), secret in secrets.items():
        if kind == ShareKind.SELF_MASK:
            sub.append(msg.self_mask_key(secret, session, u))
            continue
        nb = policy.graph.neighbors(u)
        for v in nb[state.survivors[nb]].tolist():
            if (v, u) in reported:
                continue
            if v not in loaded:
                loaded[v] = crypto.load_x25519_public(state.records[v, KEY : 2 * KEY].tobytes(), f"server: key of {v}")
            key = msg.pair_key(secret, loaded[v], session, u, v, f"server: mask of {u}")
            (sub if v < u else add).append(key)  # v added +PRG when v < u
    total = state.total.copy()
    expander.apply(total, add, sub)
    return total
