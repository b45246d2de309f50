"""The claims table and paired statistics (hsae_utils.analysis.claims), on small synthetic result tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from hsae_utils.analysis import claims as cl
from hsae_utils.config import get_profile
from hsae_utils.experiment import verdicts

LOCAL, PAPER = get_profile("local"), get_profile("paper")


def tidy(values: dict[tuple[str, str], list[float]], seeds=(42, 43, 44)) -> pd.DataFrame:
    """evals.run.py's tidy table from {(config, metric): one value per seed}."""
    rows = [
        {"run": f"{cfg}/seed{s}", "config": cfg, "seed": s, "metric": m, "value": v}
        for (cfg, m), vals in values.items()
        for s, v in zip(seeds, vals)
    ]
    return pd.DataFrame(rows, columns=["run", "config", "seed", "metric", "value"])


# HSAE clearly better than TopK on EV and KL; sparse-probing top-1 on the local analogue task.
RESULTS = tidy(
    {
        ("topk", "explained_variance_legacy"): [0.80, 0.81, 0.79],
        ("stage5_clustering", "explained_variance_legacy"): [0.90, 0.915, 0.905],
        ("topk", "kl_div_with_sae"): [0.10, 0.11, 0.105],
        ("stage5_clustering", "kl_div_with_sae"): [0.20, 0.22, 0.21],  # worse: opposite sign
        ("topk", "sae_top_1_test_accuracy:programming_language"): [0.7, 0.72, 0.71],
        ("stage5_clustering", "sae_top_1_test_accuracy:programming_language"): [0.8, 0.83, 0.81],
        # an extra sweep configuration: ignored
        ("stage5_clustering__merge_every-50", "explained_variance_legacy"): [0.1, 0.1, 0.1],
    }
)


def row(table: pd.DataFrame, claim_id: str) -> pd.Series:
    return table.set_index("id").loc[claim_id]


def test_claims_are_well_formed():
    from hsae_utils.runs import RUNS

    ids = [c.id for c in cl.CLAIMS]
    assert len(ids) == len(set(ids))
    for c in cl.CLAIMS:
        assert c.config in RUNS and c.baseline in RUNS, c.id
        assert c.direction in ("higher", "lower") and c.change in ("pp", "relative", "ratio")
        assert c.artifacts, c.id
    # every Table 1 stage row, each of the four probing datasets, the abstract's five numbers
    assert {
        f"t1_{s}_{m}"
        for s in ("stage1", "stage2", "stage4")
        for m in ("variance", "features", "kl")
    } <= set(ids)
    assert {
        "probing_bias_in_bios",
        "probing_amazon",
        "probing_github",
        "probing_europarl",
        "absorption",
        "explained_variance",
        "probing_top1",
        "active_features",
        "kl_divergence",
        "mse",
        "l1",
        "t1_loss",
    } <= set(ids)


def test_claim_that_holds():
    r = row(cl.claims_table(RESULTS, LOCAL), "explained_variance")
    assert r["verdict"] == cl.HOLDS
    assert "t-test" in r["reason"] and r["n_paired"] == 3
    assert r["ours"] == "0.9067 ± 0.0076 (3 seeds)"
    assert r["ours_baseline"].endswith("(3 seeds)")
    assert r["paper_change"] == "+7.8 pp" and r["ours_change"] == "+10.7 pp"
    assert math.isclose(r["mean_diff"], 0.32 / 3)


