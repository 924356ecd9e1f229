"""cifar_tui.stats against scipy (computed independently here): the t distribution at real degrees
of freedom, Welch's and the paired t-test, their intervals, the power of a t-test (noncentral t)
and the seeds that would resolve a difference; intervals clamped to [0, 100], marked wide at n=2."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sp

from cifar_tui import stats

RNG = np.random.default_rng(20)


@pytest.mark.parametrize("df", [1, 1.5, 2, 3.7, 9, 30.25, 400])
def test_t_quantile_and_p_value_at_real_degrees_of_freedom(df):
    for conf in (0.8, 0.95, 0.99):
        assert stats.t_quantile(conf, df) == pytest.approx(sp.t.ppf((1 + conf) / 2, df), rel=1e-9)
    for t in (0.05, 1.0, 2.2, 6.0):
        assert stats.t_two_sided_p(t, df) == pytest.approx(2 * sp.t.sf(t, df), rel=1e-9, abs=1e-15)


def test_the_interval_of_a_group_is_students_clamped_to_0_100_and_marked():
    values = list(RNG.normal(41.0, 1.3, 5))
    got = stats.interval(values)
    low, high = sp.t.interval(0.95, 4, loc=np.mean(values), scale=sp.sem(values))
    assert got["ci"] == pytest.approx((low, high), rel=1e-10) and not got["clamped"] and not got["wide"]
    near_zero = stats.interval([0.5, 4.0, 7.5])  # the raw interval reaches below 0 (an accuracy cannot)
    raw = sp.t.interval(0.95, 2, loc=4.0, scale=sp.sem([0.5, 4.0, 7.5]))
    assert raw[0] < 0 and near_zero["ci"] == pytest.approx((0.0, raw[1])) and near_zero["clamped"]
    two = stats.interval([40.0, 41.0])
    assert two["wide"] and two["ci"] == pytest.approx(sp.t.interval(0.95, 1, loc=40.5, scale=sp.sem([40, 41])))
    one = stats.interval([40.0])
    assert one["ci"] is None and one["n"] == 1 and not one["wide"]


def test_welch_and_paired_tests_match_scipy():
    a, b = RNG.normal(44.26, 0.6, 5), RNG.normal(44.81, 0.9, 7)
    w = stats.welch(list(a), list(b))
    ref = sp.ttest_ind(b, a, equal_var=False)
    assert w["p"] == pytest.approx(ref.pvalue, rel=1e-9) and w["t"] == pytest.approx(ref.statistic, rel=1e-12)
    ci = ref.confidence_interval(0.95)
    assert w["ci"] == pytest.approx((ci.low, ci.high), rel=1e-9) and w["df"] == pytest.approx(ref.df, rel=1e-12)
    a, b = RNG.normal(44.0, 1.0, 6), RNG.normal(44.0, 1.0, 6) + 0.4
    p = stats.paired(list(a), list(b))
    ref = sp.ttest_rel(b, a)
    ci = ref.confidence_interval(0.95)
    assert p["p"] == pytest.approx(ref.pvalue, rel=1e-9) and p["ci"] == pytest.approx((ci.low, ci.high), rel=1e-9)


def _power_scipy(df: float, ncp: float, alpha: float = 0.05) -> float:
    c = sp.t.ppf(1 - alpha / 2, df)
    return sp.nct.sf(c, df, ncp) + sp.nct.cdf(-c, df, ncp)


@pytest.mark.parametrize("df,ncp", [(1, 2.0), (1.3, 3.0), (4, 0.5), (9.6, 2.8), (58, 3.1), (500, 1.0)])
def test_the_power_of_a_t_test_is_the_noncentral_ts(df, ncp):
    assert stats.t_test_power(df, ncp) == pytest.approx(_power_scipy(df, ncp), abs=2e-6)


@pytest.mark.parametrize("diff,sa,sb", [(0.55, 0.8, 1.1), (3.0, 1.0, 1.0), (0.2, 0.3, 0.9), (7.8, 2.5, 0.4)])
def test_seeds_to_resolve_are_the_fewest_with_80_percent_power(diff, sa, sb):
    n = stats.seeds_to_resolve(diff, sa, sb)

    def power(k: int) -> float:  # Welch's test with k runs per group, scipy's noncentral t
        va, vb = sa * sa / k, sb * sb / k
        df = (va + vb) ** 2 / (va * va / (k - 1) + vb * vb / (k - 1))
        return _power_scipy(df, diff / math.sqrt(va + vb))

    assert n >= 2 and power(n) >= 0.8 and (n == 2 or power(n - 1) < 0.8)
    m = stats.seeds_to_resolve(diff, None, paired_sd=sa)  # the paired test: n pairs, df n-1
    assert _power_scipy(m - 1, diff * math.sqrt(m) / sa) >= 0.8
    assert m == 2 or _power_scipy(m - 2, diff * math.sqrt(m - 1) / sa) < 0.8
    assert stats.seeds_to_resolve(0.0, sa, sb) is None and stats.seeds_to_resolve(diff, None, None) is None


def test_compare_picks_the_paired_test_for_the_same_seeds_and_gives_one_verdict():
    base = {0: 44.1, 1: 44.6, 2: 43.9, 3: 44.4}
    better = {s: v + 0.5 + d for (s, v), d in zip(base.items(), (0.05, -0.04, 0.02, -0.03))}
    c = stats.compare(base, better)
    ref = sp.ttest_rel([better[s] for s in base], list(base.values()))
    assert c["test"] == "paired" and c["verdict"] == "better" and c["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    noisy = {10 + i: v for i, v in enumerate([44.0, 46.1, 43.2])}  # other seeds: Welch
    c = stats.compare(base, noisy)
    ref = sp.ttest_ind(list(noisy.values()), list(base.values()), equal_var=False)
    assert c["test"] == "welch" and c["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert c["verdict"] == "not resolved" and c["seeds"] == stats.seeds_to_resolve(
        c["diff"], np.std(list(base.values()), ddof=1), np.std(list(noisy.values()), ddof=1))
    worse = stats.compare(base, {0: 40.0, 1: 40.3, 2: 39.8, 3: 40.1})
    assert worse["verdict"] == "worse" and worse["ci"][1] < 0
    lone = stats.compare(base, {0: 45.0})
    assert lone["test"] is None and lone["verdict"] == "not resolved" and "2 or more" in lone["why"]
