"""The verdicts that cannot flatter (hsae_utils.analysis.claims, measured, report.tables): both
absorption measures, identical configurations counted once, the training time from the benchmark's
overhead file, the interpretability row, and the ground truth's matched-L0 check."""

from __future__ import annotations

import json

import pandas as pd

from hsae_utils.analysis import claims as cl
from hsae_utils.analysis import measured
from hsae_utils.analysis.report.results import Results, train_losses
from hsae_utils.analysis.report.tables import identical_configs, table1
from hsae_utils.config import get_profile
from hsae_utils.experiment.ground_truth.experiment import absorption_verdict
from hsae_utils.runs import ABLATIONS, HSAE, RUNS, TOPK
from tests.test_claims import row, tidy

LOCAL = get_profile("local")
S1, S2, S3, S4 = (a.name for a in ABLATIONS[:4])
EV = "explained_variance_legacy"


def test_both_absorption_measures_are_claims_and_their_disagreement_is_said():
    # the local run's pattern: less full absorption but a larger absorption fraction
    res = tidy(
        {
            (TOPK, "mean_full_absorption_score"): [0.10, 0.12, 0.11],
            (HSAE, "mean_full_absorption_score"): [0.02, 0.03, 0.025],
            (TOPK, "mean_absorption_fraction_score"): [0.30, 0.31, 0.29],
            (HSAE, "mean_absorption_fraction_score"): [0.54, 0.55, 0.53],
        }
    )
    t = cl.claims_table(res, LOCAL)
    assert row(t, "absorption")["verdict"] == cl.HOLDS
    frac = row(t, "absorption_fraction")
    assert frac["metric"] == "mean_absorption_fraction_score" and frac["verdict"] == cl.FAILS
    note = cl.absorption_note(t)
    assert "opposite directions" in note and "one latent" in note and "up to 3" in note
    assert note in cl.claims_markdown(t, "local")
    hsae_frac = (res["config"] == HSAE) & res["metric"].str.contains("fraction")
    same = res.assign(value=res["value"].where(~hsae_frac, res["value"] / 10))  # 0.54 -> 0.054
    assert "the same direction" in cl.absorption_note(cl.claims_table(same, LOCAL))


def test_identical_configurations_are_marked_and_counted_once():
    base = {(TOPK, EV): [0.80, 0.81, 0.79], (TOPK, "l0"): [80, 80, 80]}
    stage = {EV: [0.90, 0.91, 0.92], "l0": [570, 570.2, 570.1]}
    res = tidy(
        {
            **base,
            **{(c, m): v for c in (S1, S2) for m, v in stage.items()},
            (S4, EV): [0.95, 0.96, 0.94],
            (S4, "l0"): [571, 571, 571],
            (HSAE, EV): [0.95, 0.96, 0.94],
            (HSAE, "l0"): [571, 571, 571],
            (S3, EV): [0.95, 0.96, 0.9401],
            (S3, "l0"): [571, 571, 571],
        }
    )  # one value apart
    assert identical_configs(res) == {S2: S1, HSAE: S4}
    t = cl.claims_table(res, LOCAL)
    assert row(t, "t1_stage2_variance")["same_as"] == "t1_stage1_variance"
    assert "counted once" in row(t, "t1_stage2_variance")["reason"]
    assert row(t, "t1_stage4_variance")["same_as"] == "explained_variance"  # stage 5 = stage 4
    assert (
        row(t, "t1_stage1_variance")["same_as"] == ""
        and row(t, "t1_stage1_features")["same_as"] == ""
    )
    md = cl.claims_markdown(t, "local")
    counted = t[t["same_as"] == ""]["verdict"].value_counts()
    assert f"holds {counted[cl.HOLDS]}," in md and "counted once" in md
    # stage 2's three cells repeat stage 1's, stage 4's three the abstract's EV, L0 and KL
    assert counted.sum() == len(t) - 6
    assert row(t, "t1_stage4_features")["same_as"] == "active_features"
    # Table 1: the events and the mark; the weights' checksums alone also identify a repeat
    events = tidy(
        {
            (c, m): v
            for c in (S1, S2, S3)
            for m, v in (("resampled_latents", [0, 0, 0]), ("merged_pairs", [0, 0, 0]))
        }
    )
    table = table1(Results(LOCAL, pd.concat([res, events]), {S1: "Linear sparsity"}))
    assert table.loc[S2, "Same as"] == "= Linear sparsity" and table.loc[S3, "Same as"] == ""
    assert table.loc[S2, "Resampled latents (train)"] == "0 ± 0"
    sums = {f"{c}/seed{s}": f"sha{c in (S1, S3)}{s}" for c in (S1, S3) for s in (42, 43, 44)}
    assert identical_configs(res[res["config"].isin([S1, S3])], sums) == {S3: S1}


