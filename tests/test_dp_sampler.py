"""The exact discrete Gaussian sampler: exact bounds, tables, kernel against its exact replay, the pmf, moments,
tails, buffer replay and the CSPRNG."""

from __future__ import annotations

import math
from decimal import Decimal, getcontext

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from securefl.dp import sampler
from securefl.dp._kernels import DONE, EMPTY, dg_fill
from securefl.errors import ConfigError
from tests.conftest import P_MIN


def _exp_decimal(num: int, den: int) -> Decimal:
    getcontext().prec = 80
    return (-Decimal(num) / Decimal(den)).exp()


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 300), st.integers(0, 10**18), st.integers(1, 10**18), st.integers(1, 100))
def test_exp_bounds_bracket_the_exact_value(q, r, den, prec):
    num = q * den + r % den  # exp(-num / den) with an integer part up to 300, as far as a tail sample reaches
    lo, hi = sampler.exp_bounds(num, den, prec)
    exact = _exp_decimal(num, den) * (Decimal(2) ** prec)
    assert Decimal(lo) <= exact <= Decimal(hi)
    assert hi - lo <= 2


def test_exp_table_is_a_tight_upper_bound():
    ex = sampler._exp_table()
    for s, row in zip((8, 16, 24), ex.reshape(3, 256), strict=True):
        for i in (0, 1, 77, 255):
            exact = _exp_decimal(i, 1 << s) * 2**30
            assert exact <= Decimal(int(row[i])) <= exact + Decimal("1.01")