def test_claim_that_does_not_hold():
    r = row(cl.claims_table(RESULTS, LOCAL), "kl_divergence")
    assert r["verdict"] == cl.FAILS and r["reason"].startswith("opposite sign")
    # the claimed sign but within seed noise so large that the paper's effect (-44 % of 0.15)
    # could not have been seen: inconclusive, not "does not hold"
    noisy = tidy(
        {
            ("topk", "kl_div_with_sae"): [0.10, 0.20, 0.15],
            ("stage5_clustering", "kl_div_with_sae"): [0.09, 0.25, 0.10],
        }
    )
    r = row(cl.claims_table(noisy, LOCAL), "kl_divergence")
    assert r["verdict"] == cl.INCONCLUSIVE and "within seed noise" in r["reason"]
    assert r["mde"] > r["claimed_effect"] and "underpowered" in r["power"]
    # no difference, with seed noise small enough to have seen the paper's effect: does not hold
    flat = tidy(
        {
            ("topk", "kl_div_with_sae"): [0.100, 0.110, 0.105],
            ("stage5_clustering", "kl_div_with_sae"): [0.101, 0.109, 0.106],
        }
    )
    r = row(cl.claims_table(flat, LOCAL), "kl_divergence")
    assert r["verdict"] == cl.FAILS and "within seed noise" in r["reason"]
    assert r["mde"] <= r["claimed_effect"] and "powered" in r["power"]


def test_not_comparable_claims():
    t = cl.claims_table(RESULTS, LOCAL)
    # metric missing from our results
    r = row(t, "absorption")
    assert r["verdict"] == cl.NOT_COMPARABLE and "not measured" in r["reason"]
    assert r["ours"] == "not measured"
    # a probing dataset without an embedded analogue
    r = row(t, "probing_bias_in_bios")
    assert r["verdict"] == cl.NOT_COMPARABLE and "no such probing task" in r["reason"]
    # not measurable at all: training losses of different objectives
    r = row(t, "t1_loss")
    assert r["verdict"] == cl.NOT_COMPARABLE and "objectives" in r["reason"]
    # a Table 1 stage that is not in the results
    assert row(t, "t1_stage1_variance")["verdict"] == cl.NOT_COMPARABLE


def test_probing_dataset_on_analogue_and_on_paper_names():
    r = row(cl.claims_table(RESULTS, LOCAL), "probing_github")
    assert r["metric"] == "sae_top_1_test_accuracy:programming_language"
    assert r["verdict"] == cl.HOLDS and "analogue" in r["reason"]
    assert r["absolute"] == cl.NOT_COMPARABLE  # a different dataset, whatever the profile
    r = row(cl.claims_table(RESULTS, PAPER), "probing_github")
    assert r["metric"] == "sae_top_1_test_accuracy:codeparrot/github-code"
    assert r["verdict"] == cl.NOT_COMPARABLE  # that metric is not in these results


def test_absolute_needs_the_papers_setting_relative_does_not():
    assert cl.paper_setting_mismatches(PAPER) == []
    mism = cl.paper_setting_mismatches(LOCAL)
    assert any("different model" in m for m in mism) and any("latents" in m for m in mism)
    assert any("budget" in m for m in mism)
    local, paper = cl.claims_table(RESULTS, LOCAL), cl.claims_table(RESULTS, PAPER)
    r = row(local, "explained_variance")
    assert r["verdict"] == cl.HOLDS and r["absolute"] == cl.NOT_COMPARABLE
    assert "different model" in r["absolute_reason"]
    r = row(paper, "explained_variance")  # 0.907 against the paper's 0.902
    assert r["verdict"] == cl.HOLDS and r["absolute"] == cl.HOLDS
    # the relative claim holds but the absolute value falls short of the paper's
    low = tidy(
        {
            ("topk", "explained_variance_legacy"): [0.50, 0.52, 0.51],
            ("stage5_clustering", "explained_variance_legacy"): [0.70, 0.71, 0.72],
        }
    )
    r = row(cl.claims_table(low, PAPER), "explained_variance")
    assert r["verdict"] == cl.HOLDS and r["absolute"] == cl.FAILS
    # units differ: never comparable, even on the paper's setting
    mse = tidy({("topk", "mse"): [4.0, 4.1, 4.2], ("stage5_clustering", "mse"): [2.0, 2.1, 2.2]})
    r = row(cl.claims_table(mse, PAPER), "mse")
    assert r["verdict"] == cl.HOLDS and r["absolute"] == cl.NOT_COMPARABLE
    assert "units" in r["absolute_reason"] and r["ours_change"] == "-49 %"


