"""AdditiveSharing's leader (aggregator 0, the coordinator): collects masked vectors, relays what the helpers
must see, fixes the accepted set and learns the sum. Nothing any party's security rests on is its to decide."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from securefl import crypto
from securefl.errors import AggregatorError, ConfigError, DropoutError, ProtocolError
from securefl.mpc.additive.policy import (
    MACED_ENVELOPE_BYTES,
    MAX_REASON,
    OPENED,
    REJECTED,
    Policy,
)
from securefl.protocol import Coordinator, Totals
from securefl.session import RoundConfig
from securefl.wire import LEADER, Channel, Kind, PartyId, Reader

if TYPE_CHECKING:
    from securefl.dp.accounting import Accountant

_REPLY = {"setup": Kind.ADD_KEY, "forward": Kind.ADD_VERDICTS, "accept": Kind.ADD_ENDORSE, "sum": Kind.ADD_PARTIAL}


class Leader(Coordinator):
    """Round `round_` of `session`, asking `clients` (default: all). Stages and their messages:

    setup: ADD_SETUP to every helper, ADD_KEY back (each helper's signed per-round key; checked here too,
    to name a faulty helper early). upload (the clients' stage): ADD_REQUEST with every signed key to each
    client, ADD_UPLOAD back; a client that does not answer dropped, one whose upload is malformed is
    rejected. forward: ADD_FORWARD (the envelopes for that helper) to each helper, ADD_VERDICTS back; a
    client is accepted once every helper opened its envelope. accept: ADD_ACCEPT, ADD_ENDORSE back (the
    helper's signature over the set, checked here to name a liar). sum: ADD_ENDORSEMENTS (all of them),
    ADD_PARTIAL back. Fewer accepted clients than the minimum batch end the round with DropoutError; a
    helper that does not answer ends it with AggregatorError, one that answers wrongly with ProtocolError.
    """

    id = LEADER
    input_stage = "upload"

    def __init__(self, config: RoundConfig, session: bytes, round_: int, clients: Sequence[int] | None = None,
                 accountant: Accountant | None = None):
        self.policy = pol = Policy.of(config, accountant)
        self._ch = Channel(LEADER, session, round_)
        self._round = pol.round(session, round_)
        asked = range(pol.n) if clients is None else clients
        if any(isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= c < pol.n for c in asked):
            raise ConfigError(f"leader: the clients to ask must be indices in [0, {pol.n})")
        self._clients = sorted({int(c) for c in asked})
        if len(self._clients) < pol.min_batch:
            raise ConfigError(f"leader: asking {len(self._clients)} clients cannot meet the minimum batch of "
                              f"{pol.min_batch} every helper enforces")
        self._helpers = [PartyId.helper(j) for j in pol.helpers]
        self._acc = np.zeros(pol.length, pol.dtype)
        # masked vectors (views of the clients' messages, released with this per-round object) and envelopes
        self._uploads: dict[int, np.ndarray] = {}
        self._envelopes: dict[int, memoryview] = {}
        self._ids = np.zeros(0, np.uint32)
        self.stage = "setup"
        self.rejected: dict[int, str] = {}
        self.included: list[int] = []

    def start(self) -> dict[PartyId, bytes]:
        return {p: self._ch.write(Kind.ADD_SETUP, p).raw(self.policy.config.fingerprint).finish()
                for p in self._helpers}

    def step(self, replies: Mapping[PartyId, bytes]) -> dict[PartyId, bytes]:
        stage = self.stage
        if stage == "done":
            raise ProtocolError("leader: replies after the round finished")
        asked = [PartyId.client(c) for c in self._clients] if stage == "upload" else self._helpers
        unasked = sorted(set(replies) - set(asked))
        if unasked:
            raise ProtocolError(f"leader: a reply at stage {stage!r} from {unasked[0]}, which was not asked")
        if stage == "upload":
            return self._after_upload(replies)
        missing = [str(p) for p in self._helpers if p not in replies]
        if missing:
            raise AggregatorError(f"leader: no reply from {', '.join(missing)} at stage {stage!r}; the round has no "
                                  "result")
        readers = {p: self._ch.read(replies[p], _REPLY[stage], p) for p in self._helpers}
        after = {"setup": self._after_setup, "forward": self._after_forward, "accept": self._after_accept,
                 "sum": self._after_sum}
        return after[stage](readers)

    # ------------------------------------------------------------------------------------------- stages

    def _after_setup(self, replies: Mapping[PartyId, Reader]) -> dict[PartyId, bytes]:
        signed = []
        for p, r in replies.items():
            pub, sig = r.raw(crypto.PUBLIC_KEY_BYTES), r.raw(crypto.SIGNATURE_BYTES)
            r.end()
            self.policy.config.directory.verify(p, sig, self._round.helper_key(p.index, pub),
                                                who=f"leader: key of {p}")
            signed.append(pub + sig)
        keys = b"".join(signed)
        self.stage = "upload"
        return {PartyId.client(c): self._ch.write(Kind.ADD_REQUEST, PartyId.client(c))
                .raw(self.policy.config.fingerprint).raw(keys).finish() for c in self._clients}

    def _after_upload(self, replies: Mapping[PartyId, bytes]) -> dict[PartyId, bytes]:
        pol, width = self.policy, (self.policy.k - 1) * MACED_ENVELOPE_BYTES
        for p in sorted(replies):
            try:
                r = self._ch.read(replies[p], Kind.ADD_UPLOAD, p)
                vec, envelopes = r.array(pol.dtype, pol.length), r.raw(width)
                r.end()
            except ProtocolError as e:  # this client is out of the round; the round goes on
                self.rejected[p.index] = str(e)
                continue
            self._uploads[p.index], self._envelopes[p.index] = vec, memoryview(envelopes)
            np.add(self._acc, vec, out=self._acc)  # summed on arrival; taken out again if a helper rejects it
        self._enough(len(self._uploads), "inputs arrived")
        self._ids = np.array(sorted(self._uploads), np.uint32)
        self.stage = "forward"
        out = {}
        for h in self._helpers:
            lo, hi = (h.index - 1) * MACED_ENVELOPE_BYTES, h.index * MACED_ENVELOPE_BYTES
            body = b"".join(self._envelopes[c][lo:hi] for c in self._ids.tolist())
            out[h] = self._ch.write(Kind.ADD_FORWARD, h).array(self._ids).raw(body).finish()
        return out

    def _after_forward(self, replies: Mapping[PartyId, Reader]) -> dict[PartyId, bytes]:
        for p, r in replies.items():
            statuses = r.array(np.uint8, self._ids.size)
            if not np.isin(statuses, (OPENED, REJECTED)).all():
                raise ProtocolError(f"leader: verdicts of {p}: unknown status")
            for c in self._ids[statuses == REJECTED].tolist():
                reason = r.blob(MAX_REASON)
                if not reason:
                    raise ProtocolError(f"leader: verdicts of {p}: client {c} rejected without a reason")
                self.rejected.setdefault(c, reason.decode(errors="replace"))
            r.end()
        self.included = [c for c in self._ids.tolist() if c not in self.rejected]
        self._enough(len(self.included), "inputs every helper opened")
        for c in set(self._uploads) - set(self.included):
            np.subtract(self._acc, self._uploads[c], out=self._acc)
        self._ids = np.array(self.included, np.uint32)
        self.stage = "accept"
        return {h: self._ch.write(Kind.ADD_ACCEPT, h).array(self._ids).finish() for h in self._helpers}

    def _after_accept(self, replies: Mapping[PartyId, Reader]) -> dict[PartyId, bytes]:
        sigs = []
        for p, r in replies.items():
            sig = r.raw(crypto.SIGNATURE_BYTES)
            r.end()
            self.policy.config.directory.verify(p, sig, self._round.accepted(p.index, self._ids),
                                                who=f"leader: {p}'s endorsement of the accepted set")
            sigs.append(sig)
        self.stage = "sum"
        bundle = b"".join(sigs)
        return {h: self._ch.write(Kind.ADD_ENDORSEMENTS, h).raw(bundle).finish() for h in self._helpers}

    def _after_sum(self, replies: Mapping[PartyId, Reader]) -> dict[PartyId, bytes]:
        pol = self.policy
        for r in replies.values():
            partial = r.array(pol.dtype, pol.length)
            r.end()
            np.add(self._acc, partial, out=self._acc)
        self.stage = "done"
        return {}

    def _enough(self, count: int, what: str) -> None:
        if count < self.policy.min_batch:
            raise DropoutError(f"leader: {count} clients' {what}, below the minimum batch of "
                               f"{self.policy.min_batch} that every helper enforces; the round has no result")

    # ------------------------------------------------------------------------------------------- the release

    def result(self) -> Totals:
        """The round's totals, once every helper's partial sum is in."""
        if self.stage != "done":
            raise AggregatorError(f"leader: the round stopped at stage {self.stage!r}; it has no result")
        pol = self.policy
        pol.codec.release(self._acc)  # central DP: the leader is the party that decodes the sum
        floats, ints, weight = pol.codec.decode(self._acc)
        k = len(self.included)
        params = {"ring_bits": pol.codec.fixed.ring_bits, "num_aggregators": pol.k, "min_clients": pol.min_batch,
                  "rejected": dict(sorted(self.rejected.items())), **pol.codec.dp_params(k)}
        return Totals(floats, ints, weight, list(self.included), params, pol.codec.charge(k))