@pytest.mark.parametrize("variance", [1, 7, 4000, 2**32 // 20, 2**58 + 3])
def test_alias_table_gives_each_entry_exactly_its_weight(variance):
    tab = sampler.tables(variance)
    cap = 1 << int(tab.params[2])
    got = np.zeros(tab.thr.size, dtype=object)
    for b in range(tab.thr.size):
        got[b] += int(tab.thr[b])
        got[int(tab.alias[b])] += cap - int(tab.thr[b])
    assert list(got[:len(tab.weights)]) == list(tab.weights) and not any(got[len(tab.weights):])
    t, c = 1 << tab.log_t, tab.c
    for a in range(0, len(tab.weights) - 2, 97):  # W_a >= c exp(-(a t)^2 / 2S): acceptance probabilities <= 1
        assert Decimal(tab.weights[a]) >= Decimal(c) * _exp_decimal((a * t) ** 2, 2 * variance)


@pytest.mark.parametrize("variance", [5, 4000, 2**32 // 20, 2**32, 2**50 + 12345])
def test_kernel_fixed_point_bounds_bracket_the_acceptance_probability(variance):
    """P_hi - margin <= 2^30 exp(-m^2 / 2S) c / W <= P_hi for every kind of candidate: the kernel decides only
    where the exact comparison would decide the same."""
    tab = sampler.tables(variance)
    rng = np.random.default_rng(variance % 1000)
    t, margin, blocks = 1 << tab.log_t, int(tab.params[7]), len(tab.weights) - 2
    entries = np.concatenate([[0, blocks - 1], rng.integers(0, blocks, 300)])
    for entry in entries.tolist():
        for j in {0, t - 1, int(rng.integers(0, t))}:
            m = int(tab.block_start[entry]) + j
            p_hi = sampler._kernel_bound(tab, entry, m)
            lo, hi = sampler.exp_bounds(m * m, 2 * variance, 100)  # 2^100 exp(-m^2 / 2S)
            lo, hi = lo * tab.c // tab.weights[entry], -(-hi * tab.c // tab.weights[entry])
            assert hi <= p_hi << 70 and lo >= (p_hi - margin) << 70


def _kernel(tab, words, n, bit=0):
    out = np.zeros(n, np.int64)
    st_, cur = np.zeros(3, np.int64), np.zeros(1, np.uint64)
    res = dg_fill(out, 0, words, bit, st_, cur, tab.thr, tab.alias, tab.block_start, tab.g_hi, sampler._exp_table(),
                  tab.params)
    return out, res


@pytest.mark.parametrize("variance", [3, 1000, 2**32 // 7, 2**50 + 12345])
def test_kernel_equals_its_exact_replay_on_the_same_bits(variance):
    tab = sampler.tables(variance)
    words = sampler.random_words(3000)
    out, (done, _, _, outcome) = _kernel(tab, words, 2000)
    assert outcome == DONE or done > 1500
    stream = sampler.BitStream(words)
    assert [sampler._exact_sample(tab, stream) for _ in range(done)] == out[:done].tolist()


def test_an_interrupted_sample_is_replayed_on_the_same_bits():
    tab = sampler.tables(5000)
    words = sampler.random_words(800)
    full, (n_full, _, _, _) = _kernel(tab, words, 700)
    part, (done, word, bit, outcome) = _kernel(tab, words[:300], 700)
    assert outcome == EMPTY and 0 < done < n_full
    rest, (n_rest, _, _, _) = _kernel(tab, words[word:], 700 - done, bit)
    assert np.array_equal(np.concatenate([part[:done], rest[:n_rest]]), full[:done + n_rest])


def _pmf(variance: int, support: np.ndarray) -> np.ndarray:
    ks = np.arange(-60 * math.isqrt(variance) - 60, 60 * math.isqrt(variance) + 61)
    z = np.exp(-ks.astype(float) ** 2 / (2 * variance)).sum()
    return np.exp(-support.astype(float) ** 2 / (2 * variance)) / z


def _chi2_pvalue(x: np.ndarray, variance: int) -> float:
    r = int(4 * math.sqrt(variance)) + 2
    support = np.arange(-r, r + 1)
    expected = x.size * _pmf(variance, support)
    counts = np.array([(x == k).sum() for k in support], np.float64)
    tail_obs, tail_exp = x.size - counts.sum(), x.size - expected.sum()  # |x| > r, one pooled cell
    obs, exp = np.append(counts, tail_obs), np.append(expected, tail_exp)
    keep = exp >= 5
    obs = np.append(obs[keep], obs[~keep].sum())
    exp = np.append(exp[keep], exp[~keep].sum())
    return float(stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue)


@pytest.mark.parametrize("variance", [1, 2, 10, 37])
def test_small_variances_match_the_exact_pmf(variance):
    x = sampler.discrete_gaussian(variance, 200_000)
    assert _chi2_pvalue(x, variance) > P_MIN


def test_the_chi_square_test_rejects_a_slightly_wrong_sampler():
    x = sampler.discrete_gaussian(11, 200_000)  # the variance 10 pmf would accept only a correct N_Z(0, 10)
    assert _chi2_pvalue(x, 10) < 1e-12  # far below P_MIN: the test has power


def test_the_exact_replay_and_the_tail_alone_match_the_pmf():
    """Tables that cover 1.4 sigma and a fixed-point band a thousand times wider: about a third of the samples
    go through the exact replay and the tail entry, which must give the same distribution."""
    tab = sampler.tables(10, coverage=2, extra_margin=1 << 27)
    x = sampler.draw(tab, 60_000)
    assert _chi2_pvalue(x, 10) > P_MIN
    assert (np.abs(x) >= tab.tail_start).mean() > 0.1  # the tail was drawn


@pytest.mark.parametrize("m", [1, 10, 100])
def test_moments_and_tails_at_the_schemes_variances(m):
    variance = math.ceil((2.0**16) ** 2 / m)  # (z clip 2^16)^2 / m with z = clip = 1
    sigma = math.sqrt(variance)
    n = 400_000
    x = sampler.discrete_gaussian(variance, n).astype(np.float64) / sigma
    assert abs(x.mean()) < 5 / math.sqrt(n)
    assert x.var() == pytest.approx(1.0, abs=5 * math.sqrt(2 / n))
    assert (x**4).mean() == pytest.approx(3.0, abs=5 * math.sqrt(96 / n))
    for k, p in [(1, 0.31731), (2, 0.04550), (3, 0.0026998)]:
        frac = (np.abs(x) > k).mean()
        assert abs(frac - p) < 5 * math.sqrt(p * (1 - p) / n)
    assert (x > 0).mean() == pytest.approx(0.5, abs=5 * 0.5 / math.sqrt(n))


def test_noise_is_drawn_from_the_os_csprng_not_numpy():
    np.random.seed(0)
    a = sampler.discrete_gaussian(10**6, 1000)
    np.random.seed(0)
    b = sampler.discrete_gaussian(10**6, 1000)
    assert not np.array_equal(a, b)
    assert not np.array_equal(sampler.random_words(4), sampler.random_words(4))


def test_bad_variances_raise():
    for v in (0, -3, 2**61):
        with pytest.raises(ConfigError):
            sampler.discrete_gaussian(v, 10)
