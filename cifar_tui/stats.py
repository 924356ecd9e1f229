"""The statistics of best accuracies, in one place: the CLI, the TUI, the report and the seeds
driver all call these. Pure Python (no scipy at run time, so `leaderboard` stays fast);
tests/unit/test_stats.py checks each function against scipy.

- ``interval(values)``: n, mean, sample std and the 95% Student's t interval of the mean, clamped
  to [0, 100] (an accuracy) and said to be clamped; none below 2 values, marked wide at 2.
- ``compare(baseline, other)``: other minus baseline: the difference of means, its 95% interval,
  the p-value (Welch's t-test; the paired t-test when both ran the same seeds), a verdict
  (better / worse / not resolved) and the seeds per group that would resolve the observed
  difference at 80% power.
- ``seeds_for_half_width(sd, target)``: seeds for an interval no wider than ±target.

The t distribution for any real degrees of freedom comes from the regularized incomplete beta
function (continued fraction); the power of a t-test from the noncentral t, integrated over the
chi distribution of the standard error.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Mapping, Sequence

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE
POWER = 0.80
ACC_RANGE = (0.0, 100.0)
DIFF_RANGE = (-100.0, 100.0)
MAX_SEEDS_ESTIMATE = 1000   # beyond this, "more than 1000" (the difference is as good as none)
WIDE_BELOW = 3              # an interval from fewer values than this is marked wide

BETTER, WORSE, UNRESOLVED = "better", "worse", "not resolved"


# ---------------------------------------------------------------- distributions


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with df (real) degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return betainc(df / 2.0, 0.5, df / (df + t * t))


def t_cdf(t: float, df: float) -> float:
    p = t_two_sided_p(t, df) / 2.0
    return 1.0 - p if t > 0 else p


def t_pdf(t: float, df: float) -> float:
    return math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
                    - (df + 1) / 2 * math.log1p(t * t / df))


@lru_cache(maxsize=4096)
def t_quantile(confidence: float, df: float) -> float:
    """The t with P(|T| <= t) = confidence (t_quantile(0.95, 4) = 2.776); df may be any real >= 1
    (Welch's). Newton's method kept inside a bracket that bisection narrows."""
    if not df > 0:
        raise ValueError("df must be positive")
    target = 1.0 - confidence   # the two-sided p at the answer
    lo, hi = 0.0, 1.0
    while t_two_sided_p(hi, df) > target:
        lo, hi = hi, hi * 2
    t = (lo + hi) / 2
    for _ in range(200):
        p = t_two_sided_p(t, df)
        if abs(p - target) < 1e-14:
            break
        if p > target:
            lo = t
        else:
            hi = t
        step = t + (p - target) / (2 * t_pdf(t, df))   # d/dt of the two-sided p is -2 pdf
        t = step if lo < step < hi else (lo + hi) / 2
        if hi - lo < 1e-13 * max(1.0, t):
            break
    return t


def normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _noncentral_t_tails(c: float, df: float, ncp: float, points: int = 256) -> float:
    """P(T' > c) + P(T' < -c) for the noncentral t (df, ncp): T' = (Z + ncp) / (U / sqrt(df)) with
    U ~ chi(df), so the tails are E_U[1 - Phi(cU/sqrt(df) - ncp) + Phi(-cU/sqrt(df) - ncp)].
    Simpson's rule in w = sqrt(U) (smooth at 0 for df >= 1) over where chi(df) has its mass."""
    mode = math.sqrt(max(df - 1.0, 0.0))
    lo, hi = math.sqrt(max(mode - 12.0, 0.0)), math.sqrt(mode + 12.0)
    h = (hi - lo) / points
    log_norm = (df / 2 - 1) * math.log(2.0) + math.lgamma(df / 2)
    scale = c / math.sqrt(df)
    total = 0.0
    for i in range(points + 1):
        w = lo + i * h
        if w <= 0.0:
            continue  # the density is 0 there for df > 1/2
        u = w * w
        density = math.exp((df - 1) * math.log(u) - u * u / 2 - log_norm) * 2 * w  # chi(u) du/dw
        tails = normal_cdf(ncp - scale * u) + normal_cdf(-scale * u - ncp)
        total += (1 if i in (0, points) else 4 if i % 2 else 2) * density * tails
    return min(1.0, max(0.0, total * h / 3))


def t_test_power(df: float, ncp: float, alpha: float = ALPHA) -> float:
    """The power of a two-sided t-test at level alpha: P(|T'| > t_crit) for the noncentral t."""
    return _noncentral_t_tails(t_quantile(1 - alpha, df), df, ncp)


# ---------------------------------------------------------------- one group


def mean_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> dict:
    """n, mean, sample standard deviation and the Student's t interval of the mean (None where n < 2),
    as computed (not clamped)."""
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "ci": None}
    mean = math.fsum(values) / n
    if n < 2:
        return {"n": 1, "mean": mean, "std": None, "ci": None}
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(confidence, n - 1) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci": (mean - half, mean + half)}


