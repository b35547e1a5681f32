"""Float64 reference aggregation that every scheme's result is checked against."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def reference(updates: Sequence[dict], weights: Sequence[float] | None, included: Sequence[int], clip: float):
    """(mean, sum) over `included`: floats clipped and weighted in float64; ints summed exactly, mean rounded."""
    w = [1.0] * len(updates) if weights is None else [float(x) for x in weights]
    wsum = sum(w[i] for i in included)
    mean, total = {}, {}
    for k, v in updates[0].items():
        if v.dtype.is_floating_point:
            s = sum(w[i] * updates[i][k].double().clamp(-clip, clip) for i in included)
            total[k], mean[k] = s, s / wsum
        else:
            s = sum(updates[i][k].long() for i in included)
            total[k] = s
            mean[k] = torch.div(2 * s + len(included), 2 * len(included), rounding_mode="floor")
    return mean, total


def rounding_tolerances(weights, included, clip: float, frac_bits: int) -> tuple[float, float]:
    """(mean tolerance, sum tolerance) implied by fixed-point rounding: < 1 unit per client and value."""
    w = [1.0] * (max(included) + 1) if weights is None else [float(x) for x in weights]
    wmax = max(w)
    k, ulp = len(included), 2.0**-frac_bits
    wnorm = sum(w[i] for i in included) / wmax
    return (1 + clip) * k * ulp / (wnorm - k * ulp), k * ulp * wmax * (1 + 1e-9)


def assert_close(result, updates, weights, included, clip: float, frac_bits: int = 16, tols=None) -> None:
    """Check a Result's mean and sum against the float64 reference: floats within tolerance, ints exact."""
    mean, total = reference(updates, weights, included, clip)
    mean_tol, sum_tol = tols or rounding_tolerances(weights, included, clip, frac_bits)
    assert sorted(result.report.survivors) == sorted(included)
    for k in mean:
        got_m, got_s = result.mean[k], result.sum[k]
        assert got_m.shape == mean[k].shape and got_m.dtype == updates[0][k].dtype, k
        if mean[k].dtype.is_floating_point:
            assert (got_m.double() - mean[k]).abs().max().item() <= mean_tol, k
            assert (got_s.double() - total[k]).abs().max().item() <= sum_tol, k
        else:
            assert torch.equal(got_s.long(), total[k]), k
            assert torch.equal(got_m.long(), mean[k]), k
