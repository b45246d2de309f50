"""Statistical power: the smallest effect a test could have detected (statsmodels' power solvers).

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

from .paper_claims import ALPHA  # the paper's level (section 6)

POWER = 0.8


def minimum_detectable_effect(std_diff: float, n: int, alpha: float = ALPHA,
                              power: float = POWER) -> float:
    """Smallest true mean difference a two-sided paired t-test on n pairs detects with `power`
    (statsmodels' TTestPower, the noncentral t): d_z x std_diff. NaN below 2 pairs."""
    from statsmodels.stats.power import TTestPower

    if n < 2 or not math.isfinite(std_diff):
        return math.nan
    d_z = TTestPower().solve_power(effect_size=None, nobs=n, alpha=alpha, power=power,
                                   alternative="two-sided")
    return float(d_z) * std_diff


def _cohens_h_power():
    from statsmodels.stats.power import NormalIndPower

    return NormalIndPower()


def proportion_mde(p0: float, n: int, direction: int = 1, alpha: float = ALPHA,
                   power: float = POWER) -> float:
    """Smallest |p1 - p0| that a two-sided test of two independent proportions with n
    observations each detects with `power`: solve Cohen's h = 2 asin sqrt p1 - 2 asin sqrt p0,
    then move p0 by h in `direction` (+1 up, -1 down). Where the move leaves [0, 1] no change
    of that sign is detectable: inf. NaN for n < 1 or p0 outside [0, 1]."""
    if n < 1 or not 0 <= p0 <= 1:
        return math.nan
    h = _cohens_h_power().solve_power(effect_size=None, nobs1=n, ratio=1.0, alpha=alpha,
                                      power=power, alternative="two-sided")
    phi = 2 * math.asin(math.sqrt(p0)) + direction * float(h)
    if not 0 <= phi <= math.pi:
        return math.inf
    return abs(math.sin(phi / 2) ** 2 - p0)


def proportion_sample_size(p0: float, p1: float, alpha: float = ALPHA, power: float = POWER
                           ) -> int:
    """Observations per group for a two-sided two-proportion test to detect p0 vs p1."""
    from statsmodels.stats.proportion import proportion_effectsize

    h = abs(proportion_effectsize(p1, p0))
    return math.ceil(_cohens_h_power().solve_power(effect_size=h, nobs1=None, ratio=1.0,
                                                   alpha=alpha, power=power,
                                                   alternative="two-sided"))
