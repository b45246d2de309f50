"""The paper's numeric claims against what we measure: a generated table and paired statistics.

Every number of the abstract and section 6 (and each cell of Table 1 and each probing dataset of
6.3) is a `Claim`: the paper's baseline (TopK) and claimed value, the metric of our evaluation
table it maps to, the direction the paper claims, and what the public artifacts of the paper's
run show (GitHub ltjed/free_PhD_labor,
results/sae_variants/20250128_001950_hierarchical_sparse_autoencoder); the claims themselves are
data, in `paper_claims`. `claims_table` gives each claim two verdicts:

Relative verdict (any profile): is our `config - baseline` difference, paired by seed, of the
claimed sign and beyond seed noise?
- >= 3 paired seeds: paired t-test (two-sided), beyond noise when p < ALPHA;
- 2 seeds: beyond noise when |mean difference| > 2 x std of the paired differences;
- 1 seed: the sign alone (said in the reason: nothing is known about seed noise).
"holds": claimed sign and beyond noise. "does not hold": opposite sign beyond noise (an effect
was detected, of the other sign), or no effect of the claimed sign found by a test that could
have detected the paper's claimed effect. Power: the minimum detectable effect (MDE) of the
paired t-test at alpha 0.05 and power 0.8 with the observed std of the paired differences
(statsmodels TTestPower, `hsae_utils.analysis.stats`), against the paper's effect in our units (a pp
difference as is, a relative change or ratio applied to our baseline's mean). Where MDE > claimed,
or with 1 seed (no test), "inconclusive (underpowered)" instead of "does not hold"; where the MDE is
within BORDERLINE_MARGIN (10 %) of the claimed effect, "does not hold (borderline power)".
Sparse probing adds the test set's own noise, which the seeds cannot show (every SAE is probed on
the same texts): its MDE is the larger of the seeds' and a two-proportion test's at
2 x probe_test_per_class texts.
The matched-L0 verdict applies the same rule to the differences from the baselines' frontier at
the configuration's own L0 (interpolated in log L0 between the baseline runs that bracket it;
"not comparable" where no baseline is as dense: a denser code beating sparser ones is expected,
`matched_sparsity_verdict`). Both SAEBench absorption measures are claims (full absorption, the
paper's number, and the absorption fraction), each with its verdict (`absorption_note`).
"not measured": a measurement that exists but has not run here (training time: the benchmark's
overhead file, `measured`; interpretability: notebook 12's auto-interpretation). A claim on a
configuration that repeats another's results exactly (`identical_configs`, e.g. an ablation stage
whose mechanism never acted) is marked `same_as` and counted once. Absorption on real activations
carries SAEBench's caveat (meaningful for 16k+ latents on 1B+ models); the ground-truth column
answers it where absorption is exact (notebook 10's synthetic hierarchy, `ground_truth.absorption_verdict`).
The sensitivity column says which verdicts change under the alternative readings of the paper's
ambiguous passages (notebook 11, `hsae_utils.experiment.sensitivity`).
"not comparable": the metric, the configuration or the dataset
is missing from our results, or the claim cannot be measured (e.g. training losses of different
objectives). The reason also compares the magnitude with the paper's (pp, relative change or
ratio, as the paper states it).

Absolute verdict: our value of the claimed configuration against the paper's number, only where
the profile is the paper's setting (google/gemma-2-2b, layer 19, 2,304 latents, 4,882 steps,
~10M tokens) and the two numbers share units. "holds" when ours is on the claimed side of the
paper's value or within max(2 std over seeds, ABS_REL_TOL of the value). The paper's baseline
numbers are never compared: its TopK had 65,536 latents, ours has the profile's dictionary size.

Table 1 lists Baseline, +Linear Sparsity, +Resampling, +Adaptive Sparsity: no +Window tracking
and no +Clustering row, and its +Adaptive Sparsity numbers are the abstract's HierarchicalSAE
numbers. We check each row against the cumulative stage of that name (stage 4 includes window
tracking) and the abstract against stage 5 (HierarchicalSAE).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from hsae_utils.analysis.measured import train_time_verdict
from hsae_utils.analysis.paper_claims import (
    ABS_REL_TOL,
    ABSORPTION_MEASURES,
    ALPHA,
    BORDERLINE,
    BORDERLINE_MARGIN,
    CLAIMS,
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    NOT_COMPARABLE,
    NOT_MEASURED,
    PAPER_DICT_SIZE,
    PAPER_LAYER,
    PAPER_MODEL,
    PAPER_STEPS,
    PAPER_TOPK_DICT_SIZE,
    PAPER_TRAIN_TOKENS,
    TRAIN_STEP_RATIO,
    Claim,
)
from hsae_utils.analysis.report.results import HEADLINE_METRICS
from hsae_utils.analysis.report.tables import fmt_number as _fmt
from hsae_utils.analysis.report.tables import identical_configs, markdown_table
from hsae_utils.analysis.stats import POWER, minimum_detectable_effect, paired_stats, proportion_mde
from hsae_utils.io import atomic_path, write_text_atomic
from hsae_utils.runs import HSAE, TOPK, family

# SAEBench (Karvonen et al. 2025): absorption is meaningful for SAEs of 16k+ latents on 1B+
# models. The model's size is read off its width: 1B+ models have d_model >= 2,048 (Pythia-1B
# 2,048, Gemma-2-2B 2,304); SmolLM2-135M has 576.
ABSORPTION_MIN_LATENTS, ABSORPTION_MIN_D_MODEL = 16_384, 2048


# ============================================================================================
# Comparability with the paper's setting
# ============================================================================================
def paper_setting_mismatches(profile) -> list[str]:
    """How the profile differs from the paper's setting; empty when absolute values compare."""
    out = []
    if profile.model_name != PAPER_MODEL:
        out.append(f"different model ({profile.model_name}, not {PAPER_MODEL})")
    if profile.layer != PAPER_LAYER:
        out.append(f"layer {profile.layer}, not {PAPER_LAYER}")
    if profile.dict_size != PAPER_DICT_SIZE:
        out.append(f"{profile.dict_size:,} latents, not {PAPER_DICT_SIZE:,}")
    steps, tokens = getattr(profile, "train_steps", 0), getattr(profile, "n_train_tokens", 0)
    if steps != PAPER_STEPS or tokens < 0.9 * PAPER_TRAIN_TOKENS:
        out.append(
            f"budget {steps:,} steps / {tokens:,} cached tokens, not {PAPER_STEPS:,} / "
            f"~{PAPER_TRAIN_TOKENS / 1e6:.0f}M"
        )
    return out