def test_paired_tests_known_answer():
    a, b = [1.0, 2.0, 4.0], [0.0, 0.5, 1.0]
    res = tidy(
        {("stage5_clustering", "mse"): a, ("topk", "mse"): b, ("topk", "l0"): [1.0, 2.0, 3.0]}
    )
    t = cl.paired_tests(res, metrics=["mse", "l0"]).set_index("metric")
    d = np.array(a) - np.array(b)  # 1, 1.5, 3
    mean, sd = d.mean(), math.sqrt(((d - d.mean()) ** 2).sum() / 2)
    tstat = mean / (sd / math.sqrt(3))
    p = 1 - abs(tstat) / math.sqrt(tstat**2 + 2)  # two-sided p of Student's t with 2 dof
    m = t.loc["mse"]
    assert m["n_seeds"] == 3 and math.isclose(m["mean_diff"], 11 / 6)
    assert math.isclose(m["mean_a"], 7 / 3) and math.isclose(m["mean_b"], 0.5)
    assert math.isclose(m["std_diff"], sd) and math.isclose(m["cohens_dz"], mean / sd)
    assert math.isclose(m["t"], tstat) and math.isclose(m["p_value"], p, rel_tol=1e-9)
    assert math.isnan(t.loc["l0", "p_value"]) and "not measured" in t.loc["l0", "note"]


def test_single_seed():
    res = tidy(
        {
            ("topk", "explained_variance_legacy"): [0.8],
            ("stage5_clustering", "explained_variance_legacy"): [0.9],
        },
        seeds=(42,),
    )
    t = cl.paired_tests(res, metrics=["explained_variance_legacy"]).iloc[0]
    assert t["n_seeds"] == 1 and math.isnan(t["p_value"]) and math.isnan(t["cohens_dz"])
    assert "no test" in t["note"]
    r = row(cl.claims_table(res, LOCAL), "explained_variance")
    assert r["verdict"] == cl.HOLDS and "sign only" in r["reason"]
    assert r["ours"] == "0.9 (1 seed)"


def test_relative_verdict_rules():
    assert cl.relative_verdict([0.1, 0.1, 0.1], "higher")[0] == cl.HOLDS  # constant difference
    # no difference at all: MDE 0, so decided against any claimed effect; unknown claim: undecided
    assert cl.relative_verdict([0.0, 0.0], "higher", claimed=0.05)[0] == cl.FAILS
    assert cl.relative_verdict([0.0, 0.0], "higher")[0] == cl.INCONCLUSIVE
    assert cl.relative_verdict([1.0, 1.1], "higher")[0] == cl.HOLDS  # 2 seeds: 1.05 > 2 x 0.07
    # 0.55 < 2 x 0.64: within noise; the 2-seed t-test's MDE is 11.5 x 0.64 = 7.3
    assert cl.relative_verdict([0.1, 1.0], "higher", claimed=1.0)[0] == cl.INCONCLUSIVE
    assert cl.relative_verdict([0.1, 1.0], "higher", claimed=9.0)[0] == cl.FAILS
    # MDE 7.3 within 10 % of a claimed 8.0: powered, but only just
    v, why = cl.relative_verdict([0.1, 1.0], "higher", claimed=8.0)
    assert v == cl.BORDERLINE == "does not hold (borderline power)" and "borderline" in why
    assert cl.relative_verdict([-0.2], "lower")[0] == cl.HOLDS
    # one seed of the opposite sign: no test, so no power: inconclusive
    assert cl.relative_verdict([0.2], "lower", claimed=0.1)[0] == cl.INCONCLUSIVE
    # the opposite sign beyond noise is decided whatever the power
    v, why = cl.relative_verdict([-1.0, -1.1, -0.9], "higher", claimed=0.01)
    assert v == cl.FAILS and why.startswith("opposite sign, beyond seed noise")
    assert cl.relative_verdict([], "lower")[0] == cl.NOT_COMPARABLE
    with pytest.raises(ValueError):
        cl.relative_verdict([1.0], "better")


