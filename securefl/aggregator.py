"""The one interface every scheme implements: aggregate(updates, weights, dropped) -> Result."""

from __future__ import annotations

import inspect
import math
import secrets
import sys
from abc import ABC
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from securefl.codec import FixedPoint, Layout, flatten_all
from securefl.errors import DropoutError, InputError
from securefl.keys import Directory, Identity, create_identities
from securefl.report import Report, Result
from securefl.session import ModelSpec, RoundConfig, new_session, resolve_min_clients
from securefl.simulation import Simulation
from securefl.wire import PartyId

if TYPE_CHECKING:
    from securefl.dp.accounting import Accountant
    from securefl.dp.mechanisms import Mechanism
    from securefl.protocol import Coordinator, Party, Totals


Floor = tuple[float, float, str]  # one party kind's floor: (AES-CTR keystream bytes, ring bytes added, what it is)


def init_keywords(cls: type) -> frozenset[str]:
    """Keyword parameters of cls.__init__, and of each base's __init__ it hands **kwargs on to."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"}
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return frozenset(names)


@dataclass
class Federation:
    """The simulation's deployment: a configuration, every party's identity and long-lived party, and
    the session's round counter (a new configuration starts a new session)."""

    config: RoundConfig
    identities: dict[PartyId, Identity]
    parties: dict[PartyId, Party]
    session: bytes
    round: int = 0