# ============================================================================================
# Paired statistics
# ============================================================================================
def _per_seed(results: pd.DataFrame, config: str, metric: str) -> pd.Series:
    """Values of one config and metric indexed by seed (mean of duplicates; no seed -> -1)."""
    df = results[(results["config"] == config) & (results["metric"] == metric)]
    seeds = pd.to_numeric(df["seed"], errors="coerce").fillna(-1).astype(int)
    return df["value"].astype(float).groupby(seeds.to_numpy()).mean()


def paired_tests(
    results: pd.DataFrame, a: str = HSAE, b: str = TOPK, metrics: Iterable[str] = HEADLINE_METRICS
) -> pd.DataFrame:
    """Config `a` versus config `b` on each metric, paired by seed (scipy.stats.ttest_rel).

    Columns: metric, a, b, n_seeds, mean_a, mean_b, mean_diff (a - b), std_diff, cohens_dz, t,
    p_value, note. Metrics missing for either config give a row of NaN with a note."""
    rows = []
    for m in metrics:
        va, vb = _per_seed(results, a, m), _per_seed(results, b, m)
        seeds = va.index.intersection(vb.index)
        row = paired_stats(va[seeds].to_numpy(), vb[seeds].to_numpy())
        absent = [c for c, v in ((a, va), (b, vb)) if v.empty]
        if absent:
            row["note"] = f"not measured for {' and '.join(absent)}"
        elif seeds.empty:
            row["note"] = "no common seeds"
        rows.append({"metric": m, "a": a, "b": b, **row})
    return pd.DataFrame(rows)


# ============================================================================================
# Verdicts
# ============================================================================================
def _sign(direction: str) -> int:
    if direction not in ("higher", "lower"):
        raise ValueError(f"direction must be 'higher' or 'lower', got {direction!r}")
    return 1 if direction == "higher" else -1


def paired_mde(diffs: Sequence[float]) -> float:
    """Minimum detectable effect of the paired t-test on these differences (alpha 0.05, power
    0.8, the observed std of the differences): NaN below 2 seeds, 0 for a constant difference."""
    d = np.asarray(diffs, float)
    if len(d) < 2:
        return math.nan
    sd = float(d.std(ddof=1))
    return (
        0.0
        if sd <= 1e-12 * max(1.0, float(np.abs(d).max()))
        else minimum_detectable_effect(sd, len(d))
    )


def claimed_effect(claim: Claim, baseline_mean: float) -> float:
    """The paper's claimed |config - baseline| in our metric's units: a pp difference as is, a
    relative change or a ratio applied to our baseline's mean. NaN when the paper gives none."""
    if claim.paper_value is None or claim.paper_baseline is None:
        return math.nan
    if claim.change == "pp":
        return abs(claim.paper_value - claim.paper_baseline)
    if claim.paper_baseline == 0 or not math.isfinite(baseline_mean):
        return math.nan
    return abs(claim.paper_value / claim.paper_baseline - 1) * abs(baseline_mean)


