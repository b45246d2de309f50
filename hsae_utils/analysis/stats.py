"""Paired tests and statistical power: the smallest effect a test could have detected
(statsmodels' power solvers).

A test that finds nothing says "the claim does not hold" only when it could have seen the claimed
effect; otherwise it is inconclusive. Both solvers use alpha 0.05 (the paper's level, section 6)
and power 0.8, two-sided.

    minimum_detectable_effect   paired t-test over seeds (TTestPower, the noncentral t)
    proportion_mde              two independent proportions of n each (NormalIndPower on
                                Cohen's h), e.g. a probe's test accuracy on n test texts
    proportion_sample_size      the n per group that detects a given pair of proportions
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats as _scipy_stats

from hsae_utils.analysis.paper_claims import ALPHA  # the paper's level (section 6)

POWER = 0.8


def minimum_detectable_effect(
    std_diff: float, n: int, alpha: float = ALPHA, power: float = POWER
) -> float:
    """Smallest true mean difference a two-sided paired t-test on n pairs detects with `power`
    (statsmodels' TTestPower, the noncentral t): d_z x std_diff. NaN below 2 pairs."""
    from statsmodels.stats.power import TTestPower

    if n < 2 or not math.isfinite(std_diff):
        return math.nan
    d_z = TTestPower().solve_power(
        effect_size=None, nobs=n, alpha=alpha, power=power, alternative="two-sided"
    )
    return float(d_z) * std_diff


def _cohens_h_power():
    from statsmodels.stats.power import NormalIndPower

    return NormalIndPower()


def proportion_mde(
    p0: float, n: int, direction: int = 1, alpha: float = ALPHA, power: float = POWER
) -> float:
    """Smallest |p1 - p0| that a two-sided test of two independent proportions with n
    observations each detects with `power`: solve Cohen's h = 2 asin sqrt p1 - 2 asin sqrt p0,
    then move p0 by h in `direction` (+1 up, -1 down). Where the move leaves [0, 1] no change
    of that sign is detectable: inf. NaN for n < 1 or p0 outside [0, 1]."""
    if n < 1 or not 0 <= p0 <= 1:
        return math.nan
    h = _cohens_h_power().solve_power(
        effect_size=None, nobs1=n, ratio=1.0, alpha=alpha, power=power, alternative="two-sided"
    )
    phi = 2 * math.asin(math.sqrt(p0)) + direction * float(h)
    if not 0 <= phi <= math.pi:
        return math.inf
    return abs(math.sin(phi / 2) ** 2 - p0)


def proportion_sample_size(p0: float, p1: float, alpha: float = ALPHA, power: float = POWER) -> int:
    """Observations per group for a two-sided two-proportion test to detect p0 vs p1."""
    from statsmodels.stats.proportion import proportion_effectsize

    h = abs(proportion_effectsize(p1, p0))
    return math.ceil(
        _cohens_h_power().solve_power(
            effect_size=h, nobs1=None, ratio=1.0, alpha=alpha, power=power, alternative="two-sided"
        )
    )


def paired_stats(a: Sequence[float], b: Sequence[float]) -> dict:
    """Paired comparison of a and b (same seeds, same order): means, mean difference a - b,
    std of the differences, Cohen's d_z = mean diff / std diff, paired t-test (two-sided).
    t, p and d_z are NaN below 2 pairs; a constant non-zero difference gives p = 0, |d_z| = inf."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = a - b
    n = len(d)
    out = {
        "n_seeds": n,
        "mean_a": a.mean() if n else math.nan,
        "mean_b": b.mean() if n else math.nan,
        "mean_diff": d.mean() if n else math.nan,
        "std_diff": math.nan,
        "cohens_dz": math.nan,
        "t": math.nan,
        "p_value": math.nan,
        "note": "",
    }
    if n < 2:
        out["note"] = f"{n} paired seed{'s' if n != 1 else ''}: no test"
        return out
    sd = float(d.std(ddof=1))
    out["std_diff"] = sd
    if sd <= 1e-12 * max(1.0, float(np.abs(d).max())):  # constant difference: t-test degenerate
        out["std_diff"] = 0.0
        if out["mean_diff"] == 0:
            out["note"] = "identical values"
            return out
        out.update(
            cohens_dz=math.copysign(math.inf, out["mean_diff"]),
            t=math.copysign(math.inf, out["mean_diff"]),
            p_value=0.0,
            note="constant difference over seeds",
        )
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = _scipy_stats.ttest_rel(a, b)
    out.update(cohens_dz=out["mean_diff"] / sd, t=float(res.statistic), p_value=float(res.pvalue))
    return out
