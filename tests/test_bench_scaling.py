"""The full bench's SecAgg+ scaling sweep reaches 10,000 clients at m = 1e4; only its own cells get its budget."""

from __future__ import annotations

from securefl.bench import config as presets
from securefl.bench import harness


def test_full_preset_sweeps_secagg_plus_to_10000_clients_at_m_1e4():
    full = presets.preset(False)
    assert max(full.scaling_ns) == 10_000 and full.scaling_m == 10_000
    points = {(p.n, p.m): p for p in harness.plan(full, harness.scheme_names(full))}
    top = points[10_000, 10_000]
    assert top.sweeps == {"scaling"} and "secagg+" in top.schemes and "secagg" not in top.schemes
    assert full.cell_budget(top.sweeps) == full.scaling_cell_budget_s > full.cell_budget_s


def test_the_scaling_budget_is_only_for_points_of_the_scaling_sweep_alone():
    full = presets.preset(False)
    shared = {(p.n, p.m): p for p in harness.plan(full, harness.scheme_names(full))}[100, 10_000]
    assert shared.sweeps == {"m", "scaling"}  # also a point of the sweep in m: the ordinary budget
    assert full.cell_budget(shared.sweeps) == full.cell_budget_s
    quick = presets.preset(True)  # no scaling budget of its own: the cell budget everywhere
    assert quick.cell_budget({"scaling"}) == quick.cell_budget({"n"}) == quick.cell_budget_s
    assert presets.preset(False, scaling_cell_budget_s=5.0).cell_budget({"scaling"}) == 5.0