def power_note(mde: float, claimed: float) -> str:
    """ "MDE x <= claimed y: powered" (or "> ...: underpowered"); why no MDE otherwise."""
    if not math.isfinite(claimed):
        return "no claimed effect to power for"
    if math.isnan(mde):
        return f"no test (1 seed): power unknown; claimed {_fmt(claimed)}"
    ok = mde <= claimed
    return (
        f"MDE {'inf' if mde == math.inf else _fmt(mde)} {'<=' if ok else '>'} claimed {_fmt(claimed)}: "
        f"{'powered' if ok else 'underpowered'}"
    )


def _undecided(why: str, mde: float, claimed: float) -> tuple[str, str]:
    """No effect of the claimed sign found: "does not hold" only where the test could have
    detected the claimed effect (MDE <= claimed), "inconclusive (underpowered)" otherwise; an MDE
    within BORDERLINE_MARGIN of the claimed effect makes it "does not hold (borderline power)"."""
    powered = math.isfinite(mde) and math.isfinite(claimed) and mde <= claimed
    if not powered:
        return INCONCLUSIVE, f"{why}; {power_note(mde, claimed)}"
    borderline = mde >= (1 - BORDERLINE_MARGIN) * claimed
    return (
        (BORDERLINE if borderline else FAILS),
        f"{why}; {power_note(mde, claimed)}"
        + (f" (within {BORDERLINE_MARGIN:.0%} of it: borderline)" if borderline else ""),
    )


def relative_verdict(
    diffs: Sequence[float],
    direction: str,
    alpha: float = ALPHA,
    claimed: float = math.nan,
    mde: float | None = None,
) -> tuple[str, str]:
    """Verdict on paired differences config - baseline (one per seed) and the claimed direction.
    `claimed`: the paper's effect in our units; `mde`: the test's minimum detectable effect
    (default: the paired t-test's, `paired_mde`). See the module docstring for the rule."""
    d = np.asarray(diffs, float)
    n, sign = len(d), _sign(direction)
    if n == 0:
        return NOT_COMPARABLE, "no seed measured for both configurations"
    mde = paired_mde(d) if mde is None else mde
    mean = float(d.mean())
    if mean == 0:
        return _undecided(f"no difference ({n} seed{'s' if n > 1 else ''})", mde, claimed)
    right = mean * sign > 0
    if n == 1:
        return (
            (HOLDS, "claimed sign (1 seed: sign only, seed noise unknown)")
            if right
            else _undecided("opposite sign (1 seed: sign only, seed noise unknown)", mde, claimed)
        )
    if n == 2:
        sd = float(d.std(ddof=1))
        noise = abs(mean) > 2 * sd
        how = f"2 seeds: |diff| {'>' if noise else '<='} 2 std of the differences ({sd:.3g})"
    else:
        p = paired_stats(d, np.zeros(n))["p_value"]
        noise = p < alpha
        how = f"{n} seeds: paired t-test p = {p:.2g}"
    if right and noise:
        return HOLDS, f"claimed sign, beyond seed noise ({how})"
    if noise:  # an effect detected, of the other sign: decided whatever the power
        return FAILS, f"opposite sign, beyond seed noise ({how})"
    return _undecided(
        f"{'claimed' if right else 'opposite'} sign but within seed noise ({how})", mde, claimed
    )


def _change(a: float, b: float, kind: str) -> float:
    """The effect as the paper states it: pp difference, relative change, or ratio."""
    if kind == "pp":
        return (a - b) * 100
    if b == 0 or not (math.isfinite(a) and math.isfinite(b)):
        return math.nan
    return (a - b) / b if kind == "relative" else a / b


def _fmt_change(x: float, kind: str) -> str:
    if not math.isfinite(x):
        return "n/a"
    return {"pp": f"{x:+.1f} pp", "relative": f"{x * 100:+.0f} %", "ratio": f"{x:.2g}x"}[kind]


def _magnitude(ours: float, paper: float, kind: str) -> str:
    """Our effect against the paper's, on a scale where 1 = the paper's size."""
    if kind == "ratio":
        if ours <= 0 or paper <= 0 or paper == 1:
            return ""
        frac = math.log(ours) / math.log(paper)
    else:
        frac = ours / paper if paper else math.nan
    if not math.isfinite(frac) or frac <= 0:
        return ""
    size = (
        "under half the paper's"
        if frac < 0.5
        else "over twice the paper's"
        if frac > 2
        else "similar to the paper's"
    )
    return f"magnitude {_fmt_change(ours, kind)} vs paper {_fmt_change(paper, kind)}: {size}"


