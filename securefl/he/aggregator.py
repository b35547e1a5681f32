"""The recipe both HE schemes share: roles (clients and a key holder), stages, min_clients, and the parties it
builds from a RoundConfig (securefl.he.base, securefl.he.server)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

from securefl.aggregator import Aggregator, RoleView
from securefl.errors import ConfigError
from securefl.he.base import STAGES, Client, KeyHolder, resolve_min_clients
from securefl.he.server import Server
from securefl.keys import Identity
from securefl.protocol import Coordinator, Party
from securefl.session import RoundConfig
from securefl.wire import Role

if TYPE_CHECKING:
    from securefl.dp.accounting import Accountant


class HEAggregator(Aggregator):
    """Shared recipe of the HE schemes: set up the key, upload, decrypt one checked sum.

    min_clients: the fewest distinct signed uploads the key holder decrypts a sum of (None: max(2, n/2);
    a float: that fraction of n, at least 2; an int); a deployment sets it as RoundConfig.min_clients
    (min_clients_for). In `aggregate` (the simulation), the identities, the key holder (its key pair
    and replay state) and the clients live across calls while the configuration holds; each call is the
    next round. Stages (for `dropped`): "setup", "upload", "decrypt" (securefl.he.server).
    """

    stages = STAGES
    input_stage = "upload"
    threat_model = ("the key holder together with the server; a malicious server alone gets one decryption per "
                    "round, of the sum of >= min_clients signed uploads of its choice (so it isolates one update "
                    "only with min_clients - 1 colluding clients); sums assume clients encode honestly")
    output_party = "keyholder"  # it decrypts the sum and, with central DP, releases it only with noise added
    client_class: ClassVar[type[Client]]
    keyholder_class: ClassVar[type[KeyHolder]]

    def __init__(self, *, min_clients: int | float | None = None, **kwargs):
        resolve_min_clients(min_clients, 1 << 30)  # check the policy now; against n once n is known
        super().__init__(**kwargs)
        self.min_clients = min_clients

    def roles(self) -> tuple[int, bool]:
        return 0, True

    def roles_view(self, params: Mapping[str, object]) -> dict[str, RoleView]:
        b = int(params["min_clients"])
        return {"server": RoleView(f"ciphertexts, then one decrypted sum per round, of >= {b} signed uploads",
                                   f"the key holder, or {b - 1} colluding clients (a sum of {b}, all but the target's "
                                   "known)", "sum", released=True),
                "keyholder": RoleView("the sum it decrypts (before the central noise it adds)",
                                      "the server (it holds every ciphertext)", "sum"),
                "keyholder + server": RoleView("every client's update", "-", "updates"),
                f"server + {b - 1} clients": RoleView("one update, after the key holder's release noise", "-",
                                                       "updates", released=True),
                "client": RoleView("its own update and the key holder's signed public key",
                                   "the key holder and the server together", "nothing")}

    def min_clients_for(self, n_clients: int) -> int:
        """RoundConfig.min_clients of a deployment of n_clients: the fewest clients the key holder decrypts."""
        return resolve_min_clients(self.min_clients, n_clients)

    def min_survivors(self, n_clients: int) -> int:
        """A round that finishes holds at least min_clients inputs (distributed DP noise is scaled for it)."""
        return self.min_clients_for(n_clients)

    @classmethod
    def party(cls, config: RoundConfig, identity: Identity, state: bytes | None = None) -> Party:
        """The client or the key holder of `identity` under `config`, fresh or restored from its `state_dict()`."""
        role = getattr(getattr(identity, "party", None), "role", None)
        if role == Role.CLIENT:
            return cls.client_class(config, identity, state)
        if role == Role.KEYHOLDER:
            return cls.keyholder_class(config, identity, state)
        raise ConfigError(f"{cls.scheme}: parties are clients and the key holder (the server is the coordinator), "
                          f"got {getattr(identity, 'party', identity)!r}")

    @classmethod
    def coordinator(cls, config: RoundConfig, session: bytes, round_: int, clients: Sequence[int] | None = None,
                    accountant: Accountant | None = None) -> Coordinator:
        return Server(cls.client_class.policy_of(config, accountant), session, round_, clients)
