"""SecAgg, the aggregator: its options, threat model, and the parties it builds from a RoundConfig."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from securefl.aggregator import Aggregator, Floor, RoleView
from securefl.keys import Identity
from securefl.mpc.secagg.client import Client
from securefl.mpc.secagg.params import INPUT_STAGE, STAGES, colluders_needed, normalize_options, resolve_parameters
from securefl.mpc.secagg.server import Server
from securefl.session import RoundConfig

if TYPE_CHECKING:
    from securefl.dp.accounting import Accountant


class SecAgg(Aggregator):
    """Shamir-based secure aggregation that survives dropouts: complete graph, or SecAgg+ with k neighbours.

    threshold: t as an int, a fraction of the share holders (the k + 1 of SecAgg+, or all n), or
    None (2/3 of them). neighbors: None (complete graph, Bonawitz et al.), an int k (random
    k-regular Harary graph, Bell et al.), or "auto" (k and t from graph.choose_parameters at
    dropout_rate and corrupt_fraction; the complete graph where n is too small for a sparse one).

    signed_keys (default True) and consistency_check (default: the value of signed_keys) select
    the threat model. The defaults are Bonawitz's actively secure variant: every advertised key is
    signed with the client's Ed25519 identity key and checked by each neighbour it is relayed to, and
    the survivor list is signed by t holders, whose signatures every holder checks. A malicious
    server then learns an individual update only with min(t-1, 2t-h) colluding holders of that
    client (see securefl.mpc.secagg; h = n or k + 1; `colluders_needed`). signed_keys=False is
    Bonawitz's honest-but-curious variant (the threat model of Flower's SecAgg+), with no Ed25519
    operation and no consistency check (which needs signed keys). It is private only against a
    server that follows the protocol (then t colluding holders are needed); it gives up:
      * key substitution: the server relays the public keys, so a malicious one can swap a peer's
        keys for its own, open the shares encrypted to that "peer" and agree the pairwise masks
        itself; with t such shares of b_u and of s_u it unmasks client u's input alone;
      * honest dropout reports: the server can tell some holders that u dropped (to collect shares
        of u's masking key) and others that it survived (shares of b_u), and unmask x_u.
    Kept in both modes: parameters and graph from each party's own configuration, the setup digest
    in every share's associated data and commitment, the replay guard, share commitments naming a
    cheating dealer or holder, keys bound to the session and ids through HKDF, the commitment to b_u
    and the public-key check of reconstructed keys (a wrong reconstruction raises, never a wrong
    sum), and each client's refusal to reveal both shares of one peer or to accept fewer than t
    holders. Sums assume clients encode honestly (input validity is future work).

    The simulation plays the deployment: it keeps its clients' identities and party objects (with
    their replay guards) across aggregate() calls, runs them as rounds 1, 2, ... of one session, and
    draws each configuration's graph seed once (the trusted setup, RoundConfig.setup_seed).
    """

    scheme = "secagg"
    stages = STAGES
    input_stage = INPUT_STAGE.label
    threat_model = ("a malicious server together with min(t-1, 2t-h) colluding share holders of the target "
                    "(h = n, or k+1 in SecAgg+): t-1 when it routes the target only colluders' keys (the target's "
                    "own share completes t), 2t-h when it shows two groups of honest holders different survivor "
                    "lists (colluders sign both); an honest-but-curious server needs t. Sums assume clients encode "
                    "honestly")

    def __init__(self, threshold: int | float | None = None, neighbors: int | str | None = None,
                 consistency_check: bool | None = None, dropout_rate: float = 0.1, corrupt_fraction: float = 0.1,
                 signed_keys: bool = True, **kwargs):
        super().__init__(**kwargs)
        self._options = normalize_options({"threshold": threshold, "neighbors": neighbors,
                                           "consistency_check": consistency_check, "dropout_rate": dropout_rate,
                                           "corrupt_fraction": corrupt_fraction, "signed_keys": signed_keys})
        if not signed_keys:
            self.threat_model = ("an honest-but-curious server together with t colluding share holders of the "
                                 "target; a malicious server alone (signed_keys=False: it can substitute keys)")

    def options(self) -> dict:
        return dict(self._options)

    def _parameters(self, n_clients: int) -> tuple[int, int]:
        o = self._options
        return resolve_parameters(n_clients, o["threshold"], o["neighbors"], o["dropout_rate"], o["corrupt_fraction"])

    def roles_view(self, params: Mapping[str, object]) -> dict[str, RoleView]:
        c, t, h = (int(params[k]) for k in ("colluders_needed", "threshold", "share_holders"))
        holders = f"{c} colluding share holders of the target (min(t-1, 2t-h), t={t}, h={h})"
        roles = {"server": RoleView("the aggregate and who survived; masked inputs look uniform", holders, "sum"),
                 f"server + {c} share holders": RoleView("one target's update (the server unmasks it)", "-", "updates"),
                 "client": RoleView("its own update; its neighbours' keys and the shares dealt to it",
                                    f"the server and {c} share holders of the target", "nothing")}
        if not params.get("signed_keys", True):  # a malicious server substitutes keys: it needs nobody
            roles["server"] = RoleView("the aggregate; an honest-but-curious one nothing more",
                                       f"nobody if malicious (signed_keys=False: it substitutes keys); if it follows "
                                       f"the protocol, {t} colluding share holders", "sum")
            roles["malicious server"] = RoleView("any one client's update", "-", "updates")
            roles.pop(f"server + {c} share holders")
        return roles

    def colluders_needed(self, n_clients: int) -> int:
        """Fewest colluding holders of a client with which a malicious server learns its update (n clients)."""
        k, t = self._parameters(n_clients)
        return colluders_needed(k + 1, t)

    def scales_in_n(self) -> bool:
        """SecAgg+ (neighbors set): a client shares with k ~ log n neighbours, not with every other client."""
        return self._options["neighbors"] is not None

    @classmethod
    def floor(cls, n: int, m: int, survivors: int, params: Mapping[str, Any],
              traffic: Mapping[str, tuple[float, float]]) -> dict[str, Floor]:
        """A client expands and adds its self mask and k pairwise masks. The server removes every survivor's self
        mask and, for each client dropped after sharing its keys, its pairwise masks with its surviving neighbours
        (k * survivors / (n - 1) of them on average)."""
        k, vec = int(params["neighbors"]), cls.ring_vector_bytes(m, params)
        server_prg = (survivors + (n - survivors) * k * survivors / max(n - 1, 1)) * vec
        return {"client": ((k + 1) * vec, (k + 1) * vec, "expand+add"),
                "server": (server_prg, server_prg + survivors * vec, "expand+add")}

    def min_survivors(self, n_clients: int) -> int:
        """A round that finishes holds the inputs of at least t clients (distributed DP noise is scaled for t;
        the simulation's configurations set no larger minimum batch)."""
        return self._parameters(n_clients)[1]

    @classmethod
    def party(cls, config: RoundConfig, identity: Identity, state: bytes | None = None) -> Client:
        """The SecAgg client of `identity` under its own `config`, fresh or restored from its `state_dict()`."""
        return Client(config, identity, state)

    @classmethod
    def coordinator(cls, config: RoundConfig, session: bytes, round_: int, clients: Sequence[int] | None = None,
                    accountant: Accountant | None = None) -> Server:
        """The server of round `round_` of `session`, sending the setup to `clients` (default: every client);
        with DP, it charges the released round to `accountant` (a fresh one when not given)."""
        return Server(config, session, round_, clients, accountant)