def test_write_claims(tmp_path):
    table = cl.claims_table(RESULTS, LOCAL)
    tests = cl.paired_tests(RESULTS)
    paths = cl.write_claims(table, tmp_path / "results", "local", tests=tests)
    assert paths["md"].name == "claims_local.md" and paths["csv"].name == "claims_local.csv"
    back = pd.read_csv(paths["csv"])
    assert list(back["id"]) == list(table["id"])
    md = paths["md"].read_text()
    assert md.count("\n| explained_variance |") == 1 and "different model" in md
    assert "paired t-tests" in md and paths["tests_csv"].exists()
    assert not list(paths["md"].parent.glob(".*.tmp"))  # no temporary file left behind


def frontier_table(runs: dict[str, tuple[float, list[float]]]) -> pd.DataFrame:
    """{config: (L0, ev on seeds 42, 43, 44 ...)} as a tidy table (one seed when one value)."""
    return pd.concat(
        [
            tidy({(c, "l0"): [l0] * len(ev), (c, "ev"): ev}, seeds=(42, 43, 44)[: len(ev)])
            for c, (l0, ev) in runs.items()
        ],
        ignore_index=True,
    )


NOISE = [0.0, 0.001, -0.001]  # seed noise shared by every configuration (paired by seed)


def seeds(v: float) -> list[float]:
    return [v + e for e in NOISE]


def test_matched_sparsity_needs_a_baseline_at_least_as_dense():
    """The old rule (beat every baseline with at most its L0) said "holds" for each of these;
    only a baseline as dense, or the frontier at the same L0, decides."""
    from hsae_utils.analysis.claims import matched_sparsity_verdict as mv

    sparse = {"topk": (80, seeds(0.70)), "relu_l1": (540, seeds(0.94))}
    # denser than every baseline and better than all of them: expected of a denser code
    t = frontier_table({**sparse, "stage5_clustering": (573, seeds(0.95))})
    v, why = mv(t, "stage5_clustering", "ev", "higher")
    assert v == cl.NOT_COMPARABLE and "no baseline run reaches its L0 573" in why
    # a denser baseline exists: the frontier at L0 573 lies between relu_l1 and it, in log L0
    dense = {**sparse, "relu_l1_lambda1": (900, seeds(0.99))}
    expected = np.interp(np.log(573), np.log([540, 900]), [0.94, 0.99])  # 0.9458
    t = frontier_table({**dense, "stage5_clustering": (573, seeds(0.943))})
    v, why = mv(t, "stage5_clustering", "ev", "higher", claimed=0.078)
    assert v == cl.FAILS and why.startswith(
        f"ours 0.943 at L0 573; baselines' frontier {cl._fmt(expected)} there, interpolated"
    )
    assert "opposite sign, beyond seed noise" in why
    t = frontier_table({**dense, "stage5_clustering": (573, seeds(0.96))})
    assert mv(t, "stage5_clustering", "ev", "higher")[0] == cl.HOLDS
    # on the frontier within noise, with noise small enough to see the claimed 7.8 pp: fails
    t = frontier_table(
        {**dense, "stage5_clustering": (573, [expected, expected + 0.002, expected - 0.001])}
    )
    v, why = mv(t, "stage5_clustering", "ev", "higher", claimed=0.078)
    assert v == cl.FAILS and "within seed noise" in why and "powered" in why


