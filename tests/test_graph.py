"""SecAgg+ graphs (random Harary) and the (k, t) parameter finder."""

from __future__ import annotations

import math
import os
import re

import numpy as np
import pytest
from scipy.stats import binom

from securefl.errors import ConfigError
from securefl.mpc.secagg import graph
from securefl.mpc.secagg.graph import Graph, choose_parameters


def _connected(nbrs: np.ndarray, alive: np.ndarray) -> bool:
    start = int(np.flatnonzero(alive)[0])
    seen, stack = {start}, [start]
    while stack:
        u = stack.pop()
        for v in nbrs[u].tolist():
            if alive[v] and v not in seen:
                seen.add(v)
                stack.append(v)
    return len(seen) == int(alive.sum())


@pytest.mark.parametrize("n,k", [(10, 2), (10, 4), (11, 6), (50, 10), (50, 11), (200, 30)])
def test_harary_graph_is_regular_symmetric_and_connected(n, k):
    g = Graph(n, k, os.urandom(32), os.urandom(16))
    assert not g.complete and g.nbrs.shape == (n, k)
    adj = np.zeros((n, n), bool)
    adj[np.repeat(np.arange(n), k), g.nbrs.reshape(-1)] = True
    assert (adj == adj.T).all() and not adj.diagonal().any()
    assert (adj.sum(1) == k).all()
    assert _connected(g.nbrs, np.ones(n, bool))
    u, v = np.divmod(np.arange(n * n), n)
    assert np.array_equal(g.adjacent(u, v), adj.reshape(-1))
    assert g.holders(3).tolist() == sorted([*g.neighbors(3).tolist(), 3])


def test_graph_is_a_function_of_seed_and_binding():
    seed, binding = os.urandom(32), os.urandom(32)
    a, b = Graph(40, 6, seed, binding), Graph(40, 6, seed, binding)
    assert np.array_equal(a.nbrs, b.nbrs) and a.digest == b.digest
    for other in (Graph(40, 6, os.urandom(32), binding), Graph(40, 6, seed, os.urandom(32))):
        assert not np.array_equal(a.nbrs, other.nbrs) and a.digest != other.digest
    assert Graph(40, 8, seed, binding).digest != a.digest


def test_complete_graph_digest_names_only_n():
    """Every seed gives the same complete graph: its digest (bound into every setup) depends on n alone."""
    a, b = Graph(7, 6, os.urandom(32), os.urandom(32)), Graph(7, 9, os.urandom(32), os.urandom(32))
    assert a.digest == b.digest != Graph(8, 7, os.urandom(32), os.urandom(32)).digest


@pytest.mark.parametrize("n,k", [(5, 4), (5, 9), (1, 0)])
def test_large_degree_means_complete_graph(n, k):
    g = Graph(n, k, os.urandom(32), os.urandom(16))
    assert g.complete and g.k == n - 1
    for u in range(n):
        assert g.neighbors(u).tolist() == [v for v in range(n) if v != u]


@pytest.mark.parametrize("n,k", [(11, 5), (10, 1), (10, 0)])
def test_impossible_graphs_are_refused(n, k):
    with pytest.raises(ConfigError):
        Graph(n, k, os.urandom(32), os.urandom(16))


@pytest.mark.parametrize("n,delta,gamma", [(100, 0.05, 0.05), (1000, 0.1, 0.1), (5000, 0.05, 0.05)])
def test_chosen_parameters_meet_the_bounds(n, delta, gamma):
    k, t = choose_parameters(n, delta, gamma)
    sec, cor = math.log2(n) + 40, math.log2(n) + 20
    assert 2 * t > k + 1 and t <= k + 1
    assert binom.sf(2 * t - k - 2, k, gamma) <= 2**-sec
    assert binom.cdf(t - 2, k, 1 - delta) <= 2**-cor
    if k < n - 1:
        assert (k // 2) * -math.log2(delta + gamma) >= sec
        # k is minimal: the next smaller even degree admits no threshold
        k2 = k - 2
        ok = [
            binom.sf(2 * s - k2 - 2, k2, gamma) <= 2**-sec and binom.cdf(s - 2, k2, 1 - delta) <= 2**-cor
            for s in range(k2 // 2 + 1, k2 + 2)
        ]
        assert not any(ok) or (k2 // 2) * -math.log2(delta + gamma) < sec


def test_degree_grows_like_log_n():
    ks = [choose_parameters(n, 0.05, 0.05)[0] for n in (1000, 10_000, 100_000)]
    assert ks[0] <= ks[1] <= ks[2] < 2 * ks[0]


def test_docstring_table_matches_the_finder():
    doc = graph.choose_parameters.__doc__
    header = re.search(r"n\s+((?:\([\d.]+, [\d.]+\)\s+)+)", doc).group(1)
    cols = [tuple(map(float, c)) for c in re.findall(r"\(([\d.]+), ([\d.]+)\)", header)]
    rows = re.findall(r"^\s+(\d+)\s{2,}(.+)$", doc, re.M)
    assert len(rows) >= 4 and len(cols) >= 4
    for n, rest in rows:
        cells = re.findall(r"\((\d+), (\d+)\)|none", rest)
        assert len(cells) == len(cols)
        for (dr, cf), cell in zip(cols, cells, strict=True):
            if cell == ("", ""):
                with pytest.raises(ConfigError):
                    choose_parameters(int(n), dr, cf)
            else:
                assert choose_parameters(int(n), dr, cf) == (int(cell[0]), int(cell[1]))


def test_finder_refuses_bad_rates():
    with pytest.raises(ConfigError):
        choose_parameters(100, 0.6, 0.5)
