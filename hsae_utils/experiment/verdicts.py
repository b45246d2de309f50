"""The claims table with every column: notebook 08's results, notebook 10's ground truth and
notebook 11's sensitivity to the readings (notebooks 09, 10 and 11 each rewrite it).

It lives above `analysis.claims`, which takes those columns as arguments and never imports the
experiments that make them."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from hsae_utils.analysis.claims import (
    NOT_COMPARABLE,
    claims_table,
    paired_tests,
    power_note,
    write_claims,
)
from hsae_utils.analysis.measured import read_autointerp, read_overhead
from hsae_utils.analysis.report.tables import fmt_number as _fmt
from hsae_utils.analysis.tolerance import load_tolerance, mark_fragile
from hsae_utils.experiment.ground_truth.experiment import absorption_verdict
from hsae_utils.experiment.sensitivity import load_detail, sensitivity_column
from hsae_utils.runs import HSAE, TOPK


def load_ground_truth(profile) -> pd.DataFrame | None:
    """Notebook 10's table `results/ground_truth.csv`, or None when it has not run."""
    path = profile.results_dir / "ground_truth.csv"
    return pd.read_csv(path) if path.exists() else None


def ground_truth_verdict(gt: pd.DataFrame) -> tuple[str, str]:
    """Does the HierarchicalSAE absorb less than TopK at its L0 on the synthetic hierarchy,
    where absorption is measured exactly? (`ground_truth.absorption_verdict`)"""
    v = absorption_verdict(gt)
    if not v["n_seeds"]:
        return NOT_COMPARABLE, f"{v['a']} or {v['b']} missing from the ground-truth table"
    p = v["p_value"]
    return v["verdict"], v["matched_note"] + (
        f"synthetic hierarchy, {v['n_seeds']} seeds: {v['a']} {_fmt(v['mean_a'])} (L0 "
        f"{_fmt(v['l0_a'])}) vs {v['b']} {_fmt(v['mean_b'])} (L0 {_fmt(v['l0_b'])}), diff "
        f"{v['mean_diff']:+.3g}, p = {p:.2g}; {power_note(v['mde'], v['claimed_effect'])}"
        if math.isfinite(p)
        else f"synthetic hierarchy, {v['n_seeds']} seed(s): diff {v['mean_diff']:+.3g}, no test; "
        f"{power_note(v['mde'], v['claimed_effect'])}"
    )


def refresh_claims(profile, out_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, dict] | None:
    """Build and write the claims table (and the paired tests) from the profile's evaluation
    results and, when notebooks 10 and 11 have run, their ground truth and sensitivity: notebook
    09 writes it, notebooks 10 and 11 rewrite it with their columns. The fragile column reads
    `out_dir`/tolerance_<profile>.csv (`analysis.tolerance`; absent: "not measured"). None when
    notebook 08 has not run yet."""
    from hsae_utils.analysis.report.results import load_results

    if not (profile.results_dir / "evaluation.csv").is_file():
        return None
    tidy = load_results(profile).tidy
    tests = paired_tests(tidy, a=HSAE, b=TOPK)
    autointerp = read_autointerp(profile.results_dir)  # notebook 12, when it has run
    if len(autointerp):
        tidy = pd.concat([tidy, autointerp], ignore_index=True)
    gt = load_ground_truth(profile)
    table = claims_table(
        tidy,
        profile,
        ground_truth=ground_truth_verdict(gt) if gt is not None else None,
        readings=sensitivity_column(load_detail(profile)),
        overhead=read_overhead(),
    )
    table = mark_fragile(table, tidy, profile, *load_tolerance(profile, out_dir))
    return table, tests, write_claims(table, out_dir, profile.name, tests)