def test_matched_sparsity_frontier_skips_dominated_runs_and_refuses_to_extrapolate():
    from hsae_utils.analysis.claims import matched_sparsity_verdict as mv

    # a denser run that is worse than a sparser one is off the frontier: flat at 0.94 past 540
    runs = {"relu_l1": (540, seeds(0.94)), "relu_l1_lambda1": (900, seeds(0.90))}
    t = frontier_table({**runs, "stage5_clustering": (573, seeds(0.945))})
    v, why = mv(t, "stage5_clustering", "ev", "higher")
    assert v == cl.HOLDS and "baselines' frontier 0.94 there: relu_l1 (L0 540" in why
    # every baseline denser: only a win over the sparsest decides
    t = frontier_table({"relu_l1": (900, seeds(0.99)), "stage5_clustering": (573, seeds(0.95))})
    v, why = mv(t, "stage5_clustering", "ev", "higher")
    assert v == cl.NOT_COMPARABLE and "every baseline is denser" in why
    t = frontier_table({"relu_l1": (900, seeds(0.99)), "stage5_clustering": (573, seeds(0.995))})
    assert mv(t, "stage5_clustering", "ev", "higher")[0] == cl.HOLDS
    # a one-seed sweep run enters as a fixed value, said in the reason
    t = frontier_table(
        {
            "relu_l1": (540, [0.94]),
            "relu_l1_lambda1": (900, [0.99]),
            "stage5_clustering": (573, seeds(0.96)),
        }
    )
    v, why = mv(t, "stage5_clustering", "ev", "higher")
    assert v == cl.HOLDS and "one seed, taken as fixed" in why
    # lower is better (e.g. KL): the frontier is the lowest value with at most that L0, so the
    # denser, higher relu_l1 is off it
    t = frontier_table(
        {
            "topk": (80, seeds(0.70)),
            "relu_l1": (900, seeds(0.99)),
            "stage5_clustering": (573, seeds(0.80)),
        }
    )
    v, why = mv(t, "stage5_clustering", "ev", "lower")
    assert v == cl.FAILS and "baselines' frontier 0.7 there: topk (L0 80, 0.7)" in why
    assert mv(t, "stage5_clustering", "l0", "higher")[0] == cl.NOT_COMPARABLE


def test_frontier_interpolation_against_numpy():
    pts = pd.DataFrame(
        {"l0": [10.0, 50.0, 30.0, 200.0], "ev": [0.5, 0.7, 0.75, 0.9]}, index=["a", "b", "c", "d"]
    )
    front = cl.pareto_frontier(pts, "ev", "higher")
    assert list(front.index) == ["a", "c", "d"]  # b (L0 50, 0.70) is beaten by c at L0 30
    w = cl.frontier_at(front, 100.0)
    value = sum(wt * front.loc[c, "ev"] for c, wt in w.items())
    assert math.isclose(value, np.interp(np.log(100), np.log([30, 200]), [0.75, 0.9]))
    assert cl.frontier_at(front, 30.0) == {"c": 1.0} and cl.frontier_at(front, 5.0) == {}
    assert cl.frontier_at(front, 500.0) == {"d": 1.0}


# ----------------------------------------------------------------------------- power
def test_power_decides_with_tiny_noise_and_is_inconclusive_with_few_noisy_seeds():
    """A large claimed effect and tiny noise: a null result is decided; 3 noisy seeds: not."""
    rng = np.random.default_rng(0)
    base = 0.80 + 0.01 * rng.standard_normal(5)
    quiet = tidy(
        {
            ("topk", "explained_variance_legacy"): list(base),
            ("stage5_clustering", "explained_variance_legacy"): list(
                base + 1e-4 * rng.standard_normal(5)
            ),
        },
        seeds=(42, 43, 44, 45, 46),
    )
    r = row(cl.claims_table(quiet, LOCAL), "explained_variance")
    assert math.isclose(r["claimed_effect"], 0.078)  # 90.2 % - 82.4 %
    assert r["mde"] < 1e-3 and r["verdict"] == cl.FAILS
    noisy = tidy(
        {
            ("topk", "explained_variance_legacy"): [0.80, 0.70, 0.90],
            ("stage5_clustering", "explained_variance_legacy"): [0.90, 0.60, 0.85],
        }
    )
    r = row(cl.claims_table(noisy, LOCAL), "explained_variance")
    assert r["verdict"] == cl.INCONCLUSIVE and r["mde"] > 0.078
    # the MDE is statsmodels' d_z at n = 3 times the observed std of the paired differences
    d = np.array([0.10, -0.10, -0.05])
    assert math.isclose(r["mde"], 3.264 * d.std(ddof=1), rel_tol=1e-3)


