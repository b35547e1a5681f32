"""SecAgg+ communication graphs and the (k, t) parameter choice of Bell et al. (CCS 2020).

The graph is a random k-regular Harary graph: a 32-byte seed is expanded (HKDF + AES-CTR, with a
binding value such as the pinned directory's digest) into a permutation of the n clients placed
on a ring; each client is joined to the k/2 clients on either side (and, for odd k, to the one
opposite, which needs n even). k >= n - 1 gives the complete graph of Bonawitz et al. A client's
share holders are its neighbours and itself (k + 1 parties).

Whose randomness. Bell et al. analyse the graph as random and independent of which clients the
adversary corrupts; in their semi-honest protocol the server samples it, which a malicious server
abuses (choosing or grinding neighbourhoods, or showing clients different graphs). securefl
implements the trusted-setup option: the seed is drawn from the OS CSPRNG (`secrets`) when the
deployment's configuration is created (RoundConfig.setup_seed) and reaches every client inside that
configuration (`secagg.Policy.from_config`), and the pinned directory is bound into its expansion.
Nothing of a round (session id, round number) enters it, so the server has nothing to choose or
grind. Whoever creates the configuration must (1) not be, or collude with, the server (else it could
redraw the seed until the graph suits it); (2) fix the directory before drawing the seed, with
corruptions independent of the graph (static corruption, as Bell et al. assume): the seed is public
to every party, so create a new configuration (a new seed) when the client population changes; (3)
deliver the same configuration to every client over a channel the server cannot alter. The other two
options -- a value derived from the directory and a session id that clients contribute to, or a
commit-then-reveal among clients -- cost an extra round trip per round and are not implemented.
"""

from __future__ import annotations

import hashlib
import math
import struct
import weakref
from functools import lru_cache

import numpy as np

from securefl.crypto.prg import Expander, stream_key
from securefl.errors import ConfigError

_LABEL = b"securefl/secagg/graph"
_SHARED: weakref.WeakValueDictionary[tuple, Graph] = weakref.WeakValueDictionary()  # Graph.shared's graphs in use


