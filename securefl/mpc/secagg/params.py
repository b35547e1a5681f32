"""SecAgg's parameters: the stages of a round, the scheme options, and the `Policy` every party derives
from its own RoundConfig (n, k, t, minimum batch, graph, threat-model flags), never from a message.
"""

from __future__ import annotations

import logging
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from securefl.errors import ConfigError
from securefl.mpc.secagg.graph import Graph, choose_parameters
from securefl.session import RoundConfig
from securefl.wire import Kind

SCHEMES = ("secagg", "secagg+")  # the RoundConfig scheme names this package serves
L_SETUP = b"securefl/secagg/setup"


class Stage(IntEnum):
    """The stages of a round, in order: the server sends each stage's request and takes the replies; a
    client answers them in this order only. `label` is the stage's name in `dropped` and in reports."""

    ADVERTISE_KEYS = 0
    SHARE_KEYS = 1
    MASKED_INPUT = 2
    CONSISTENCY_CHECK = 3
    UNMASKING = 4

    @property
    def label(self) -> str:
        return self.name.lower()


STAGES = tuple(s.label for s in Stage)
INPUT_STAGE = Stage.MASKED_INPUT  # the stage at which a client asks for its update
REQUEST = {  # what the server sends at each stage
    Stage.ADVERTISE_KEYS: Kind.SECAGG_SETUP,
    Stage.SHARE_KEYS: Kind.SECAGG_PEER_KEYS,
    Stage.MASKED_INPUT: Kind.SECAGG_SHARE_BUNDLE,
    Stage.CONSISTENCY_CHECK: Kind.SECAGG_SURVIVORS,
    Stage.UNMASKING: Kind.SECAGG_UNMASK_REQUEST,
}
REPLY = {  # what a client answers at each stage
    Stage.ADVERTISE_KEYS: Kind.SECAGG_KEYS,
    Stage.SHARE_KEYS: Kind.SECAGG_SHARES,
    Stage.MASKED_INPUT: Kind.SECAGG_MASKED_INPUT,
    Stage.CONSISTENCY_CHECK: Kind.SECAGG_SURVIVOR_SIGNATURE,
    Stage.UNMASKING: Kind.SECAGG_REVEAL,
}


class ShareKind(IntEnum):
    """The two secrets a client Shamir-shares among its holders."""

    SELF_MASK = 0  # b_u, the seed of its self mask
    MASKING_KEY = 1  # the private X25519 key its pairwise masks are agreed with

    @property
    def label(self) -> str:
        return ("self-mask seed", "masking key")[self]


# the scheme options (RoundConfig.options, JSON scalars) and their defaults
DEFAULTS: dict[str, object] = {"threshold": None, "neighbors": None, "dropout_rate": 0.1, "corrupt_fraction": 0.1,
                               "signed_keys": True, "consistency_check": None}
OPTIONS = frozenset(DEFAULTS)

log = logging.getLogger("securefl.secagg")
_said: set[tuple] = set()


def _say_once(key: tuple, message: str) -> None:
    """Log a notice once per process and key (a configuration that repeats every round)."""
    if key not in _said:
        _said.add(key)
        log.warning(message)


def colluders_needed(holders: int, t: int) -> int:
    """Fewest colluding share holders of a target with which a malicious server learns its input:
    min(t-1, 2t-h) for h holders and threshold t (see securefl.mpc.secagg)."""
    return min(t - 1, 2 * t - holders)


def _is_int(x: object) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _check_rates(dropout_rate: object, corrupt_fraction: object) -> None:
    rates = (dropout_rate, corrupt_fraction)
    if not all(isinstance(r, (int, float)) and not isinstance(r, bool) for r in rates) or not (
            0 <= dropout_rate < 1 and 0 <= corrupt_fraction < 1 and dropout_rate + corrupt_fraction < 1):
        raise ConfigError("dropout_rate and corrupt_fraction must be numbers in [0, 1) with a sum below 1, got "
                          f"{dropout_rate!r}, {corrupt_fraction!r}")


def _check_threshold(threshold: object) -> None:
    if threshold is None or (_is_int(threshold) and threshold >= 1):
        return
    if isinstance(threshold, float) and 0 < threshold <= 1:
        return
    raise ConfigError(f"threshold must be an int >= 1, a float in (0, 1] or None, got {threshold!r}")