def absolute_verdict(
    claim: Claim, mismatches: list[str], mean: float, std: float, n: int, analogue: bool = False
) -> tuple[str, str]:
    """Our value of `claim.config` against the paper's number (see the module docstring)."""
    if claim.paper_value is None:
        return NOT_COMPARABLE, "no value claimed"
    if claim.absolute_note:
        return NOT_COMPARABLE, claim.absolute_note
    if analogue:
        return NOT_COMPARABLE, "a different (analogue) dataset"
    if mismatches:
        return NOT_COMPARABLE, "; ".join(mismatches)
    if n == 0 or not math.isfinite(mean):
        return NOT_COMPARABLE, "not measured"
    tol = max(
        2 * std if n > 1 and math.isfinite(std) else 0.0, ABS_REL_TOL * abs(claim.paper_value)
    )
    gap = (mean - claim.paper_value) * _sign(claim.direction)
    ok = gap >= -tol
    return (
        HOLDS if ok else FAILS,
        f"ours {_fmt(mean)} vs paper {_fmt(claim.paper_value)} (tolerance {_fmt(tol)})",
    )


# ============================================================================================
# The table
# ============================================================================================
def format_measured(mean: float, std: float, n: int) -> str:
    """ "mean ± std (n seeds)"; the std is left out for one seed."""
    if n == 0:
        return "not measured"
    if n == 1 or not math.isfinite(std):
        return f"{_fmt(mean)} (1 seed)"
    if std > 0 and math.isfinite(mean):  # both at the std's second significant digit
        d = min(6, max(0, 1 - math.floor(math.log10(std))))
        return f"{mean:,.{d}f} ± {std:,.{d}f} ({n} seeds)"
    return f"{_fmt(mean)} ± {_fmt(std)} ({n} seeds)"


def _summary(values: pd.Series) -> tuple[float, float, int]:
    n = len(values)
    return (
        float(values.mean()) if n else math.nan,
        float(values.std(ddof=1)) if n > 1 else math.nan,
        n,
    )


# Sparsity metrics themselves: "more active features" cannot be checked at matched L0.
_NOT_MATCHABLE = ("l0", "l1", "frac_alive", "alive", "dead")


def pareto_frontier(points: pd.DataFrame, metric: str, direction: str) -> pd.DataFrame:
    """The baselines' sparsity-fidelity frontier: the runs (rows with columns l0 and `metric`,
    means over seeds) that no other run beats with at most their L0, sorted by L0. Along it the
    metric improves strictly with L0; off it a run is dominated by a sparser, better one."""
    sign, best, keep = _sign(direction), -math.inf, []
    for name, r in points.sort_values(
        ["l0", metric], ascending=[True, direction == "lower"]
    ).iterrows():
        if r[metric] * sign > best:
            keep.append(name)
            best = r[metric] * sign
    return points.loc[keep]


def frontier_at(frontier: pd.DataFrame, l0: float) -> dict[str, float]:
    """The frontier's value at `l0` as weights on its runs: linear in log L0 between the two
    frontier runs that bracket it ({run: 1.0} at an exact L0; {densest frontier run below: 1.0}
    past the frontier's densest run, where denser baselines exist but are dominated, so the
    frontier stays flat). Empty when no frontier run is at most `l0` (extrapolation refused)."""
    below, above = frontier[frontier["l0"] <= l0], frontier[frontier["l0"] >= l0]
    if below.empty:
        return {}
    lo = below.index[-1]
    if above.empty or frontier.loc[lo, "l0"] == l0:
        return {lo: 1.0}
    hi = above.index[0]
    w = (math.log(l0) - math.log(frontier.loc[lo, "l0"])) / (
        math.log(frontier.loc[hi, "l0"]) - math.log(frontier.loc[lo, "l0"])
    )
    return {lo: 1.0 - w, hi: w}


def _against_weights(
    results: pd.DataFrame, config: str, metric: str, weights: dict[str, float]
) -> tuple[np.ndarray, str]:
    """Per-seed differences `config` - (weighted baseline runs). Runs with 2+ seeds enter per
    seed (paired: their seed noise counts); a one-seed run (a sweep point) enters as a fixed
    value, said in the note. Seeds: `config`'s, shared by every multi-seed run."""
    ours = _per_seed(results, config, metric)
    per = {c: _per_seed(results, c, metric) for c in weights}
    multi = [c for c, v in per.items() if len(v) >= 2]
    seeds = ours.index
    for c in multi:
        seeds = seeds.intersection(per[c].index)
    if multi and len(seeds) == 0:  # no shared seeds: every run as its mean
        multi, seeds = [], ours.index
    fixed = sum(w * float(per[c].mean()) for c, w in weights.items() if c not in multi)
    diffs = (
        ours[seeds].to_numpy() - fixed - sum(weights[c] * per[c][seeds].to_numpy() for c in multi)
    )
    single = [c for c in weights if c not in multi]
    note = (
        f"; {', '.join(single)}: one seed, taken as fixed (its seed noise unknown)"
        if single and len(seeds) > 1
        else ""
    )
    return diffs, note