def clamp_interval(ci: tuple[float, float] | None, bounds: tuple[float, float] = ACC_RANGE):
    """(the interval inside bounds, whether it had to be cut)."""
    if ci is None:
        return None, False
    low, high = max(ci[0], bounds[0]), min(ci[1], bounds[1])
    return (low, high), (low, high) != tuple(ci)


def interval(values: Sequence[float], confidence: float = CONFIDENCE) -> dict:
    """mean_interval with the interval clamped to [0, 100] (an accuracy cannot leave it):
    {"n", "mean", "std", "ci", "clamped", "wide"}; wide: from 2 values only."""
    stats = mean_interval(values, confidence)
    ci, clamped = clamp_interval(stats["ci"])
    return dict(stats, ci=ci, clamped=clamped, wide=ci is not None and stats["n"] < WIDE_BELOW)


def seeds_for_half_width(sd: float | None, target: float, confidence: float = CONFIDENCE,
                         max_n: int = MAX_SEEDS_ESTIMATE) -> int | None:
    """The fewest runs whose t interval has half-width <= target at this standard deviation
    (None: unknown sd, or more than max_n)."""
    if sd is None or target <= 0:
        return None
    if sd == 0:
        return 2
    n = 2
    while n <= max_n:
        if t_quantile(confidence, n - 1) * sd / math.sqrt(n) <= target:
            return n
        n += 1 if n < 64 else max(1, n // 8)
    return None


# ---------------------------------------------------------------- two groups


def _welch_df(va: float, na: int, vb: float, nb: int) -> float:
    """Welch-Satterthwaite degrees of freedom of the difference of two means (va, vb: variances)."""
    a, b = va / na, vb / nb
    if a + b == 0:
        return float(na + nb - 2)
    return (a + b) ** 2 / ((a * a / (na - 1) if na > 1 else 0) + (b * b / (nb - 1) if nb > 1 else 0))


def _test(diff: float, se: float, df: float, confidence: float) -> dict:
    if se == 0:
        p = 1.0 if diff == 0 else 0.0
        return {"diff": diff, "se": 0.0, "df": df, "t": math.copysign(math.inf, diff) if diff else 0.0,
                "p": p, "ci": (diff, diff)}
    half = t_quantile(confidence, df) * se
    t = diff / se
    return {"diff": diff, "se": se, "df": df, "t": t, "p": t_two_sided_p(t, df), "ci": (diff - half, diff + half)}


def welch(baseline: Sequence[float], other: Sequence[float], confidence: float = CONFIDENCE) -> dict | None:
    """Welch's t-test of mean(other) - mean(baseline): diff, se, df, t, p, ci (None below 2 each)."""
    a, b = mean_interval(baseline), mean_interval(other)
    if a["n"] < 2 or b["n"] < 2:
        return None
    va, vb = a["std"] ** 2, b["std"] ** 2
    se = math.sqrt(va / a["n"] + vb / b["n"])
    return _test(b["mean"] - a["mean"], se, _welch_df(va, a["n"], vb, b["n"]), confidence)


def paired(baseline: Sequence[float], other: Sequence[float], confidence: float = CONFIDENCE) -> dict | None:
    """The paired t-test of other - baseline, pair by pair (the same seeds): as welch()."""
    d = mean_interval([o - b for b, o in zip(baseline, other, strict=True)])
    if d["n"] < 2:
        return None
    return _test(d["mean"], d["std"] / math.sqrt(d["n"]), d["n"] - 1, confidence)


def _smallest_n(power_at, target: float, start: int, max_n: int) -> int | None:
    """The smallest n >= 2 with power_at(n) >= target (power grows with n)."""
    lo, hi = 1, max(2, start)
    while power_at(hi) < target:
        lo, hi = hi, hi * 2
        if lo >= max_n:
            return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if power_at(mid) >= target:
            hi = mid
        else:
            lo = mid
    return hi if hi <= max_n else None


def seeds_to_resolve(diff: float, sd_baseline: float | None, sd_other: float | None = None, *,
                     paired_sd: float | None = None, alpha: float = ALPHA, power: float = POWER,
                     max_n: int = MAX_SEEDS_ESTIMATE) -> int | None:
    """Runs per group (pairs, for a paired test) that would resolve a true difference `diff` with
    the given power, at these standard deviations: Welch's test with n runs in each group (one
    group's sd stands in for the other's when only one is known), or the paired test of n pairs
    with `paired_sd`. None: no sd known, no difference, or more than max_n."""
    if diff == 0 or not math.isfinite(diff):
        return None
    z = (1.959963984540054 + 0.8416212335729143) ** 2  # a first guess from the normal approximation
    if paired_sd is not None:
        if paired_sd == 0:
            return 2
        return _smallest_n(lambda n: t_test_power(n - 1, abs(diff) * math.sqrt(n) / paired_sd, alpha), power,
                           math.ceil(z * paired_sd ** 2 / diff ** 2), max_n)
    sa = sd_baseline if sd_baseline is not None else sd_other
    sb = sd_other if sd_other is not None else sd_baseline
    if sa is None or sb is None:
        return None
    va, vb = sa * sa, sb * sb
    if va + vb == 0:
        return 2

    def power_at(n: int) -> float:
        return t_test_power(_welch_df(va, n, vb, n), abs(diff) / math.sqrt((va + vb) / n), alpha)

    return _smallest_n(power_at, power, math.ceil(z * (va + vb) / diff ** 2), max_n)


def same_seeds(baseline: Mapping, other: Mapping) -> bool:
    """Whether both groups ran exactly the same seeds (two or more): then they are compared pair by pair."""
    return len(baseline) >= 2 and set(baseline) == set(other) and None not in baseline


def compare(baseline: Mapping[object, float], other: Mapping[object, float],
            confidence: float = CONFIDENCE, power: float = POWER) -> dict:
    """other vs baseline, each {seed: best accuracy} of its completed runs (a copy of a result
    kept for the same figures: a study's tab compares its groups again each time a run moves)."""
    key = (tuple(sorted(baseline.items(), key=str)), tuple(sorted(other.items(), key=str)), confidence, power)
    return dict(_compare(*key))


@lru_cache(maxsize=4096)
def _compare(baseline_items: tuple, other_items: tuple, confidence: float, power: float) -> dict:
    return _compare_now(dict(baseline_items), dict(other_items), confidence, power)


def _compare_now(baseline: Mapping[object, float], other: Mapping[object, float],
                 confidence: float, power: float) -> dict:
    """other vs baseline, each {seed: best accuracy} of its completed runs.

    {"test": "paired" | "welch" | None, "n": (n baseline, n other), "diff" (other - baseline),
     "ci" (95%, clamped to [-100, 100]), "clamped", "p", "verdict": better | worse | not resolved,
     "seeds": runs per group that would resolve the observed difference at 80% power (None:
     unknown), "why" (when no test could be made)}."""
    a, b = list(baseline.values()), list(other.values())
    out = {"test": None, "n": (len(a), len(b)), "diff": None, "ci": None, "clamped": False, "p": None,
           "verdict": UNRESOLVED, "seeds": None, "why": None}
    if a and b:
        out["diff"] = math.fsum(b) / len(b) - math.fsum(a) / len(a)
    if same_seeds(baseline, other):
        keys = sorted(baseline, key=str)
        result = paired([baseline[k] for k in keys], [other[k] for k in keys], confidence)
        out["test"] = "paired"
        sd = None if result is None else result["se"] * math.sqrt(len(keys))
        seeds = lambda d: seeds_to_resolve(d, None, paired_sd=sd, alpha=1 - confidence, power=power)  # noqa: E731
    else:
        result = welch(a, b, confidence)
        out["test"] = "welch" if result is not None else None
        sa, sb = mean_interval(a)["std"], mean_interval(b)["std"]
        seeds = lambda d: seeds_to_resolve(d, sa, sb, alpha=1 - confidence, power=power)  # noqa: E731
    if result is None:
        out["why"] = "needs 2 or more completed runs in each group"
        out["seeds"] = seeds(out["diff"]) if out["diff"] is not None else None
        return out
    ci, clamped = clamp_interval(result["ci"], DIFF_RANGE)
    out.update(diff=result["diff"], ci=ci, clamped=clamped, p=result["p"], df=result["df"])
    if result["p"] < 1 - confidence:
        out["verdict"] = BETTER if result["diff"] > 0 else WORSE
    out["seeds"] = seeds(result["diff"])
    return out