def _check_neighbors(neighbors: object) -> None:
    if neighbors is None or neighbors == "auto" or (_is_int(neighbors) and neighbors >= 2):
        return
    raise ConfigError(f"neighbors must be None (complete graph), 'auto' or an integer >= 2, got {neighbors!r}")


def check_modes(signed_keys: object, consistency_check: object) -> None:
    """ConfigError for option values that are not booleans, or a consistency check without signed keys."""
    if not isinstance(signed_keys, bool) or not isinstance(consistency_check, bool):
        raise ConfigError(f"signed_keys and consistency_check must be booleans, got {signed_keys!r}, "
                          f"{consistency_check!r}")
    if consistency_check and not signed_keys:
        raise ConfigError("consistency_check needs signed_keys: a server free to substitute unsigned keys "
                          "defeats the signed survivor list anyway")


def normalize_options(options: Mapping[str, object]) -> dict[str, object]:
    """Every scheme option, checked, with the defaults filled in (consistency_check defaults to signed_keys);
    ConfigError naming a wrong or unknown option. Checks that need n are resolve_parameters'."""
    extra = set(options) - OPTIONS
    if extra:
        raise ConfigError(f"secagg takes no option {', '.join(sorted(extra))} "
                          f"(its options: {', '.join(sorted(OPTIONS))})")
    o = {**DEFAULTS, **options}
    if o["consistency_check"] is None:
        o["consistency_check"] = o["signed_keys"]
    check_modes(o["signed_keys"], o["consistency_check"])
    _check_threshold(o["threshold"])
    _check_neighbors(o["neighbors"])
    _check_rates(o["dropout_rate"], o["corrupt_fraction"])
    for name in ("threshold", "neighbors"):
        o[name] = int(o[name]) if _is_int(o[name]) else o[name]  # JSON scalars: numpy ints become ints
    return o


def resolve_parameters(
    n: int,
    threshold: int | float | None,
    neighbors: int | str | None,
    dropout_rate: float = 0.1,
    corrupt_fraction: float = 0.1,
) -> tuple[int, int]:
    """(k, t) for n clients: k neighbours (n - 1: complete graph) and t of the k + 1 share holders.

    threshold None: 2/3 of the holders (or the finder's t for neighbors="auto"); a float in (0, 1]:
    that fraction of the holders, rounded up; an int: t itself. 2t must exceed the holder count, so
    no two disjoint groups of t holders exist to be shown different survivor lists.
    neighbors="auto": k and t from graph.choose_parameters at the round's dropout_rate and
    corrupt_fraction; where no (k, t) meets its bounds (n too small for a sparse graph to help, or
    rates too high) the complete graph is used, and said once through the "securefl" logger.
    """
    _check_threshold(threshold)
    _check_neighbors(neighbors)
    fallback = False
    if neighbors == "auto":
        _check_rates(dropout_rate, corrupt_fraction)
        try:
            k, t_auto = choose_parameters(n, dropout_rate, corrupt_fraction)
        except ConfigError:
            k, t_auto, fallback = n - 1, None, True
    elif neighbors is None:
        k, t_auto = n - 1, None
    else:
        k, t_auto = min(int(neighbors), n - 1), None
    h = k + 1
    if threshold is None:
        t = t_auto if t_auto is not None else math.ceil(2 * h / 3)
    elif isinstance(threshold, float):
        t = math.ceil(threshold * h - 1e-9)
    else:
        t = int(threshold)
    if not 1 <= t <= h or 2 * t <= h:
        raise ConfigError(f"threshold t={t} must satisfy {h} / 2 < t <= {h} (share holders: {h})")
    if fallback:
        _say_once(("complete", n, dropout_rate, corrupt_fraction, t), (
            f"SecAgg+ (neighbors='auto'): no sparse graph meets 2^-40 security and 2^-20 correctness for n={n}, "
            f"dropout_rate={dropout_rate}, corrupt_fraction={corrupt_fraction}; using the complete graph (every "
            f"client shares with the other {n - 1}), t={t}: a malicious server needs {colluders_needed(h, t)} "
            "colluding clients"))
    return k, t