def matched_sparsity_verdict(
    results: pd.DataFrame, config: str, metric: str, direction: str, claimed: float = math.nan
) -> tuple[str, str]:
    """Does `config` beat the baselines' frontier at its own L0?

    Fidelity improves with L0 for every SAE, so only a baseline at least as dense can decide:
    a denser code that beats sparser baselines shows nothing about the method. The baselines
    are every non-HierarchicalSAE configuration of the table (headline runs and sparsity
    sweeps), at their means over seeds; their frontier (`pareto_frontier`) is interpolated
    linearly in log L0 between the two frontier runs that bracket `config`'s L0
    (`frontier_at`). The verdict is `relative_verdict` on the per-seed differences from that
    frontier value (paired where the bracketing runs have the seeds, so the seed noise of both
    sides counts; a one-seed run enters as fixed), with its power rule against `claimed`.
    "not comparable" where no baseline run reaches `config`'s L0 (no run at or above it), and
    where every baseline is denser and `config` does not beat the sparsest of them (the
    frontier below its first run is unknown).
    """
    if metric is None or metric.split(":")[0] in _NOT_MATCHABLE:
        return NOT_COMPARABLE, "a sparsity measure itself"
    sub = results[results["metric"].isin([metric, "l0"])]
    means = sub.pivot_table(index="config", columns="metric", values="value", aggfunc="mean")
    if metric not in means or "l0" not in means or config not in means.index:
        return NOT_COMPARABLE, f"{metric} or l0 not measured for {config}"
    l0 = means.loc[config, "l0"]
    base = means.loc[[c for c in means.index if family(c) != "hierarchical"]].dropna()
    base = base[base["l0"] > 0]
    if base.empty or base["l0"].max() < l0:
        densest = (
            f" (densest: {base['l0'].idxmax()} at L0 {_fmt(base['l0'].max())})"
            if not base.empty
            else ""
        )
        return NOT_COMPARABLE, (
            f"no baseline run reaches its L0 {_fmt(l0)}{densest}: beating "
            "sparser baselines is expected of a denser code"
        )
    frontier = pareto_frontier(base, metric, direction)
    weights = frontier_at(frontier, l0)
    only_denser = not weights
    if only_denser:  # every baseline denser: decided only if ours beats the sparsest one
        weights = {frontier.index[0]: 1.0}
    value = sum(w * frontier.loc[c, metric] for c, w in weights.items())
    how = " and ".join(
        f"{c} (L0 {_fmt(frontier.loc[c, 'l0'])}, {_fmt(frontier.loc[c, metric])})" for c in weights
    )
    where = (
        f"ours {_fmt(means.loc[config, metric])} at L0 {_fmt(l0)}; baselines' frontier "
        f"{_fmt(value)} there"
        + (f", interpolated in log L0 between {how}" if len(weights) > 1 else f": {how}")
    )
    diffs, note = _against_weights(results, config, metric, weights)
    verdict, why = relative_verdict(diffs, direction, claimed=claimed)
    if only_denser and verdict != HOLDS:
        return NOT_COMPARABLE, (
            f"every baseline is denser and ours does not beat the sparsest "
            f"({where}): the frontier at its L0 is unknown"
        )
    return verdict, f"{where}{note}; {why}"


def _is_probing(metric: str | None) -> bool:
    return bool(metric) and metric.split(":")[0].startswith("sae_top_")


def probing_test_mde(profile, baseline_acc: float, direction: str) -> tuple[float, str]:
    """MDE of a probe's test accuracy from the test-set size alone (two independent proportions
    at the baseline's accuracy): each one-vs-rest probe is tested on its class's
    `probe_test_per_class` texts plus as many negatives. Averaging over classes and datasets
    reuses texts, so 2 x per class is the conservative count. The seed t-test cannot see this
    noise: every SAE is probed on the same test texts."""
    n = 2 * profile.probe_test_per_class
    mde = (
        proportion_mde(baseline_acc, n, _sign(direction))
        if math.isfinite(baseline_acc)
        else math.nan
    )
    shown = "none (no accuracy that far off exists)" if mde == math.inf else _fmt(mde)
    return mde, f"test set {n} texts per one-vs-rest probe: MDE {shown}"


def absorption_caveat(profile) -> str:
    """SAEBench's width / model-size caveat for absorption on real activations ('' if none)."""
    if profile.dict_size >= ABSORPTION_MIN_LATENTS and profile.d_model >= ABSORPTION_MIN_D_MODEL:
        return ""
    return (
        f"caveat: SAEBench finds absorption meaningful for {ABSORPTION_MIN_LATENTS:,}+ "
        f"latents on 1B+ models; this profile has {profile.dict_size:,} latents on "
        f"{profile.model_name} (d_model {profile.d_model})"
    )


