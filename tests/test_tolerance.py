"""The cross-machine tolerance (hsae_utils.analysis.tolerance): per family and metric the largest
change a one-ulp nudge made, and the claims' verdicts it can flip marked fragile."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from hsae_utils.analysis import claims as cl
from hsae_utils.analysis import tolerance as tl
from hsae_utils.config import get_profile
from hsae_utils.runs import HSAE, TOPK
from tests.test_claims import row, tidy

LOCAL = get_profile("local")
EV = "explained_variance_legacy"


def tolerance(values: dict[tuple[str, str], float], steps: int = LOCAL.train_steps):
    return pd.DataFrame(
        [
            {"profile": "local", "steps": steps, "family": f, "metric": m, "runs": 1,
             "seeds": 3, "n": 3,
             "max_abs_delta": v, "max_rel_delta": math.nan, "seed_std": math.nan}
            for (f, m), v in values.items()
        ]
    )  # fmt: skip


def test_tolerance_is_the_largest_change_per_family_and_metric(tmp_path):
    rng = np.random.default_rng(0)
    runs = ["topk", "batchtopk", "relu_l1", "stage1_linear_sparsity", HSAE]
    deltas = pd.DataFrame(
        [
            {"seed": s, "steps": 500, "run": r, "family": tl.tolerance_family(r), "metric": m,
             "reference": ref, "nudged": ref + d, "delta": d}
            for r in runs
            for s in (42, 43, 44)
            for m in (EV, "l0")
            for ref, d in [(rng.uniform(0.5, 2), rng.normal(0, 1e-4))]
        ]
    )  # fmt: skip
    path = tmp_path / "deltas.csv"
    deltas.to_csv(path, index=False)
    got = tl.tolerance_from_deltas(pd.read_csv(path), "local").set_index(["family", "metric"])
    # independent: walk the rows by hand
    groups = {"topk": "TopK/BatchTopK", "batchtopk": "TopK/BatchTopK", "relu_l1": "L1"}
    expect: dict = {}
    for r in deltas.itertuples():
        key = (groups.get(r.run, "HierarchicalSAE"), r.metric)
        a, rel, n = expect.get(key, (0.0, 0.0, 0))
        expect[key] = (max(a, abs(r.delta)), max(rel, abs(r.delta) / abs(r.reference)), n + 1)
    assert len(got) == len(expect) == 6
    for key, (a, rel, n) in expect.items():
        assert got.loc[key, "max_abs_delta"] == pytest.approx(a, rel=1e-12)
        assert got.loc[key, "max_rel_delta"] == pytest.approx(rel, rel=1e-12)
        assert got.loc[key, "n"] == n and got.loc[key, "steps"] == 500
        assert got.loc[key, "seeds"] == 3 and got.loc[key, "runs"] == n // 3
    with pytest.raises(ValueError, match="one budget per file"):
        tl.tolerance_from_deltas(deltas.assign(steps=[150] + [500] * (len(deltas) - 1)), "local")


def test_deltas_pair_the_nudged_runs_with_the_reference_by_seed_and_metric():
    ref = tidy({(TOPK, EV): [0.70, 0.71, 0.72], (HSAE, EV): [0.90, 0.91, 0.92]})
    new = tidy({(TOPK, EV): [0.701, 0.71, 0.719], (HSAE, EV): [0.90, 0.91, 0.92]})
    d = tl.delta_table(ref, new, steps=500).set_index(["run", "seed"])
    assert d.loc[(TOPK, 42), "delta"] == pytest.approx(0.001)
    assert d.loc[(TOPK, 44), "delta"] == pytest.approx(-0.001)
    assert (d.loc[HSAE, "delta"] == 0).all() and set(d["family"]) == {
        "TopK/BatchTopK",
        "HierarchicalSAE",
    }
    with pytest.raises(ValueError, match="configuration names and seeds"):
        tl.delta_table(ref, new.assign(config="other"), steps=500)
    with pytest.raises(ValueError, match="No tolerance family"):
        tl.tolerance_family("gemma_scope")


def test_a_verdict_that_flips_within_the_tolerance_is_fragile_and_one_that_does_not_is_robust():
    # EV: the HierarchicalSAE ahead by ~1e-3 on every seed (holds); KL: ahead by ~0.05 (holds)
    res = tidy(
        {
            (TOPK, EV): [0.700, 0.710, 0.720],
            (HSAE, EV): [0.7011, 0.7109, 0.7210],
            (TOPK, "kl_div_with_sae"): [0.10, 0.11, 0.105],
            (HSAE, "kl_div_with_sae"): [0.05, 0.061, 0.054],
        }
    )
    table = cl.claims_table(res, LOCAL)
    assert row(table, "explained_variance")["verdict"] == cl.HOLDS
    assert row(table, "kl_divergence")["verdict"] == cl.HOLDS
    tol = tolerance(
        {
            ("TopK/BatchTopK", EV): 6e-4,  # 2 x 6e-4 > the 1e-3 lead: flips
            ("HierarchicalSAE", EV): 6e-4,
            ("TopK/BatchTopK", "kl_div_with_sae"): 1e-3,  # far below the 0.05 lead
            ("HierarchicalSAE", "kl_div_with_sae"): 1e-3,
        }
    )
    marked = tl.mark_fragile(table, res, LOCAL, tol, "test")
    ev, kl = row(marked, "explained_variance"), row(marked, "kl_divergence")
    assert ev["fragile"] == tl.FRAGILE and "verdict: holds ->" in ev["fragile_reason"]
    assert "against the claim" in ev["fragile_reason"]
    assert kl["fragile"] == tl.ROBUST and kl["fragile_reason"].startswith("no verdict changes")
    # the flip is real: the shifted table itself gives another verdict
    claim = next(c for c in cl.CLAIMS if c.id == "explained_variance")
    moved = tl.perturbed(res, claim, EV, tl._lookup(tol), favour=False)
    assert row(cl.claims_table(moved, LOCAL), "explained_variance")["verdict"] != cl.HOLDS
    hs = moved[(moved.config == HSAE) & (moved.metric == EV)]["value"].to_numpy()
    assert hs == pytest.approx([0.7005, 0.7103, 0.7204])  # every seed down by the tolerance
    # a claim without a measured value has nothing to move; the markdown names the fragile one
    assert row(marked, "absorption")["fragile"] == ""
    md = cl.claims_markdown(marked, "local")
    assert "*fragile*:" in md and "`explained_variance`" in md.split("*fragile*:")[1][:2000]


def test_a_missing_or_stale_tolerance_is_said_and_never_applied(tmp_path):
    tol, note = tl.load_tolerance(LOCAL, tmp_path)
    assert tol is None and note.startswith(tl.NOT_MEASURED_NOTE)
    tolerance({("HierarchicalSAE", EV): 1.0}, steps=150).to_csv(
        tl.tolerance_path(tmp_path, "local"), index=False
    )
    tol, note = tl.load_tolerance(LOCAL, tmp_path)
    assert tol is None and "150 steps" in note and f"trains {LOCAL.train_steps}" in note
    res = tidy({(TOPK, EV): [0.7, 0.71, 0.72], (HSAE, EV): [0.9, 0.91, 0.92]})
    marked = tl.mark_fragile(cl.claims_table(res, LOCAL), res, LOCAL, tol, note)
    assert row(marked, "explained_variance")["fragile"] == cl.NOT_MEASURED
    assert tl.NOT_MEASURED_NOTE in cl.claims_markdown(marked, "local")


def test_refresh_claims_works_without_a_tolerance_and_marks_with_one(tmp_path, monkeypatch):
    from hsae_utils.experiment.verdicts import refresh_claims

    monkeypatch.setenv("HSAE_OUTPUT_ROOT", str(tmp_path / "outputs"))
    smoke = get_profile("smoke")
    smoke.results_dir.mkdir(parents=True)
    res = tidy({(TOPK, EV): [0.700], (HSAE, EV): [0.7011]}, seeds=(42,))
    res.to_csv(smoke.results_dir / "evaluation.csv", index=False)
    runs = res[["run", "config"]].drop_duplicates().assign(label=lambda d: d["config"])
    runs.to_csv(smoke.results_dir / "evaluation_runs.csv", index=False)  # as notebook 08 writes
    figures = tmp_path / "figures"
    figures.mkdir()
    table = refresh_claims(smoke, figures)[0]
    md = (figures / "claims_smoke.md").read_text()
    assert tl.NOT_MEASURED_NOTE in md and "fragile" in table
    tolerance({(f, EV): 2e-3 for f in ("TopK/BatchTopK", "HierarchicalSAE")}).assign(
        steps=smoke.train_steps
    ).to_csv(tl.tolerance_path(figures, "smoke"), index=False)
    table = refresh_claims(smoke, figures)[0]
    assert row(table, "explained_variance")["fragile"] == tl.FRAGILE  # 1 seed: the sign flips
    assert "`explained_variance`" in (figures / "claims_smoke.md").read_text()
    assert pd.read_csv(figures / "claims_smoke.csv")["fragile"].notna().any()


def test_the_committed_tolerance_is_the_committed_measurement():
    from hsae_utils.analysis.report.tables import FIGURES_DIR

    path = tl.tolerance_path(FIGURES_DIR, "local")
    deltas_path = FIGURES_DIR / "rounding_effect_local.csv"
    if not path.is_file():
        pytest.skip("no committed tolerance for local")
    committed, deltas = pd.read_csv(path), pd.read_csv(deltas_path)
    again = tl.tolerance_from_deltas(deltas, "local")
    key = ["family", "metric"]
    both = committed.set_index(key).join(again.set_index(key), rsuffix="_again")
    assert len(both) == len(again) and (both["n"] == both["n_again"]).all()
    assert np.allclose(both["max_abs_delta"], both["max_abs_delta_again"], rtol=1e-9, atol=0)
    # measured at the budget the claims table applies it to, on every family of the claims
    assert set(committed["steps"]) == {LOCAL.train_steps}
    assert set(committed["family"]) == set(tl.TOLERANCE_FAMILIES.values())
