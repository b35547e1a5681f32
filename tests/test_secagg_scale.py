"""What lets SecAgg+ reach 10,000 simulated clients: one shared graph per deployment, cheap id-set checks, and the
batched share decoding of masked_input, each still refusing what it refused before."""

from __future__ import annotations

import gc
import os
import weakref

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from securefl.crypto import shamir
from securefl.mpc.secagg import messages as msg
from securefl.mpc.secagg.graph import Graph
from securefl.mpc.secagg.params import Policy
from securefl.wire import Kind
from tests.secagg_parties import Deployment
from tests.test_attacks_secagg import _all_shares, _only_while, fed, reported


def test_shared_graph_is_built_once_and_equals_a_fresh_one():
    seed, binding = os.urandom(32), os.urandom(32)
    a, b = Graph.shared(60, 8, seed, binding), Graph.shared(60, 8, seed, binding)
    assert a is b
    fresh = Graph(60, 8, seed, binding)
    assert np.array_equal(a.nbrs, fresh.nbrs) and a.digest == fresh.digest
    assert Graph.shared(60, 8, os.urandom(32), binding) is not a
    assert Graph.shared(60, 8, seed, os.urandom(32)).digest != a.digest


def test_shared_graph_is_freed_once_no_party_holds_it():
    dep = Deployment(n=12, m=4, scheme="secagg+", neighbors=4, threshold=3)
    held = weakref.ref(dep.policy.graph)
    del dep
    gc.collect()
    assert held() is None


def test_shared_graph_cannot_be_altered_by_a_party():
    g = Graph.shared(30, 4, os.urandom(32), os.urandom(32))
    for array in (g.nbrs, g.neighbors(3), g._pos, g._is_offset):
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 1


def test_clients_of_one_configuration_hold_one_graph():
    dep = Deployment(n=12, m=4, scheme="secagg+", neighbors=4, threshold=3)
    graphs = {id(c.policy.graph) for c in dep.clients.values()}
    assert graphs == {id(dep.policy.graph)}
    assert Policy.from_config(dep.config).graph is dep.policy.graph


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 40), max_size=12), st.sets(st.integers(0, 40), max_size=12))
def test_members_is_isin_on_sorted_ids(a, b):
    a, b = np.array(a, np.int64), np.array(sorted(b), np.int64)
    assert np.array_equal(msg.members(a, b), np.isin(a, b))


def test_a_dealer_of_a_share_outside_the_field_is_reported_by_its_holder(monkeypatch):
    """client/0 deals holder 1 a share element p (outside GF(p)) under a matching commitment: holder 1 reports it."""
    dep, f = fed(n=6, t=4)

    def off_field(honest):
        def split(secrets, threshold, holders):
            out = honest(secrets, threshold, holders)
            out[1, 0] = np.uint64(shamir.P)
            return out
        return split

    _only_while(monkeypatch, dep.clients[0], Kind.SECAGG_PEER_KEYS, shamir, "split_secrets", off_field)
    _, cts = _all_shares(dep, f)
    assert reported(f, dep.answer(1, f.bundle(1, [0, 2, 3, 4, 5], cts)), 1) == [0]
    assert reported(f, dep.answer(2, f.bundle(2, [0, 1, 3, 4, 5], cts)), 2) == []  # its other shares are in the field
