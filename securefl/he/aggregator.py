"""The recipe both HE schemes share: roles (clients and a key holder), stages, min_clients, the threat model, and the
parties it builds from a RoundConfig (securefl.he.base, securefl.he.sealing, securefl.he.server)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

from securefl.aggregator import MinimumBatch, RoleView
from securefl.errors import ConfigError
from securefl.he.base import STAGES, Client, KeyHolder
from securefl.he.server import Server
from securefl.keys import Identity
from securefl.protocol import Coordinator, Party
from securefl.session import RoundConfig
from securefl.wire import Role

if TYPE_CHECKING:
    from securefl.dp.accounting import Accountant


class HEAggregator(MinimumBatch):
    """Shared recipe of the HE schemes: set up the round key, upload sealed ciphertexts, decrypt one checked sum.

    min_clients: the fewest distinct signed uploads the key holder decrypts a sum of (None: max(2, n/2);
    a float: that fraction of n, at least 2; an int); a deployment sets it as RoundConfig.min_clients
    (min_clients_for). In `aggregate` (the simulation), the identities, the key holder (its key pair
    and replay state) and the clients live across calls while the configuration holds; each call is the
    next round. Stages (for `dropped`, securefl.he.server): "setup" (a client dropped there never
    answers the round key), "upload" (the input stage: it never uploads), both left out; "decrypt" (it
    uploaded and stays in the sum).

    What holds (securefl.he.base, securefl.he.sealing): every upload is sealed to the key holder's
    X25519 key of the round, so the server and the clients never see an HE ciphertext and no upload can
    depend on another client's ciphertexts, of this round or an earlier one (HE ciphertexts are
    malleable: seen, one could be negated and uploaded under a colluder's signature to cancel a client
    out of the sum). A malicious server alone therefore gets one decryption per round, of the sum of at
    least min_clients signed uploads of distinct clients of its choice: it isolates one update only with
    min_clients - 1 colluding clients (uploading zeros beside the target). The key holder is sent every
    upload and holds the secret key: it could decrypt any one of them, so the individual updates rest on
    it decrypting only their sum (and on it and the server not colluding; threshold decryption is the
    next step). Sums assume clients encode honestly: a client may encrypt any values, which the key holder
    catches only when the sum leaves its range (input validity is future work). One round's guarantee
    does not compose over rounds: the released sums can be differenced, and a client that sends the same
    update in several rounds or sessions (a server may keep the model unchanged) can be solved for from
    sums over different sets of clients (min_clients = 2: three sums of pairs give each of three
    updates), with no colluder; DP noise, or an update that changes every round, is the answer.
    """

    stages = STAGES
    input_stage = "upload"
    threat_model = ("the key holder, alone or with the server (it is sent every upload and holds the secret key: "
                    "individual updates rest on it decrypting only their sum); a malicious server alone gets one "
                    "decryption per round, of the sum of >= min_clients signed uploads of its choice, each sealed to "
                    "the key holder so that none can depend on another client's ciphertexts (so it isolates one "
                    "update only with min_clients - 1 colluding clients); sums assume clients encode honestly (input "
                    "validity is future work)")
    output_party = "keyholder"  # it decrypts the sum and, with central DP, releases it only with noise added
    client_class: ClassVar[type[Client]]
    keyholder_class: ClassVar[type[KeyHolder]]

    def roles(self) -> tuple[int, bool]:
        return 0, True

    def roles_view(self, params: Mapping[str, object]) -> dict[str, RoleView]:
        b = int(params["min_clients"])
        return {"server": RoleView(f"uploads sealed to the key holder, then one decrypted sum per round, of >= {b} "
                                   "signed uploads", f"the key holder, or {b - 1} colluding clients (a sum of {b}, all "
                                   "but the target's known; no upload can depend on another's ciphertexts)", "sum",
                                   released=True),
                "keyholder": RoleView("every upload it is sent, opened: it holds the secret key and could decrypt any "
                                      "one (it is trusted to decrypt only their sum, before the central noise it adds)",
                                      "nobody: it is sent every upload", "updates"),
                "keyholder + server": RoleView("every client's update", "-", "updates"),
                f"server + {b - 1} clients": RoleView("one update, after the key holder's release noise", "-",
                                                       "updates", released=True),
                "client": RoleView("its own update and the key holder's signed round key",
                                   f"the key holder; or the server and {b - 1} colluding clients, itself among them",
                                   "nothing")}

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
