"""AdditiveSharing: each client splits its encoded update into K additive shares, one per aggregator.

A client encodes its weighted update (weight slot included) into Z_{2^b} with the round's codec,
draws K-1 fresh 32-byte seeds (os.urandom) and expands each through the AES-CTR PRG into a
full-length helper share. The leader gets ``x - sum(helper shares)``; helper j gets only its
seed, sealed to helper j's per-round X25519 key (ephemeral X25519 + HKDF + AES-256-GCM) and
forwarded by the leader, which cannot open it. Any K-1 aggregators see only uniformly random
ring words.

Parties and messages: the leader is the `Coordinator` (securefl.protocol); clients and helpers
are `Party` objects built by `AdditiveSharing.party(config, identity, state)` from their own
RoundConfig (pinned directory, K, minimum batch, codec) and identity key. Stages: "setup"
(helpers sign fresh per-round keys), "upload" (the clients' stage: masked vector and MAC'd sealed
seeds), "forward" (helpers open the seeds), "accept" (helpers sign the accepted set), "sum"
(helpers check each other's signatures, return their partial sums). See `Leader` for the
messages (wire.Kind.ADD_*), `Client` and `Helper` for each party's checks. Every signature, MAC,
sealed envelope and share key binds the round configuration's fingerprint, the session and the
round (RoundContext.digest); each client and helper keeps a ReplayGuard, part of its state_dict.
A client authenticates its envelopes to helper j with HMAC-SHA256 under the static pairwise key
the two derive from their pinned agreement keys (Identity.pairwise_key), so a helper's cost per
client per round is one MAC, not a signature check.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from securefl.aggregator import Floor, MinimumBatch, RoleView
from securefl.errors import ConfigError
from securefl.keys import Identity
from securefl.mpc.additive.client import Client
from securefl.mpc.additive.helper import Helper
from securefl.mpc.additive.leader import Leader
from securefl.mpc.additive.policy import Policy
from securefl.protocol import Coordinator, Party
from securefl.session import RoundConfig
from securefl.wire import Role

if TYPE_CHECKING:
    from securefl.dp.accounting import Accountant

__all__ = ["AdditiveSharing", "Client", "Helper", "Leader", "Policy"]


class AdditiveSharing(MinimumBatch):
    """Additive secret sharing across K aggregators (a leader and K-1 helpers), secure against a malicious leader.

    Threat model. An individual update is learned only by all K aggregators together. A malicious
    leader alone, deviating in any way (choosing the accepted set, substituting or replaying keys,
    making up clients, equivocating, replaying old rounds), learns only the sum of the inputs of at
    least `min_clients` genuine clients in a round, one set for every helper: each helper refuses a
    smaller set, an envelope without a valid MAC under the pairwise key of the client it names, and
    a set another helper did not sign under the same round configuration; clients refuse helper keys
    not signed by that helper's pinned identity for this session, round and configuration; every
    client and helper refuses a round number it is not past (freshness rests on these round numbers,
    not on the session id the leader picks). The same holds for any K-1 aggregators colluding
    actively: the one honest helper's checks bound what they learn to such a sum (the MAC keys of
    the other helpers do not help: each pairwise key is known only to its client and its helper).
    The leader can still pick which clients (at least min_clients) are summed, drop any, corrupt or
    withhold the result, and run many rounds: if a client sends the same update in two rounds, sums
    over two different sets reveal it (DP noise, not this protocol, bounds that), as do
    min_clients - 1 clients colluding with it. A malicious helper can make the round fail (named in
    the error) or return a wrong partial sum (a wrong result, undetected). A malicious client can
    put any ring vector into the sum: sums assume clients encode honestly (input validity is future
    work); it cannot enter a helper's sum under another client's index (MACs bind it) nor learn
    anything of other updates.

    What a deployment must provide: a pinned directory (the Ed25519 and X25519 public keys of every
    client and helper, securefl.keys.Directory, part of each party's RoundConfig), a minimum batch
    every helper enforces (RoundConfig.min_clients; 0 means max(2, ceil(n / 2))), increasing round
    numbers (each client and helper keeps a ReplayGuard in its state), and authenticated client ->
    leader channels if the sum's integrity or a client's place in it matters (the masked vector is
    not authenticated: an impostor can get a client excluded, not read it).

    num_aggregators: K >= 2. min_clients: an int >= 2, or a fraction f of the clients giving
    max(2, ceil(f * n)); None: f = 0.5. In `aggregate` (the simulation), the identities, the
    long-lived parties and the session live in this object and each call is the next round.
    Client stage (for `dropped`): "upload". Clients whose envelope a helper cannot open or whose
    MAC fails, and uploads the leader cannot parse, are excluded and listed in
    report.params["rejected"]; fewer than min_clients included clients end the round with
    DropoutError; any refusal by a helper raises ProtocolError naming it, a crash AggregatorError.
    """

    scheme = "additive"
    stages = ("upload",)
    input_stage = "upload"
    threat_model = ("only all K aggregators together (any K-1 see uniform shares); a malicious leader alone learns "
                    "only sums of >= min_clients authenticated clients that every helper endorsed (needs a pinned "
                    "directory of client and helper identities, a minimum batch every helper enforces; sums assume "
                    "clients encode honestly: input validity is future work)")
    output_party = "leader"

    def __init__(self, num_aggregators: int = 2, min_clients: int | float | None = None, **kwargs: object):
        if isinstance(num_aggregators, bool) or not isinstance(num_aggregators, (int, np.integer)):
            raise ConfigError(f"num_aggregators must be an integer >= 2, got {num_aggregators!r}")
        if num_aggregators < 2:
            raise ConfigError(f"num_aggregators must be >= 2 (one party alone would see every update), "
                              f"got {num_aggregators}")
        super().__init__(min_clients=min_clients, **kwargs)
        self.num_aggregators = int(num_aggregators)

    def options(self) -> dict:
        return {"num_aggregators": self.num_aggregators}

    def roles(self) -> tuple[int, bool]:
        return self.num_aggregators - 1, False

    @classmethod
    def floor(cls, n: int, m: int, survivors: int, params: Mapping[str, Any],
              traffic: Mapping[str, tuple[float, float]]) -> dict[str, Floor]:
        """A client expands and subtracts K-1 helper shares; a helper expands and adds every survivor's share; the
        leader adds the survivors' masked vectors and the K-1 partial sums."""
        k, vec = int(params["num_aggregators"]), cls.ring_vector_bytes(m, params)
        return {"client": ((k - 1) * vec, (k - 1) * vec, "expand+add"),
                "helper": (survivors * vec, survivors * vec, "expand+add"),
                "leader": (0.0, (survivors + k - 1) * vec, "add")}

    def roles_view(self, params: Mapping[str, object]) -> dict[str, RoleView]:
        k, b = int(params["num_aggregators"]), int(params["min_clients"])
        return {"leader": RoleView("the aggregate; each client's vector is masked by K-1 uniform shares",
                                   f"the {k - 1} helpers, or {b - 1} colluding clients (it may sum a batch of exactly "
                                   f"{b}, the minimum every helper enforces, all but the target's known)", "sum"),
                "helper": RoleView("uniformly random share expansions; sealed seeds only it can open",
                                   f"the other {k - 1} aggregators", "nothing"),
                f"all {k} aggregators": RoleView("every client's update", "-", "updates"),
                f"leader + {b - 1} clients": RoleView("one update: a minimum batch's sum, all but one of it known",
                                                       "-", "updates"),
                "client": RoleView("its own update and the helpers' signed keys",
                                   f"all {k} aggregators, or the leader and {b - 1} other clients", "nothing")}

    @classmethod
    def party(cls, config: RoundConfig, identity: Identity, state: bytes | None = None) -> Party:
        """The client or helper of `identity` under `config`, fresh or restored from its `state_dict()`."""
        role = getattr(getattr(identity, "party", None), "role", None)
        if role == Role.CLIENT:
            return Client(config, identity, state)
        if role == Role.HELPER:
            return Helper(config, identity, state)
        raise ConfigError(f"AdditiveSharing: parties are clients and helpers (the leader is the coordinator), "
                          f"got {getattr(identity, 'party', identity)!r}")

    @classmethod
    def coordinator(cls, config: RoundConfig, session: bytes, round_: int, clients: Sequence[int] | None = None,
                    accountant: Accountant | None = None) -> Coordinator:
        return Leader(config, session, round_, clients, accountant)