def test_train_log_events_become_table1_columns(tmp_path):
    profile = get_profile("local")
    profile = type(profile).__new__(type(profile))
    profile.__dict__.update(get_profile("local").__dict__)
    folder = tmp_path / "saes" / S2 / "seed42"
    folder.mkdir(parents=True)
    lines = [
        {"kind": "metrics", "step": 100, "loss": 3.0},
        {"kind": "event", "event": "resample", "step": 100, "n_latents": 4, "reset": [1]},
        {
            "kind": "event",
            "event": "merge",
            "step": 200,
            "pairs": [[1, 2], [3, 4]],
            "reset": [2, 4],
        },
        {"kind": "event", "event": "resample", "step": 300, "n_latents": 2, "reset": [5]},
        {"kind": "metrics", "step": 300, "loss": 2.5},
    ]
    (folder / "train_log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    runs = pd.DataFrame([{"run": f"{S2}/seed42", "config": S2, "seed": 42}])

    class P:  # the two attributes train_losses reads
        sae_dir = tmp_path / "saes"

    got = train_losses(P, runs).set_index("metric")["value"]
    assert got["train_loss"] == 2.5 and got["resampled_latents"] == 6 and got["merged_pairs"] == 2


def test_train_time_is_read_from_the_benchmark(tmp_path):
    res = tidy({(TOPK, EV): [0.80, 0.81, 0.79], (HSAE, EV): [0.90, 0.915, 0.905]})
    r = row(cl.claims_table(res, LOCAL), "train_time")
    assert r["verdict"] == cl.NOT_MEASURED and "scripts/benchmark.py" in r["reason"]

    def dims(vs_topk: float) -> dict:
        return {
            "2304": {
                "vs_topk": vs_topk,
                "every_step_topk": vs_topk - 0.01,
                "every_step_fastest_topk": vs_topk,
                "mechanisms_amortised_topk": 0.01,
                "vs_relu": 0.02,
                "every_step_relu": 0.01,
                "every_step_fastest_relu": 0.01,
                "mechanisms_amortised": 0.01,
            },
            "576": {"vs_topk": 0.5, "vs_relu": 0.4},
        }

    path = measured.write_overhead(
        dims(0.04),
        {"when": "2026-12-06", "device": "cpu"},
        tmp_path / "benchmark" / "hsae_overhead.json",
    )
    r = row(cl.claims_table(res, LOCAL, overhead=measured.read_overhead(path)), "train_time")
    assert r["verdict"] == cl.HOLDS and r["ours_change"] == "1.04x" and r["paper_change"] == "1.2x"
    assert "over TopK at d = 2304" in r["reason"] and "+4.0%" in r["reason"]
    assert "d = 576: +50.0%" in r["reason"] and r["matched_l0"] == cl.NOT_COMPARABLE
    r = row(cl.claims_table(res, LOCAL, overhead={"dims": dims(0.35)}), "train_time")
    assert r["verdict"] == cl.FAILS and "above the paper's +20%" in r["reason"]
    assert measured.read_overhead(tmp_path / "none.json") is None


def test_fresh_clone_reads_the_committed_overhead(tmp_path, monkeypatch):
    """Without a benchmark run on this machine (a fresh clone: no outputs/benchmark), the
    train_time claim is judged on the committed full run's overheads, not "not measured"."""
    monkeypatch.setenv("HSAE_OUTPUT_ROOT", str(tmp_path))
    assert not measured.overhead_path().exists()
    committed = measured.read_json(measured.COMMITTED_OVERHEAD)
    assert committed["quick"] is False and "2304" in committed["dims"]
    assert measured.read_overhead() == committed
    res = tidy({(TOPK, EV): [0.80, 0.81, 0.79], (HSAE, EV): [0.90, 0.915, 0.905]})
    r = row(cl.claims_table(res, LOCAL, overhead=measured.read_overhead()), "train_time")
    assert r["verdict"] in (cl.HOLDS, cl.FAILS) and committed["when"] in r["reason"]
    # this machine's own benchmark, once run, comes first
    own = measured.write_overhead({"2304": {"vs_topk": 0.5}}, {"when": "x"})
    assert measured.read_overhead() == measured.read_json(own)


def test_interpretability_not_measured_unless_scored(tmp_path):
    res = tidy({(TOPK, EV): [0.80, 0.81, 0.79], (HSAE, EV): [0.90, 0.915, 0.905]})
    r = row(cl.claims_table(res, LOCAL), "interpretability")
    assert r["verdict"] == cl.NOT_MEASURED
    assert r["reason"] == "no OpenAI-compatible endpoint configured (see notebook 12)"
    assert measured.read_autointerp(tmp_path).empty
    pd.DataFrame(
        [
            {"config": c, "seed": s, "metric": "autointerp_score", "value": v}
            for c, vals in ((TOPK, (0.80, 0.82, 0.81)), (HSAE, (0.70, 0.71, 0.72)))
            for s, v in zip((42, 43, 44), vals)
        ]
    ).to_csv(tmp_path / "autointerp.csv", index=False)
    scored = pd.concat([res, measured.read_autointerp(tmp_path)], ignore_index=True)
    r = row(cl.claims_table(scored, LOCAL), "interpretability")
    assert r["verdict"] == cl.FAILS and r["reason"].startswith("opposite sign, beyond seed noise")
    (tmp_path / "autointerp.csv").write_text("a,b\n1,2\n")
    try:
        measured.read_autointerp(tmp_path)
        raise AssertionError("a malformed file must fail")
    except ValueError as e:
        assert "lacks the columns" in str(e)


def test_provenance_is_shown_in_the_markdown():
    md = cl.claims_markdown(
        cl.claims_table(tidy({(TOPK, EV): [0.8], (HSAE, EV): [0.9]}, seeds=(42,)), LOCAL), "local"
    )
    assert "backed by the paper's own run?" in md
    assert "no: 0.0058 and p < 0.01 have no run" in md


def test_ground_truth_win_needs_a_matched_topk_as_dense():
    def gt(l0_topk: float) -> pd.DataFrame:
        return pd.DataFrame(
            [
                {"config": c, "seed": s, "absorption": a, "l0": l0}
                for s in (1, 2, 3, 4)
                for c, a, l0 in (
                    ("stage5_clustering", 0.10 + 0.001 * s, 50.8),
                    ("topk_matched", 0.20 + 0.001 * s * s, l0_topk),
                )
            ]
        )

    assert absorption_verdict(gt(50.6))["verdict"] == "holds"  # within k's rounding
    v = absorption_verdict(gt(49.1))  # TopK fired fewer than k: sparser, cannot decide a win
    assert v["verdict"] == "not comparable" and not v["matched"]
    assert "sparser (L0 49.1 < 50.8)" in v["matched_note"]


def test_findings_are_generated_from_the_tables(tmp_path, monkeypatch):
    """The five sentences of findings.py on a small run shaped like the local one: a dense
    HierarchicalSAE, no baseline as dense, the two absorption measures disagreeing, stage 2 =
    stage 1 and stage 5 = stage 4."""
    import numpy as np
    from safetensors.numpy import save_file

    from hsae_utils.analysis.findings import findings, findings_markdown
    from hsae_utils.analysis.report.tables import write_table

    monkeypatch.setenv("HSAE_OUTPUT_ROOT", str(tmp_path / "out"))
    profile = get_profile("local")
    stage = {
        EV: [0.99, 0.991, 0.992],
        "l0": [570, 570.2, 570.4],
        "mean_full_absorption_score": [0.01, 0.02, 0.015],
        "mean_absorption_fraction_score": [0.54, 0.55, 0.53],
    }
    early = {EV: [0.98, 0.981, 0.982], "l0": [569, 569, 569]}
    res = tidy(
        {
            (TOPK, EV): [0.72, 0.73, 0.725],
            (TOPK, "l0"): [80, 80, 80],
            (TOPK, "mean_full_absorption_score"): [0.10, 0.12, 0.11],
            (TOPK, "mean_absorption_fraction_score"): [0.30, 0.31, 0.29],
            ("relu_l1", EV): [0.97, 0.971, 0.972],
            ("relu_l1", "l0"): [524, 524, 524],
            **{(c, m): v for c in (S1, S2) for m, v in early.items()},
            **{(c, m): v for c in (S4, HSAE) for m, v in stage.items()},
        }
    )
    cl.write_claims(cl.claims_table(res, profile), tmp_path, "local")
    events = tidy(
        {
            (c, m): [0, 0, 0]
            for c in (S1, S2, S4, HSAE)
            for m in ("resampled_latents", "merged_pairs")
        }
    )
    results = Results(
        profile, pd.concat([res, events]), {c: spec.label for c, spec in RUNS.items()}
    )
    write_table(table1(results), "table1", "local", tmp_path)
    for s, busy in zip((42, 43), (0.9, 0.8)):  # 90 % / 80 % of latents fire on most tokens
        folder = profile.sae_dir / HSAE / f"seed{s}"
        folder.mkdir(parents=True)
        freq = np.where(np.arange(576) < busy * 576, 0.7, 0.01)
        save_file(
            {"sparsity": np.log10(freq).astype(np.float32)}, str(folder / "sparsity.safetensors")
        )
    density, matched, absorption, provenance, repeats = findings("local", tmp_path)
    assert density.startswith(
        "The HierarchicalSAE fires 570.2 of its 576 latents per token (99%; TopK fires 80)"
    ) and density.endswith(": a dense code.")
    assert "85% of its latents fire on more than half" in density  # (0.9 + 0.8) / 2, rounded
    assert "not comparable: `absorption`, `explained_variance` (" in matched
    assert "(no baseline run reaches its L0 570.2 (densest: topk at L0 80))" in matched
    assert absorption.startswith("SAEBench's two absorption measures disagree in direction")
    assert "(holds)" in absorption and "(does not hold)" in absorption
    assert "`absorption` (0.0058 and p < 0.01 have no run" in provenance
    assert repeats.startswith(
        "The ablation is partly degenerate: +Resampling repeats Linear "
        "sparsity and +Clustering (HierarchicalSAE) repeats +Adaptive "
        "sparsity exactly"
    )
    assert "0 ± 0 latents resampled" in repeats
    # a measured training time is not a gain to check at matched sparsity
    cl.write_claims(
        cl.claims_table(
            res,
            profile,
            overhead={
                "dims": {
                    "576": {
                        "vs_topk": 0.05,
                        "every_step_topk": 0.05,
                        "every_step_fastest_topk": 0.05,
                        "mechanisms_amortised_topk": 0.0,
                    }
                }
            },
        ),
        tmp_path,
        "local",
    )
    assert "train_time" not in findings("local", tmp_path)[1]
    assert findings_markdown(profile, tmp_path).count("\n- ") == 4