SETUP = struct.Struct("<IIIIBQBB")  # the setup fields a client compares with its own view, in this order
SETUP_FIELDS = ("n", "neighbors k", "threshold t", "minimum batch", "ring bits", "vector length",
                "consistency_check", "signed_keys")


@dataclass(frozen=True, eq=False)
class Policy:
    """What a SecAgg party's security rests on, derived from its own RoundConfig alone (`from_config`).

    n: the clients of the pinned directory; k, t: from the scheme options (resolve_parameters);
    min_batch: the fewest inputs any party lets into a sum: max(t, config.min_clients) on the complete
    graph, where every client checks the whole signed survivor list; t in SecAgg+, where a client can
    check only that its own holders survived (a malicious server may name survivors it never heard
    from elsewhere, and release the sum of a clique of t clients), so a SecAgg+ configuration that
    asks for a larger minimum batch is refused rather than promised; graph: from config.setup_seed with
    the directory bound in (see securefl.mpc.secagg.graph); signed_keys, consistency_check: the threat
    model (see SecAgg).
    `setup_digest` binds all of it, the whole configuration's fingerprint, the ring, the vector
    length, the session and the round: it is in every signature, share commitment and share AAD.
    """

    config: RoundConfig = field(repr=False)
    n: int
    k: int
    t: int
    min_batch: int
    signed_keys: bool
    consistency_check: bool
    graph: Graph = field(repr=False)

    @classmethod
    def from_config(cls, config: RoundConfig) -> Policy:
        """The policy of a deployment's RoundConfig (scheme "secagg" or "secagg+"; missing options take
        SecAgg's defaults, whatever the scheme name)."""
        if not isinstance(config, RoundConfig):
            raise ConfigError("secagg: a party is built from a securefl.session.RoundConfig")
        if config.scheme not in SCHEMES:
            raise ConfigError(f"secagg: the configuration is for scheme {config.scheme!r}, not secagg")
        o = normalize_options(config.options)
        n = config.n
        k, t = resolve_parameters(n, o["threshold"], o["neighbors"], o["dropout_rate"], o["corrupt_fraction"])
        graph = Graph.shared(n, k, config.setup_seed, config.directory.fingerprint)
        if not graph.complete and config.min_clients > t:
            raise ConfigError(f"secagg+: a client checks only its own {graph.k} neighbours, so a malicious server can "
                              f"release a sum of t={t} clients; min_clients={config.min_clients} cannot be "
                              f"enforced (use the complete graph, or min_clients <= t)")
        min_batch = max(t, config.min_clients)
        if min_batch > n:
            raise ConfigError(f"secagg: a minimum batch of {min_batch} cannot be met by {n} clients")
        return cls(config, n, graph.k, t, min_batch, o["signed_keys"], o["consistency_check"], graph)

    @property
    def stages(self) -> tuple[Stage, ...]:
        """The stages a round runs (no consistency check when it is off)."""
        return tuple(s for s in Stage if self.consistency_check or s != Stage.CONSISTENCY_CHECK)

    def next_stage(self, stage: Stage) -> Stage | None:
        """The stage after `stage` in a round, None after the last."""
        stages = self.stages
        i = stages.index(stage) + 1
        return stages[i] if i < len(stages) else None

    @property
    def record_bytes(self) -> int:
        """Bytes of one advertised key record: two X25519 keys, the self-mask commitment, and its signature."""
        return 3 * 32 + (64 if self.signed_keys else 0)

    def setup_fields(self, ring_bits: int, length: int) -> tuple[int, ...]:
        """The values of SETUP_FIELDS under this policy."""
        return (self.n, self.k, self.t, self.min_batch, ring_bits, length, int(self.consistency_check),
                int(self.signed_keys))

    def setup_digest(self, session: bytes, round_: int, ring_bits: int, length: int) -> bytes:
        """The hash of one round's whole setup: the configuration (through its fingerprint), the resolved
        parameters, the graph, the ring, the vector length, the session and the round."""
        return self.config.context(session, round_).digest(L_SETUP, SETUP.pack(*self.setup_fields(ring_bits, length)),
                                                          self.graph.digest)