def test_claimed_effect_in_our_units():
    by_id = {c.id: c for c in cl.CLAIMS}
    assert math.isclose(cl.claimed_effect(by_id["explained_variance"], 0.5), 0.078)  # pp: as is
    # relative: -34 % of our baseline's absorption; ratio: 5.4x -> 4.4 x our baseline's L0
    assert math.isclose(cl.claimed_effect(by_id["absorption"], 0.01), 0.01 * (1 - 58 / 88))
    assert math.isclose(cl.claimed_effect(by_id["active_features"], 80), 80 * (1735 / 320 - 1))
    assert math.isnan(
        cl.claimed_effect(
            by_id["t1_loss"].__class__("x", "", "", None, "lower", None, None, "pp"), 1.0
        )
    )


def test_proportion_mde_against_the_normal_formula():
    """Two proportions of n each: Cohen's h = (z_.975 + z_.8) sqrt(2 / n), independent of
    statsmodels (the far tail it adds is negligible at these sizes)."""
    from scipy.stats import norm

    from hsae_utils.analysis.stats import proportion_mde, proportion_sample_size

    for p0, n in ((0.5, 200), (0.701, 116), (0.9, 60)):
        h = (norm.ppf(0.975) + norm.ppf(0.8)) * math.sqrt(2 / n)
        p1 = math.sin(math.asin(math.sqrt(p0)) + h / 2) ** 2
        assert math.isclose(proportion_mde(p0, n), p1 - p0, rel_tol=2e-3)
    assert proportion_mde(0.99, 16) == math.inf  # no accuracy above 99 % + MDE exists
    # the profile's arithmetic (config.py): 70.1 % -> 85.3 % needs 115 texts per group
    assert proportion_sample_size(0.701, 0.853) == 115
    assert proportion_mde(0.701, 116) <= 0.152 < proportion_mde(0.701, 16)


def test_probing_power_counts_the_test_set():
    """Seeds that agree perfectly still leave the test set's noise: 8 test texts per class
    cannot decide a 15 pp claim; the local profile's test set can."""
    res = tidy(
        {
            ("topk", "sae_top_1_test_accuracy"): [0.70, 0.72, 0.71],
            ("stage5_clustering", "sae_top_1_test_accuracy"): [0.70, 0.72, 0.71],
        }
    )
    small = get_profile("local", probe_test_per_class=8)
    r = row(cl.claims_table(res, small), "probing_top1")
    assert r["verdict"] == cl.INCONCLUSIVE and "16 texts per one-vs-rest probe" in r["power"]
    r = row(cl.claims_table(res, LOCAL), "probing_top1")  # the abstract's 15.2 pp
    # MDE 0.150 against 0.152: powered by 1 %, so borderline
    assert r["verdict"] == cl.BORDERLINE and r["mde"] <= r["claimed_effect"]
    assert "116 texts per one-vs-rest probe" in r["power"]


def test_matched_sparsity_uses_power():
    from hsae_utils.analysis.claims import FAILS, INCONCLUSIVE, matched_sparsity_verdict

    def df(ours, base):
        rows = [
            (c, s, m, v)
            for c, vals in (("stage5_clustering", ours), ("topk", base))
            for s, (l0, ev) in zip((42, 43, 44), vals)
            for m, v in (("l0", l0), ("ev", ev))
        ]
        return pd.DataFrame(
            [(f"{c}/seed{s}", c, s, m, float(v)) for c, s, m, v in rows],
            columns=["run", "config", "seed", "metric", "value"],
        )

    # the baseline at the same L0 (a sparser one could not decide: matched_sparsity tests above)
    same = df([(90, 0.80), (90, 0.81), (90, 0.79)], [(90, 0.80), (90, 0.8101), (90, 0.7902)])
    v, why = matched_sparsity_verdict(same, "stage5_clustering", "ev", "higher", claimed=0.078)
    assert v == FAILS and "powered" in why
    noisy = df([(90, 0.80), (90, 0.60), (90, 0.90)], [(90, 0.75), (90, 0.75), (90, 0.75)])
    v, why = matched_sparsity_verdict(noisy, "stage5_clustering", "ev", "higher", claimed=0.078)
    assert v == INCONCLUSIVE and "underpowered" in why