def check_weights(weights: object, n: int, weight_bound: float | None) -> tuple[np.ndarray, float]:
    """Validate weights; return them divided by the weight bound, and the bound."""
    if weights is None:
        w = np.ones(n)
    else:
        torch = sys.modules.get("torch")  # weights can be a tensor only if torch is loaded
        if torch is not None and isinstance(weights, torch.Tensor):
            weights = weights.detach().cpu().tolist()
        if isinstance(weights, (str, bytes, Mapping)) or not isinstance(weights, (Sequence, np.ndarray)):
            raise InputError(f"weights must be a sequence of {n} non-negative numbers")
        try:
            w = np.asarray(weights, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as e:
            raise InputError(f"weights must be numbers: {e}") from None
        if w.size != n:
            raise InputError(f"weights has {w.size} entries for {n} clients")
        bad = np.flatnonzero(~np.isfinite(w) | (w < 0))
        if bad.size:
            raise InputError(f"client {bad[0]}: weight {w[bad[0]]} is not a finite non-negative number")
        if w.sum() <= 0:
            raise InputError("weights sum to 0: at least one client needs a positive weight")
    bound = float(w.max()) if weight_bound is None else float(weight_bound)
    if not (bound > 0 and math.isfinite(bound)):
        raise InputError(f"weight_bound must be a positive finite number, got {weight_bound}")
    over = np.flatnonzero(w > bound)
    if over.size:
        raise InputError(f"client {over[0]}: weight {w[over[0]]} exceeds weight_bound={bound}")
    return w / bound, bound


@dataclass(frozen=True)
class RoleView:
    """What one kind of party of a scheme, or one coalition, learns of the updates (read by securefl.audit).

    sees: "nothing" (no plaintext of another client's update: shares, ciphertexts, masked words),
    "sum" (the sum of the round's included updates) or "updates" (an individual update). released:
    it sees that value only after the decoding party's central DP noise (a party that adds the noise
    itself, or sees the value before, has released=False). The audit takes each party's epsilon from it.
    """

    learns_alone: str  # what it learns on its own (a coalition: together)
    exposes_one_update: str  # who must join it to learn one client's update ("-" for a coalition that does)
    sees: Literal["nothing", "sum", "updates"]
    released: bool = False


class Aggregator(ABC):
    """Base of every scheme: validates inputs, runs the scheme's parties, rebuilds the result.

    clip: floats are clipped to [-clip, clip] before encoding (clipped values are counted in
    the report). frac_bits: fixed-point precision (2^-frac_bits per value and client).
    int_bound: largest absolute value an integer tensor may hold. weight_bound: public upper
    bound on a client's weight (default: the largest weight given). seed: reproducible
    simulation (which clients drop, test inputs); never used for keys, masks, shares, rounding or DP
    noise, which come from the OS CSPRNG. dp: a securefl.dp mechanism; every party calls it through
    the round's RoundCodec (securefl.encoding): clients clip and add their distributed noise before
    masking, sharing or encrypting; the party that decodes the sum (`output_party`) adds the central
    noise; the coordinator charges each released round to dp.accountant, and report.epsilon is its
    cumulative epsilon at dp.delta.

    `aggregate` is a simulation: it keeps a deployment (a RoundConfig, every party's identity and
    long-lived party object built by the scheme's `party()`, one session whose rounds count up) and
    runs each round through the same party objects a real deployment runs (securefl.protocol).
    """

    scheme: ClassVar[str]
    stages: ClassVar[tuple[str, ...]]
    input_stage: ClassVar[str]
    threat_model: ClassVar[str]  # one line: who could learn an individual update
    output_party: ClassVar[str] = "server"  # the party that decodes the sum (adds central DP noise)
    simulation_class: ClassVar[type[Simulation]] = Simulation  # the audit swaps in a recording one

    def __init__(
        self,
        *,
        clip: float = 8.0,
        frac_bits: int = 16,
        int_bound: int = 2**16,
        weight_bound: float | None = None,
        seed: int | None = None,
        dp: Mechanism | None = None,
    ):
        self.clip = clip
        self.frac_bits = frac_bits
        self.int_bound = int_bound
        self.weight_bound = weight_bound
        self.seed = seed
        self.dp = dp
        FixedPoint.choose(1, clip=clip, frac_bits=frac_bits, int_bound=int_bound)  # validate early

    def min_survivors(self, n_clients: int) -> int:
        """Fewest clients whose input a successful round of n_clients contains (distributed DP noise is
        scaled for it). Schemes that finish with fewer than all (SecAgg: the threshold) override it."""
        return n_clients

    def aggregate(
        self,
        updates: Sequence[object],
        weights: Sequence[float] | None = None,
        dropped: Mapping[int, str] | Sequence[int] | None = None,
    ) -> Result:
        """Simulate one secure round over `updates`; return the weighted mean, sum and report."""
        from securefl.protocol import run_round

        layout, flats = flatten_all(updates)
        w, bound = check_weights(weights, len(flats), self.weight_bound)
        n = len(flats)
        fed = self._federation(layout, n, bound)
        fed.round += 1
        sim = self.simulation_class(self.scheme, n, self.stages, self.input_stage, dropped, self.seed)
        coordinator = self.coordinator(fed.config, fed.session, fed.round,
                                       accountant=None if self.dp is None else self.dp.accountant)
        totals = run_round(coordinator, fed.parties, sim, lambda i: (flats[i], float(w[i] * bound)))
        clipped = sum(getattr(fed.parties[PartyId.client(i)], "clipped", 0) for i in totals.included)
        params = {"clip": self.clip, "frac_bits": self.frac_bits, "weight_bound": bound, "round": fed.round,
                  **totals.params}
        return self.release(layout, bound, sim, totals, clipped, params)

    # ---------------------------------------------------------------- what a scheme provides

    def options(self) -> dict:
        """The scheme's options, as they go into a RoundConfig (JSON scalars)."""
        return {}

    def min_clients_for(self, n_clients: int) -> int:
        """RoundConfig.min_clients of a deployment of n_clients (0: the scheme has no minimum batch)."""
        return 0

    def roles(self) -> tuple[int, bool]:
        """Identities the scheme needs besides its clients: (number of helpers, whether a key holder)."""
        return 0, False

    @classmethod
    def option_names(cls) -> frozenset[str]:
        """The scheme options its constructor takes beyond the Aggregator ones (clip, seed, dp, ...): the keyword
        parameters of its __init__ and of each base's it passes **kwargs to. The registry checks options against it."""
        return init_keywords(cls) - init_keywords(Aggregator)

    def scales_in_n(self) -> bool:
        """Whether a client's cost grows more slowly than the number of clients (SecAgg+'s sparse graph): the bench
        sweeps such configurations to large n."""
        return False

    @classmethod
    def floor(cls, n: int, m: int, survivors: int, params: Mapping[str, Any],
              traffic: Mapping[str, tuple[float, float]]) -> dict[str, Floor]:
        """The work no implementation of the scheme can avoid in one round of n clients (`survivors` of them in the
        sum) and m float parameters, per party kind (one party of it): the bench's hardware floor. params: the
        round's report.params; traffic: per party kind, the measured (bytes sent, bytes received) per party.
        Default, for schemes without a keystream model (the HE schemes): reading once the bytes a client sends or
        an aggregating party receives."""
        return {kind: (0.0, sent if kind == "client" else received, "read bytes once")
                for kind, (sent, received) in traffic.items()}

    @staticmethod
    def ring_vector_bytes(m: int, params: Mapping[str, Any]) -> int:
        """Bytes of one encoded update of m floats and the weight slot in the round's ring (params: report.params)."""
        return (m + 1) * int(params.get("ring_bits", 32)) // 8

    def roles_view(self, params: Mapping[str, object]) -> dict[str, RoleView]:
        """Per party kind ("server", "client", ...) and per coalition that exposes an update ("server + 2 share
        holders"): what it learns, who must collude with it, what it sees (the audit's epsilon basis), for a
        round whose report.params are `params`. Each scheme states its own; {} means not stated."""
        return {}

    @classmethod
    def party(cls, config: RoundConfig, identity: Identity, state: bytes | None = None) -> Party:
        """The scheme's party for `identity` (a client, helper or key holder), fresh or restored from `state`."""
        raise NotImplementedError

    @classmethod
    def coordinator(cls, config: RoundConfig, session: bytes, round_: int, clients: Sequence[int] | None = None,
                    accountant: Accountant | None = None) -> Coordinator:
        """The coordinator (server or leader) of round `round_`, asking `clients` (default: every client);
        with DP, released rounds are charged to `accountant` (a fresh one when not given)."""
        raise NotImplementedError

    def config(self, template: object, n_clients: int, *, directory: Directory | None = None,
               weight_bound: float | None = None) -> RoundConfig:
        """The round configuration of a deployment of this aggregator (`template`: one update or a state_dict)."""
        helpers, keyholder = self.roles()
        if directory is None:
            directory = Directory.of(create_identities(n_clients, helpers, keyholder).values())
        return RoundConfig(self.scheme, directory, ModelSpec.of(template), options=self.options(), clip=self.clip,
                           frac_bits=self.frac_bits, int_bound=self.int_bound,
                           weight_bound=float(weight_bound if weight_bound is not None else self.weight_bound or 1.0),
                           dp=None if self.dp is None else self.dp.to_dict(),
                           min_clients=self.min_clients_for(directory.clients))

    def _federation(self, layout: Layout, n: int, weight_bound: float) -> Federation:
        """The simulated deployment for n clients: kept across rounds while its configuration holds."""
        spec = ModelSpec.from_layout(layout)
        fed: Federation | None = getattr(self, "_fed", None)
        helpers, keyholder = self.roles()
        if fed is not None and (fed.config.n, fed.config.directory.helpers, fed.config.directory.has_keyholder) != (
                n, helpers, keyholder):
            fed = None
        identities = fed.identities if fed is not None else create_identities(n, helpers, keyholder)
        config = RoundConfig(self.scheme, Directory.of(identities.values()), spec, options=self.options(),
                             clip=self.clip, frac_bits=self.frac_bits, int_bound=self.int_bound,
                             weight_bound=weight_bound, dp=None if self.dp is None else self.dp.to_dict(),
                             min_clients=self.min_clients_for(n),
                             setup_seed=fed.config.setup_seed if fed is not None else secrets.token_bytes(32))
        if fed is None or fed.config != config:
            fed = Federation(config, identities, {p: self.party(config, i) for p, i in identities.items()},
                             new_session())
            self._fed = fed
        return fed

    def release(self, layout: Layout, bound: float, sim: Simulation, totals: Totals, clipped: int,
                params: dict) -> Result:
        """Mean and sum in the updates' structure, and the report, from what a coordinator released (its
        `result()`, DP noise and accounting already applied); `sim` holds the round's bytes and seconds."""
        from securefl.protocol import rebuild

        try:
            mean, total = rebuild(totals, layout, bound)
        except DropoutError as e:
            raise DropoutError(f"{self.scheme}: {e}") from None
        report: Report = sim.report(totals.included, clipped_values=clipped, epsilon=totals.epsilon,
                                    delta=None if self.dp is None else self.dp.delta, params=params)
        return Result(mean=mean, sum=total, report=report)


class MinimumBatch(Aggregator):
    """A scheme whose decoding parties (HE key holder, AdditiveSharing helpers) release only sums of at least a
    minimum batch of clients, each party from its own configuration (RoundConfig.min_clients).

    min_clients: an int >= 2, a fraction of the round's clients (at least 2), or None for half of them
    (securefl.session.resolve_min_clients).
    """

    def __init__(self, *, min_clients: int | float | None = None, **kwargs: Any):
        resolve_min_clients(1 << 30, min_clients, self.scheme)  # its type and range now; against n once n is known
        super().__init__(**kwargs)
        self.min_clients = min_clients

    def min_clients_for(self, n_clients: int) -> int:
        """RoundConfig.min_clients of a deployment of n_clients: the minimum batch its parties enforce."""
        return resolve_min_clients(n_clients, self.min_clients, self.scheme)

    def min_survivors(self, n_clients: int) -> int:
        """A round that finishes holds at least the minimum batch (distributed DP noise is sized for it)."""
        return self.min_clients_for(n_clients)