def claims_table(
    results: pd.DataFrame,
    profile,
    claims: Sequence[Claim] = CLAIMS,
    ground_truth: tuple[str, str] | None = None,
    readings: dict[str, str] | None = None,
    overhead: dict | None = None,
) -> pd.DataFrame:
    """One row per claim: the paper's numbers, ours (mean ± std over seeds), the paired
    difference, the test's power, a relative, a matched-L0 and an absolute verdict with their
    reasons, the ground-truth verdict of absorption (`ground_truth`: (verdict, reason), from
    notebook 10's table, `experiment.verdicts.ground_truth_verdict`), the verdicts' sensitivity to
    the ambiguous readings (`readings`: claim id -> text, from notebook 11's table,
    `experiment.sensitivity.sensitivity_column`), the artifacts, whether the paper's own run
    backs the number (`provenance`) and `same_as`: the earlier claim on identical data (a
    configuration whose results repeat another's exactly, `identical_configs`), counted once.
    `overhead`: the benchmark's step-time overheads (`measured.read_overhead`) for the training
    time claim.

    `results` is the evaluation's tidy table (run, config, seed, metric, value); configurations
    other than those the claims name are ignored."""
    mismatches = paper_setting_mismatches(profile)
    gt = ground_truth or ("", "")
    readings = readings or {}
    same = identical_configs(results) if len(results) else {}
    seen: dict[tuple, Claim] = {}  # (config or the one it repeats, baseline, metric) -> claim
    rows = []
    for c in claims:
        metric, missing, analogue = c.resolve(profile)
        key = (same.get(c.config, c.config), c.baseline, metric)
        first = seen.setdefault(key, c) if metric else c
        same_as = "" if first is c else first.id
        vb = _per_seed(results, c.baseline, metric) if metric else pd.Series(dtype=float)
        va = _per_seed(results, c.config, metric) if metric else pd.Series(dtype=float)
        (mb, sb, nb), (ma, sa, na) = _summary(vb), _summary(va)
        seeds = va.index.intersection(vb.index)
        pair = paired_stats(va[seeds].to_numpy(), vb[seeds].to_numpy())
        paper_change = (
            _change(c.paper_value, c.paper_baseline, c.change)
            if c.paper_value is not None and c.paper_baseline is not None
            else math.nan
        )
        ours_change = _change(pair["mean_a"], pair["mean_b"], c.change) if len(seeds) else math.nan
        claimed = claimed_effect(c, mb)
        mde = paired_mde(va[seeds] - vb[seeds]) if len(seeds) else math.nan
        power = power_note(mde, claimed)
        if _is_probing(metric) and len(seeds):
            test_mde, test_note = probing_test_mde(profile, mb, c.direction)
            power = (
                f"{power_note(max(mde, test_mde), claimed)} (seeds: MDE {_fmt(mde)}; {test_note})"
            )
            mde = max(mde, test_mde)  # NaN (1 seed) stays NaN
        if missing:
            verdict, reason = NOT_COMPARABLE, missing
        elif metric == TRAIN_STEP_RATIO:
            verdict, reason, ratio = train_time_verdict(c, overhead)
            ma, sa, na = ratio, math.nan, int(math.isfinite(ratio))
            mb, sb, nb = (1.0, math.nan, 1) if na else (math.nan, math.nan, 0)
            ours_change = ratio
        elif (va.empty or vb.empty) and c.not_measured:
            verdict, reason = NOT_MEASURED, c.not_measured
        elif va.empty or vb.empty:
            absent = [cfg for cfg, v in ((c.config, va), (c.baseline, vb)) if v.empty]
            verdict, reason = NOT_COMPARABLE, f"{metric} not measured for {' and '.join(absent)}"
        else:
            verdict, reason = relative_verdict(
                va[seeds] - vb[seeds], c.direction, claimed=claimed, mde=mde
            )
            if verdict != NOT_COMPARABLE and pair["mean_diff"] * _sign(c.direction) > 0:
                mag = _magnitude(ours_change, paper_change, c.change)
                reason += f"; {mag}" if mag else ""
            if analogue:
                reason += f"; {c.dataset_note}"
            if "absorption" in metric and absorption_caveat(profile):
                reason += f"; {absorption_caveat(profile)}"
        absolute, abs_reason = (
            (NOT_COMPARABLE, missing)
            if missing
            else absolute_verdict(c, mismatches, ma, sa, na, analogue)
        )
        matched, matched_reason = (
            (NOT_COMPARABLE, missing)
            if missing
            else (NOT_COMPARABLE, "a timing, not a fidelity at some sparsity")
            if metric == TRAIN_STEP_RATIO
            else matched_sparsity_verdict(results, c.config, metric, c.direction, claimed)
        )
        if same_as:
            reason += f"; counted once: the same data as claim {same_as}" + (
                f" ({c.config} repeats {first.config}'s results exactly)"
                if c.config != first.config
                else ""
            )
        rows.append(
            {
                "id": c.id,
                "source": c.source,
                "claim": c.text,
                "metric": metric or c.metric or "",
                "config": c.config,
                "baseline": c.baseline,
                "direction": c.direction,
                "paper_baseline": c.paper_baseline,
                "paper_value": c.paper_value,
                "paper": (
                    f"{_fmt(c.paper_baseline)} -> {_fmt(c.paper_value)}"
                    if c.paper_baseline is not None
                    else _fmt(c.paper_value)
                    if c.paper_value is not None
                    else "no number"
                ),
                "mean_baseline": mb,
                "std_baseline": sb,
                "n_baseline": nb,
                "mean": ma,
                "std": sa,
                "n": na,
                "ours_baseline": format_measured(mb, sb, nb),
                "ours": format_measured(ma, sa, na),
                "paper_change": _fmt_change(paper_change, c.change),
                "ours_change": (
                    f"{ours_change:.3g}x"
                    if metric == TRAIN_STEP_RATIO and math.isfinite(ours_change)
                    else _fmt_change(ours_change, c.change)
                ),
                "n_paired": pair["n_seeds"],
                "mean_diff": pair["mean_diff"],
                "cohens_dz": pair["cohens_dz"],
                "p_value": pair["p_value"],
                "claimed_effect": claimed,
                "mde": mde,
                "power": (
                    ""
                    if missing
                    else "one benchmark run: no test"
                    if metric == TRAIN_STEP_RATIO
                    else power
                ),
                "verdict": verdict,
                "reason": reason,
                "matched_l0": matched,
                "matched_l0_reason": matched_reason,
                "absolute": absolute,
                "absolute_reason": abs_reason,
                "ground_truth": gt[0] if c.id == "absorption" else "",
                "ground_truth_reason": gt[1] if c.id == "absorption" else "",
                "sensitivity": readings.get(c.id, ""),
                "mapping": c.mapping,
                "artifacts": c.artifacts,
                "provenance": c.provenance,
                "same_as": same_as,
            }
        )
    table = pd.DataFrame(rows)
    table.attrs["profile"] = getattr(profile, "name", "")
    table.attrs["mismatches"] = mismatches
    return table