def test_ground_truth_column_and_absorption_caveat():
    gt = pd.DataFrame(
        [
            {"config": c, "seed": s, "absorption": a, "l0": l0}
            for s in (1, 2, 3, 4)
            for c, a, l0 in (
                ("stage5_clustering", 0.10 + 0.001 * s, 20),
                ("topk_matched", 0.20 + 0.001 * s * s, 20),
            )
        ]
    )
    t = cl.claims_table(RESULTS, LOCAL, ground_truth=verdicts.ground_truth_verdict(gt))
    r = row(t, "absorption")
    assert (
        r["ground_truth"] == cl.HOLDS and "synthetic hierarchy, 4 seeds" in r["ground_truth_reason"]
    )
    assert row(t, "explained_variance")["ground_truth"] == ""
    assert (cl.claims_table(RESULTS, LOCAL)["ground_truth"] == "").all()  # no table: no column
    res = tidy(
        {
            ("topk", "mean_full_absorption_score"): [0.01, 0.011, 0.012],
            ("stage5_clustering", "mean_full_absorption_score"): [0.005, 0.006, 0.0065],
        }
    )
    assert "16,384+ latents" in row(cl.claims_table(res, LOCAL), "absorption")["reason"]
    assert (
        cl.absorption_caveat(
            get_profile(
                "local", d_sae=16_384 * 2, model_name="x", d_model=2304, n_layers=26, layer=19
            )
        )
        == ""
    )


def update_readme(figures_dir, monkeypatch):
    """scripts/update_readme.py as a module, reading its tables from `figures_dir` (which gets a
    Table 1)."""
    import importlib.util

    from hsae_utils.config import REPO_ROOT

    spec = importlib.util.spec_from_file_location(
        "update_readme", REPO_ROOT / "scripts" / "update_readme.py"
    )
    ur = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ur)
    monkeypatch.setattr(ur, "FIGURES_DIR", figures_dir)
    (figures_dir / "table1_local.md").write_text("| a |\n|---|\n| 1 |\n")
    return ur


def test_readme_block_renders_the_power_and_ground_truth_columns(tmp_path, monkeypatch):
    ur = update_readme(tmp_path, monkeypatch)
    cl.write_claims(cl.claims_table(RESULTS, LOCAL), tmp_path, "local")
    block = ur.block("local")
    assert "power (MDE vs claimed)" in block and "ground truth" not in block
    gt = pd.DataFrame(
        [
            {"config": c, "seed": s, "absorption": a, "l0": 20.0}
            for s in (1, 2, 3)
            for c, a in (("stage5_clustering", 0.1 + s / 100), ("topk_matched", 0.1 + s / 90))
        ]
    )
    cl.write_claims(
        cl.claims_table(RESULTS, LOCAL, ground_truth=verdicts.ground_truth_verdict(gt)),
        tmp_path,
        "local",
    )
    assert "ground truth (synthetic)" in ur.block("local")