class Graph:
    """The neighbour relation of a deployment: nbrs[u] holds u's k neighbours, sorted.

    seed: 32 bytes of trusted-setup randomness; binding: bytes bound into its expansion (the
    digest of the pinned directory), so one seed gives unrelated graphs for different directories.
    """

    def __init__(self, n: int, k: int, seed: bytes, binding: bytes):
        if n < 1:
            raise ConfigError(f"a graph needs at least one client, got n={n}")
        self.n = n
        self.complete = k >= n - 1
        self.k = n - 1 if self.complete else k
        if self.complete:
            offsets = np.arange(1, n)
        else:
            if k < 2:
                raise ConfigError(f"neighbors must be at least 2, got {k}")
            if k % 2 and n % 2:
                raise ConfigError(f"a {k}-regular graph on {n} clients does not exist (odd k needs even n)")
            half = np.arange(1, k // 2 + 1)
            offsets = np.concatenate([half, -half] + ([np.array([n // 2])] if k % 2 else []))
        words = Expander(n, np.uint64).expand(stream_key(seed, _LABEL, binding, n, self.k))
        order = np.argsort(words, kind="stable")  # ring position -> client
        pos = np.empty(n, np.int64)
        pos[order] = np.arange(n)
        nbrs = order[(pos[:, None] + offsets[None, :]) % n]
        nbrs.sort(axis=1)
        self.nbrs, self._pos = nbrs, pos
        ring = b"complete" if self.complete else np.ascontiguousarray(order, "<i8").tobytes()
        self.digest = hashlib.sha256(_LABEL + struct.pack("<QQ", n, self.k) + ring).digest()  # what setups bind
        self._is_offset = np.zeros(n, bool)
        self._is_offset[offsets % n] = True
        for a in (self.nbrs, self._pos, self._is_offset):
            a.flags.writeable = False  # one Graph may serve many parties (`shared`): nobody alters it

    @classmethod
    def shared(cls, n: int, k: int, seed: bytes, binding: bytes) -> Graph:
        """The graph of (n, k, seed, binding), built once and reused while any party holds it: it is public and
        a function of these inputs alone, so the parties of one simulated deployment need not hold n copies of
        its n x k neighbour table (which would grow as n^2 k)."""
        key = (int(n), int(k), bytes(seed), bytes(binding))
        graph = _SHARED.get(key)
        if graph is None:
            graph = _SHARED[key] = cls(*key)
        return graph

    def neighbors(self, u: int) -> np.ndarray:
        """u's neighbours (not u itself), sorted."""
        return self.nbrs[u]

    def adjacent(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Elementwise: whether v[i] is a neighbour of u[i] (vectorised, no neighbour lists)."""
        return self._is_offset[(self._pos[v] - self._pos[u]) % self.n]

    def holders(self, u: int) -> np.ndarray:
        """The parties holding shares of u's secrets: its neighbours and itself, sorted."""
        return np.sort(np.append(self.nbrs[u], u))


@lru_cache(maxsize=256)
def choose_parameters(
    n: int,
    dropout_rate: float,
    corrupt_fraction: float,
    security_bits: int = 40,
    correctness_bits: int = 20,
) -> tuple[int, int]:
    """(k, t) for SecAgg+ on n clients, following the conditions of Bell et al. 2020.

    k is the smallest even degree (or n - 1: the complete graph) for which some threshold t
    meets all of, with union bounds over the n clients:

    * correctness (failure <= 2^-correctness_bits): every client keeps >= t live share holders
      when each neighbour drops independently with probability dropout_rate:
      n * P[1 + Bin(k, 1 - dropout_rate) < t];
    * no client's masks are both revealed (<= 2^-security_bits): honest holders reveal one kind of
      share per client, so a server with c corrupt holders gets both only if 2t <= k + 1 + c:
      n * P[Bin(k, corrupt_fraction) >= 2t - k - 1];
    * the honest live clients stay connected, so the server learns only the total: a gap of k/2
      consecutive corrupt-or-dropped clients on the ring is needed to cut it:
      n * (corrupt_fraction + dropout_rate)^(k/2).

    t is the smallest threshold that meets the security bound (the most dropout-tolerant one).
    Corruptions and dropouts are assumed independent of the graph's permutation. Chosen values
    (dropout_rate, corrupt_fraction) -> (k, t):

    ======  ============  ============  ============  ============  ============
    n       (0.05, 0.05)  (0.1, 0.05)   (0.1, 0.1)    (0.2, 0.1)    (0.1, 0.2)
    ======  ============  ============  ============  ============  ============
    100     (48, 35)      (78, 53)      (96, 68)      none          none
    1000    (54, 39)      (86, 58)      (108, 76)     (252, 162)    (164, 122)
    5000    (60, 43)      (88, 59)      (118, 83)     (270, 173)    (178, 132)
    10000   (60, 43)      (94, 63)      (120, 84)     (278, 178)    (182, 135)
    ======  ============  ============  ============  ============  ============
    """
    if n < 1:
        raise ConfigError(f"n must be >= 1, got {n}")
    if not (0 <= dropout_rate < 1 and 0 <= corrupt_fraction < 1 and dropout_rate + corrupt_fraction < 1):
        raise ConfigError("dropout_rate and corrupt_fraction must be in [0, 1) with a sum below 1")
    from scipy.stats import binom

    sec = math.log2(n) + security_bits
    cor = math.log2(n) + correctness_bits
    bad = corrupt_fraction + dropout_rate
    for k in [*range(2, n - 1, 2), n - 1]:
        if k < n - 1 and bad > 0 and (k // 2) * -math.log2(bad) < sec:
            continue
        ts = np.arange(k // 2 + 1, k + 2)  # 2t > k + 1 is necessary even with no corrupt client
        leak = binom.logsf(2 * ts - k - 2, k, corrupt_fraction) / math.log(2)  # log2 P[Bin >= 2t-k-1]
        fail = binom.logcdf(ts - 2, k, 1 - dropout_rate) / math.log(2)  # log2 P[1 + Bin < t]
        ok = (leak <= -sec) & (fail <= -cor)
        if ok.any():
            return k, int(ts[np.argmax(ok)])
    raise ConfigError(
        f"no (k, t) meets 2^-{security_bits} security and 2^-{correctness_bits} correctness for n={n}, "
        f"dropout_rate={dropout_rate}, corrupt_fraction={corrupt_fraction}"
    )