# ============================================================================================
# Writing
# ============================================================================================
MARKDOWN_COLUMNS = {
    "id": "id",
    "source": "source",
    "claim": "claim",
    "metric": "our metric",
    "config": "config",
    "paper": "paper: TopK -> config",
    "provenance": "backed by the paper's own run?",
    "ours_baseline": "ours: topk",
    "ours": "ours: config",
    "paper_change": "change: paper",
    "ours_change": "change: ours",
    "verdict": "verdict",
    "reason": "why",
    "power": "power (MDE vs claimed effect)",
    "matched_l0": "at matched L0",
    "matched_l0_reason": "at matched L0: why",
    "absolute": "absolute",
    "absolute_reason": "absolute: why",
    "ground_truth": "ground truth",
    "ground_truth_reason": "ground truth: why",
    "sensitivity": "sensitivity to the readings",
    "fragile": "within the cross-machine tolerance",
    "fragile_reason": "within the tolerance: why",
    "same_as": "same data as",
    "artifacts": "the paper's run artifacts",
}


def absorption_note(table: pd.DataFrame) -> str:
    """What SAEBench's two absorption measures measure, and whether their verdicts agree here
    ('' when the table has not both rows)."""
    rows = table.set_index("id")
    if not {"absorption", "absorption_fraction"} <= set(rows.index):
        return ""
    full, frac = rows.loc["absorption"], rows.loc["absorption_fraction"]
    said = lambda r: f"{r['verdict']} ({r['ours_baseline']} -> {r['ours']})"  # noqa: E731
    agree = np.sign(full["mean"] - full["mean_baseline"]) == np.sign(
        frac["mean"] - frac["mean_baseline"]
    )
    return (
        f"Absorption has two SAEBench measures, each judged as its own claim. *Full "
        f"absorption* (`mean_full_absorption_score`, the paper's number): "
        f"{ABSORPTION_MEASURES['mean_full_absorption_score']}. *Absorption fraction* "
        f"(`mean_absorption_fraction_score`): "
        f"{ABSORPTION_MEASURES['mean_absorption_fraction_score']}. Here, TopK -> "
        f"HierarchicalSAE: full absorption {said(full)}; absorption fraction {said(frac)}: "
        + (
            "the two move in the same direction (or neither moves)."
            if agree
            else "they move in opposite directions, so no single verdict on absorption stands: an "
            "SAE can avoid "
            "all-or-nothing absorption by one latent while spreading part of the letter "
            "signal over several."
        )
    )