def test_readme_timing_line_checks_the_pipeline_budgets(tmp_path, monkeypatch):
    """The generated timing line sums notebooks 01-09 and all of them against the budgets."""
    import importlib.util

    from hsae_utils.config import REPO_ROOT
    from hsae_utils.io import write_json_atomic

    spec = importlib.util.spec_from_file_location(
        "update_readme", REPO_ROOT / "scripts" / "update_readme.py"
    )
    ur = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ur)
    monkeypatch.setenv("HSAE_OUTPUT_ROOT", str(tmp_path))
    nbs = {"01_a.ipynb": (600, 0.5), "09_b.ipynb": (720, 1.5), "10_c.ipynb": (700, None)}
    path = tmp_path / "local" / "notebooks" / "timings.json"
    path.parent.mkdir(parents=True)
    write_json_atomic(
        path,
        {
            "notebooks": {k: {"seconds": s, "load_1min": ld} for k, (s, ld) in nbs.items()},
            "total_s": 2020,
            "machine": {"nproc": 2},
        },
    )
    line = ur.timing_line("local")
    assert "01-09 22.0 min <= 22 min: PASS" in line and "all 33.7 min <= 35 min: PASS" in line
    assert "0.5-1.5" in line
    nbs["09_b.ipynb"] = (721, 1.0)
    write_json_atomic(
        path,
        {
            "notebooks": {k: {"seconds": s} for k, (s, _) in nbs.items()},
            "total_s": 2400,
            "machine": {},
        },
    )
    line = ur.timing_line("local")
    assert "01-09 22.0 min <= 22 min: MISS" in line and "all 40.0 min <= 35 min: MISS" in line


def test_budget_counts_the_setup_that_run_all_recorded(tmp_path, monkeypatch):
    """`run_all.sh` exports the set-up's seconds; the pipeline writes them into timings.json and
    the "all" budget adds them to the notebooks' (set-up included, issue 25)."""
    from hsae_utils.io import read_json
    from hsae_utils.pipeline.cli import budget_checks
    from hsae_utils.pipeline.stages import record_setup, record_time

    path = tmp_path / "timings.json"
    record_time(path, "01_a.ipynb", 1500)
    record_setup(path, 600)
    record_time(path, "02_b.ipynb", 300)  # a later notebook keeps the set-up's seconds
    t = read_json(path)
    assert t["setup_s"] == 600 and t["total_s"] == 1800
    (part, minutes, slow, limit, ok), *_ = [c for c in budget_checks(t, "local") if c[0] == "all"]
    assert (minutes, slow, limit, ok) == (40.0, 40.0, 35.0, False)  # 30 of notebooks + 10 set-up


def test_budget_is_met_on_the_slow_end(tmp_path):
    """A run on a fast machine (its matmul rate recorded) is held to the slow end's rate: its
    notebooks' minutes scale by rate / 119, the set-up's do not; a slower machine is not scaled
    down."""
    from hsae_utils.io import read_json
    from hsae_utils.pipeline.cli import budget_checks
    from hsae_utils.pipeline.stages import record_rate, record_setup, record_time

    path = tmp_path / "timings.json"
    record_rate(path, 178.5)
    record_setup(path, 300)
    record_time(path, "01_a.ipynb", 1260)  # keeps the rate
    t = read_json(path)
    assert t["machine"]["matmul_gflops"] == 178.5
    (_, minutes, slow, limit, ok), *_ = [c for c in budget_checks(t, "local") if c[0] == "all"]
    assert minutes == 26.0 and slow == pytest.approx(21 * 178.5 / 119 + 5) and not ok  # 36.5
    record_rate(path, 100.0)
    (_, minutes, slow, _, ok), *_ = [
        c for c in budget_checks(read_json(path), "local") if c[0] == "all"
    ]
    assert slow == minutes == 26.0 and ok


def test_measured_values_print_at_their_spread():
    """Mean and std share the std's second significant digit (0.110 ± 0.020, not 0.11 ± 0.0204)."""
    from hsae_utils.analysis.claims import format_measured

    assert format_measured(0.11, 0.0204, 3) == "0.110 ± 0.020 (3 seeds)"
    assert format_measured(570.31, 0.52, 3) == "570.31 ± 0.52 (3 seeds)"
    assert format_measured(0.0111, 0.0116, 3) == "0.011 ± 0.012 (3 seeds)"
    assert format_measured(2.0, 0.0, 3) == "2 ± 0 (3 seeds)"
    assert format_measured(0.5, float("nan"), 1) == "0.5 (1 seed)"
