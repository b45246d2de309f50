"""hsae_utils.experiment.sensitivity (notebook 11): which runs each alternative reading retrains, the centered
store, training and the skip-check on a real tiny cache, and the verdict comparison on small
synthetic result tables against hand-computed expectations."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pandas as pd
import pytest

from hsae_utils.analysis import claims as cl
from hsae_utils.config import get_profile
from hsae_utils.experiment import sensitivity as se
from hsae_utils.experiment.readings import OPT_IN, PAPER_WIDTH, READINGS, variants
from hsae_utils.io import read_json, write_json_atomic
from hsae_utils.runs import ABLATIONS, HSAE, TOPK, run_dir
from tests.test_claims import tidy, update_readme

LOCAL = get_profile("local")
EV, L0 = "explained_variance_legacy", "l0"
STAGE1 = ABLATIONS[0].name


def test_every_alternative_with_the_runs_it_retrains():
    alts = se.alternatives()
    assert [(a.reading, a.field, a.value) for a in alts] == [
        v for v in variants() if v[0] not in OPT_IN
    ]
    for a in alts:
        assert a.runs == ((HSAE,) if a.where == "sae" else (TOPK, HSAE))
        folder = a.folder(LOCAL, HSAE, 42)
        # the registry's folder name, beside saes/ (notebook 08 evaluates everything under saes/)
        assert folder.parent.name == run_dir(LOCAL, HSAE, 42, a.overrides).parent.name
        assert LOCAL.sae_dir not in folder.parents and folder.name == "seed42"
    assert set(se.MECHANISM) == {r.name for r in READINGS if r.where == "sae"}


def test_which_stages_a_reading_affects():
    alt = {a.reading: a for a in se.alternatives()}
    stages = [s.name for s in ABLATIONS]
    assert [alt["merge_reinit"].affects(s) for s in stages] == [False] * 4 + [True]
    assert [alt["firing_reading"].affects(s) for s in stages] == [False] * 2 + [True] * 3
    assert [alt["recon_units"].affects(s) for s in stages] == [False] * 3 + [True] * 2
    assert all(alt["lambda0_basis"].affects(s) for s in stages)
    assert not alt["lambda0_basis"].affects(TOPK) and alt["optimizer"].affects("relu_l1")


# Default: HSAE clearly above TopK on EV over 3 seeds; stage 1 too.
DEFAULT = tidy(
    {
        (TOPK, EV): [0.80, 0.81, 0.79],
        (HSAE, EV): [0.90, 0.915, 0.905],
        (STAGE1, EV): [0.92, 0.93, 0.925],
    }
)


def variant_table(alts, hsae_ev: dict[str, float]) -> pd.DataFrame:
    """The alternatives' seed-42 runs: TopK as by default, HSAE at `hsae_ev[label]` (default
    0.90, its default seed-42 value)."""
    rows = []
    for a in alts:
        for run in a.runs:
            value = hsae_ev.get(a.label, 0.90) if run == HSAE else 0.80
            rows.append(
                {
                    "run": f"{a.config(run)}/seed42",
                    "config": a.config(run),
                    "seed": 42,
                    "metric": EV,
                    "value": value,
                }
            )
    return pd.DataFrame(rows)


def test_shifted_moves_every_seed_by_the_seed42_change():
    alt = next(a for a in se.alternatives() if a.label == "optimizer=adam_l2")
    out = se.shifted(DEFAULT, variant_table([alt], {alt.label: 0.70}), alt, 42)
    hsae = out[(out["config"] == HSAE)].sort_values("seed")["value"].to_numpy()
    assert hsae == pytest.approx([0.70, 0.715, 0.705])  # each default seed - 0.20
    topk = out[(out["config"] == TOPK)].sort_values("seed")["value"].to_numpy()
    assert topk == pytest.approx([0.80, 0.81, 0.79])  # unchanged at seed 42: unchanged
    sub = se.substituted(DEFAULT, variant_table([alt], {alt.label: 0.70}), alt, 42)
    assert set(sub["seed"]) == {42} and sub.loc[sub["config"] == HSAE, "value"].item() == 0.70


def test_verdict_changes_only_where_the_alternative_flips_the_effect():
    alts = se.alternatives()
    detail = se.compare_verdicts(
        DEFAULT, variant_table(alts, {"optimizer=adam_l2": 0.70}), LOCAL, alts
    )
    assert len(detail) == len(alts) * len(cl.CLAIMS) * len(se.KINDS)
    d = detail.set_index(["alternative", "claim", "kind"])
    ev = d.loc[("optimizer=adam_l2", "explained_variance", "verdict")]
    assert ev["status"] == "recomputed" and ev["default"] == cl.HOLDS
    assert ev["variant"] == cl.FAILS  # opposite sign beyond seed noise on the shifted seeds
    assert ev["default_seed"] == cl.HOLDS and ev["variant_seed"] == cl.INCONCLUSIVE  # 1 seed: sign
    assert ev["changed"] and ev["changed_seed"]
    changed = detail[detail["changed"] | detail["changed_seed"]]
    assert set(changed["alternative"]) == {"optimizer=adam_l2"}
    assert set(changed["claim"]) == {"explained_variance"}  # the stages' claims: not retrained
    # a stage that was not retrained, under readings that change it / that never reach it
    assert (
        d.loc[("optimizer=adam_l2", "t1_stage1_variance", "verdict"), "status"] == "not retrained"
    )
    assert (
        d.loc[("lambda0_basis=0.02083", "t1_stage1_variance", "verdict"), "status"]
        == "not retrained"
    )
    merge = d.loc[("merge_reinit=zero", "t1_stage1_variance", "verdict")]
    assert merge["status"] == "unaffected" and merge["variant"] == merge["default"]
    assert d.loc[("optimizer=adam_l2", "explained_variance", "matched_l0"), "status"].startswith(
        "not recomputed"
    )
    assert d.loc[("recon_units=mean", "explained_variance", "matched_l0"), "status"] == "recomputed"

    column = se.sensitivity_column(detail)
    assert column["explained_variance"].startswith(
        "changes under: optimizer=adam_l2 (direction: holds -> does not hold (3 seeds, shifted)"
    )
    assert column["kl_divergence"] == f"stable under all {len(alts)} alternatives"
    assert column["t1_stage1_variance"].startswith(
        "stable under the 5 other alternatives (not recomputed: input_center=True,"
    )
    s = se.summary(detail).set_index("alternative")
    assert s.loc["adam_l2", "verdicts that change"].startswith("explained_variance (direction")
    assert s.loc["none", "verdicts that change"] == "none"
    assert s.loc["none", "not recomputed"].endswith(
        "the matched-L0 verdicts (the sweep baselines were not retrained)"
    )
    assert s.loc["zero", "not recomputed"] == ""  # merge_reinit: only stage 5 reads it


def test_claims_table_and_readme_show_the_sensitivity_column(tmp_path, monkeypatch):
    alts = se.alternatives()
    detail = se.compare_verdicts(
        DEFAULT, variant_table(alts, {"optimizer=adam_l2": 0.70}), LOCAL, alts
    )
    path = tmp_path / "readings.csv"
    detail.to_csv(path, index=False)
    back = pd.read_csv(path, keep_default_na=False)  # as refresh_claims reads it
    table = cl.claims_table(DEFAULT, LOCAL, readings=se.sensitivity_column(back)).set_index("id")
    assert table.loc["explained_variance", "sensitivity"].startswith("changes under: optimizer")
    assert (cl.claims_table(DEFAULT, LOCAL)["sensitivity"] == "").all()  # 11 not run: empty

    ur = update_readme(tmp_path, monkeypatch)
    cl.write_claims(cl.claims_table(DEFAULT, LOCAL), tmp_path, "local")
    assert "sensitivity to the readings" not in ur.block("local")
    cl.write_claims(table.reset_index(), tmp_path, "local")
    (tmp_path / "readings_local.md").write_text("| reading |\n|---|\n| optimizer |\n")
    block = ur.block("local")
    assert "sensitivity to the readings (notebook 11)" in block
    assert "Which verdicts change under the other readings" in block


def tiny_profile(P):
    return dataclasses.replace(
        P,
        d_sae=32,
        train_steps=6,
        train_batch_size=32,
        log_every=2,
        checkpoint_every=3,
        window_size=2,
        merge_every=3,
        resample_every=2,
        seeds=(42, 43),
    )


@pytest.mark.usefixtures("one_thread")
def test_train_on_a_real_cache_centering_at_read_time_and_the_skip_check(tiny_caches):
    from hsae_utils.data.activations import ActivationStore
    from hsae_utils.method.checkpoint import read_export_info

    P = tiny_profile(tiny_caches[0])
    store = ActivationStore(P.cache_dir / "train")
    centered = se.centered_store(store)
    assert store.normalizer.center is False  # the original store is untouched
    sample = centered.sample(store.n_tokens, seed=0)
    n = store.manifest["normalization"]["n_tokens"]
    first = centered.normalizer(store.read_all()[:n])  # the rows the normalizer was fitted on
    assert first.mean(0).abs().max() < 1e-4  # centered
    assert first.pow(2).sum(1).mean().item() == pytest.approx(P.d_model, rel=1e-4)
    assert sample.shape[1] == P.d_model

    trained = se.train_alternatives(P, progress=False)
    assert trained["trained"].all() and len(trained) == 2 * 3 + 6  # optimizer x2, center: 2 runs
    for row in trained.itertuples():
        info = read_export_info(row.folder)
        assert info["train"]["steps"] == 6 and info["metadata"]["seed"] == 42
        assert info["normalization"]["center"] == ("center-True" in row.config)
        if "optimizer-" in row.config:
            assert info["train"]["optimizer"] == row.config.split("optimizer-")[1]
        if "__merge_reinit-zero" in row.config:
            assert info["config"]["merge_reinit"] == "zero"
    problems = se.output_problems(P)
    assert problems == [f"{P.results_dir / se.RESULTS_NAME} is missing"]
    again = se.train_alternatives(P, progress=False)
    assert not again["trained"].any()  # finished runs are reused
    # a run exported by another trainer revision (here: none recorded, revision 1) is retrained,
    # the old one kept beside readings/
    old = Path(again.folder[0])
    info = read_export_info(old)
    del info["trainer_revision"]
    write_json_atomic(old / "hsae_config.json", info)
    assert se.output_problems(P)[0] == f"{old} is not a finished run"
    redo = se.train_alternatives(P, progress=False)
    assert redo["trained"].tolist() == [True] + [False] * (len(redo) - 1)
    aside = se.readings_dir(P).with_name("readings.rev1") / old.relative_to(se.readings_dir(P))
    assert read_json(aside / "hsae_config.json") == info
    table, evaluation = P.results_dir / se.RESULTS_NAME, P.results_dir / "evaluation.csv"
    table.parent.mkdir(parents=True, exist_ok=True)
    table.write_text("x\n")
    assert se.output_problems(P) == []
    evaluation.write_text("x\n")  # notebook 08 ran again: the verdicts compared stale results
    os.utime(evaluation, (table.stat().st_mtime + 10,) * 2)
    assert se.output_problems(P) == [f"{table} is older than {evaluation} (notebook 08 ran again)"]


def test_width_is_opt_in_and_trains_at_the_papers_width_with_the_rules_that_follow_it():
    assert "width" not in {a.reading for a in se.alternatives(LOCAL)}
    (wide,) = [a for a in se.alternatives(LOCAL, include=("width",)) if a.reading == "width"]
    # the paper profile's d_model is 2,304: the same width, no alternative there
    assert "width" not in {
        a.reading for a in se.alternatives(get_profile("paper"), include=("width",))
    }
    with pytest.raises(ValueError, match="opt-in"):
        se.alternatives(LOCAL, include=("optimizer",))
    assert (
        wide.runs == (TOPK, HSAE)
        and wide.folder(LOCAL, TOPK, 42).parent.name == f"topk__d_sae-{PAPER_WIDTH}"
    )
    topk, hsae = (se._job(LOCAL, wide, run, 42) for run in (TOPK, HSAE))
    assert (topk.sae.cfg.d_in, topk.sae.cfg.d_sae, topk.sae.cfg.k) == (576, 2304, 320)
    assert hsae.sae.cfg.d_sae == 2304 and hsae.sae.cfg.l1_coefficient == pytest.approx(1 / 48)
    assert tuple(hsae.sae.W_dec.shape) == (2304, 576)


def test_width_effects_pick_the_default_width_run_at_the_nearest_l0():
    (wide,) = [a for a in se.alternatives(LOCAL, include=("width",)) if a.reading == "width"]
    rows = [
        ("topk", 80, 0.70),
        ("topk_k320", 320, 0.90),
        ("topk_k20", 20, 0.60),
        (HSAE, 570, 0.99),
        (wide.config(TOPK), 320, 0.93),
        (wide.config(HSAE), 2000, 0.995),
    ]
    tidy_df = pd.DataFrame(
        [
            {"config": c, "seed": 42, "metric": m, "value": v}
            for c, l0, ev in rows
            for m, v in ((L0, l0), (EV, ev))
        ]
    )
    default = tidy_df[~tidy_df["config"].str.contains("__")]
    variant = tidy_df[tidy_df["config"].str.contains("__")]
    out = se.width_effects(default, variant, LOCAL, wide).set_index(["run", "which"])
    assert out.loc[(TOPK, "default width, L0 nearest the wide run's"), "config"] == "topk_k320"
    assert out.loc[(TOPK, "wide"), "explained variance"] == 0.93
    assert out.loc[(HSAE, "default width, L0 nearest the wide run's"), "config"] == HSAE
    assert list(out.loc[(TOPK, "wide")][["d_sae", "L0"]]) == [PAPER_WIDTH, 320]