def claims_markdown(
    table: pd.DataFrame, profile_name: str, tests: pd.DataFrame | None = None
) -> str:
    mismatches = table.attrs.get("mismatches")
    shown = table.copy()
    columns = {k: v for k, v in MARKDOWN_COLUMNS.items() if k in shown}  # older tables: fewer
    if mismatches:  # the profile-wide reason is said once, above the table
        same = shown["absolute_reason"] == "; ".join(mismatches)
        shown.loc[same, "absolute_reason"] = "profile (above)"
    once = table[table["same_as"] == ""] if "same_as" in table else table
    counts = once["verdict"].value_counts()
    repeats = len(table) - len(once)
    parts = [
        f"# The paper's claims versus our measurements (profile `{profile_name}`)",
        "",
        "Generated by `hsae_utils.analysis.claims`. *verdict*: HierarchicalSAE (or the Table 1 stage) "
        "minus TopK, paired by seed: **holds** when of the claimed sign and beyond seed noise "
        f"(paired t-test p < {ALPHA} with >= 3 seeds; |mean| > 2 std of the differences with 2; "
        "the sign alone with 1); **does not hold** when of the opposite sign beyond noise, or "
        "when no effect of the claimed sign is found by a test whose minimum detectable effect "
        f"(MDE: paired t-test, alpha {ALPHA}, power {POWER}, observed std of the differences; "
        "probing: also a two-proportion test at the test-set size) is at most the paper's "
        "claimed effect (**does not hold (borderline power)** when that MDE is within "
        f"{BORDERLINE_MARGIN:.0%} of the claimed effect); **inconclusive (underpowered)** when "
        "the MDE is larger (or 1 seed); **not measured** when the measurement has not run (the "
        "reason says how to run it); **not comparable** when we cannot measure it. *at matched "
        "L0*: does the configuration beat the baselines' frontier at its own L0? Fidelity grows "
        "with L0 for every SAE, so only a baseline at least as dense can decide: the frontier of "
        "every baseline run (headline and sparsity sweeps; the runs no sparser run beats) is "
        "interpolated in log L0 between the two runs that bracket the configuration's L0, and "
        "the same rule as *verdict* is applied to the per-seed differences from it (paired where "
        "the bracketing runs have the seeds; a one-seed sweep run counts as fixed); **not "
        "comparable** where no baseline run reaches its L0. "
        "*absolute*: our value against the paper's number, only on the paper's "
        "setting and within max(2 std, 5 %) or better. *ground truth*: on synthetic activations "
        "with a known feature hierarchy (notebook 10), does the HierarchicalSAE absorb less than "
        "TopK at its L0? *sensitivity to the readings* (notebook 11): the verdicts recomputed "
        "with each alternative reading of an ambiguous passage (`hsae_utils/experiment/readings.py`) "
        "trained on seed 42 in place of the default runs it replaces; a change on every seed "
        "assumes the reading moves each seed as it moved seed 42 (`hsae_utils/experiment/sensitivity.py`).",
        "",
        (
            "Absolute values are not comparable on this profile: " + "; ".join(mismatches) + "."
            if mismatches
            else "This profile is the paper's setting: absolute values compare "
            "(except where units differ), but the paper's TopK had "
            f"{PAPER_TOPK_DICT_SIZE:,} latents."
        ),
        "",
        *([absorption_note(table), ""] if absorption_note(table) else []),
        # the fragile column's sentence (`analysis.tolerance.mark_fragile`)
        *([table.attrs["fragile_note"], ""] if table.attrs.get("fragile_note") else []),
        "Verdicts: "
        + ", ".join(f"{k} {v}" for k, v in counts.items())
        + (
            f" ({repeats} claim{'s' if repeats > 1 else ''} on data identical to an earlier "
            "claim's, a configuration repeating another's results exactly, counted once: "
            "column *same data as*)"
            if repeats
            else ""
        )
        + ".",
        "",
        markdown_table(shown, columns),
    ]
    if tests is not None and not tests.empty:
        a, b = tests["a"].iloc[0], tests["b"].iloc[0]
        parts += [
            "",
            f"## `{a}` versus `{b}`: paired t-tests over seeds",
            "",
            "Cohen's d_z = mean difference / std of the paired differences.",
            "",
            markdown_table(
                tests,
                {
                    k: k
                    for k in (
                        "metric",
                        "n_seeds",
                        "mean_a",
                        "mean_b",
                        "mean_diff",
                        "std_diff",
                        "cohens_dz",
                        "t",
                        "p_value",
                        "note",
                    )
                },
            ),
        ]
    return "\n".join(parts) + "\n"


def write_claims(
    table: pd.DataFrame, out_dir: str | Path, profile_name: str, tests: pd.DataFrame | None = None
) -> dict[str, Path]:
    """Write `claims_<profile>.md` and `claims_<profile>.csv` (and `paired_tests_<profile>.csv`
    when `tests` is given), each atomically. Returns the paths."""
    out_dir = Path(out_dir)
    paths = {
        "md": out_dir / f"claims_{profile_name}.md",
        "csv": out_dir / f"claims_{profile_name}.csv",
    }
    with atomic_path(paths["csv"]) as tmp:
        table.to_csv(tmp, index=False)
    if tests is not None:
        paths["tests_csv"] = out_dir / f"paired_tests_{profile_name}.csv"
        with atomic_path(paths["tests_csv"]) as tmp:
            tests.to_csv(tmp, index=False)
    write_text_atomic(paths["md"], claims_markdown(table, profile_name, tests))
    return paths
