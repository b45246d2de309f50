"""The tables and figure data of notebooks 08 and 09 (hsae_utils.analysis.report), on a small hand-made
results table."""
import math

import numpy as np
import pandas as pd
import pytest

from hsae_utils import config, runs
from hsae_utils.analysis import report


def _results(tmp_path, monkeypatch) -> report.Results:
    monkeypatch.setenv("HSAE_OUTPUT_ROOT", str(tmp_path))
    rows = []
    for seed, (ev_topk, ev_hsae) in zip((42, 43, 44), ((0.80, 0.90), (0.82, 0.91), (0.84, 0.95))):
        rows += [("topk", seed, "explained_variance_legacy", ev_topk), ("topk", seed, "l0", 80.0),
                 (runs.HSAE, seed, "explained_variance_legacy", ev_hsae),
                 (runs.HSAE, seed, "l0", 500.0),
                 ("topk", seed, "absorption_fraction:a", 0.2),
                 (runs.HSAE, seed, "absorption_fraction:a", 0.1)]
    rows += [("topk_k20", 42, "explained_variance_legacy", 0.6), ("topk_k20", 42, "l0", 20.0)]
    tidy = pd.DataFrame([(f"{c}/seed{s}", c, s, m, v) for c, s, m, v in rows],
                        columns=["run", "config", "seed", "metric", "value"])
    return report.Results(config.get_profile("smoke"), tidy, {"topk": "TopK"})


def test_family_of_every_configuration():
    assert runs.family("topk") == "topk"
    assert runs.family("topk_k20") == "topk"
    assert runs.family("batchtopk_k320") == "batchtopk"
    assert runs.family("relu_l1_lambda0.2") == "relu_l1"
    assert runs.family("stage3_window_tracking__recon_units-mean") == "hierarchical"


def test_sweep_runs_scale_k_and_skip_the_headline_run():
    p = config.get_profile("local")
    names = [r.name for r in runs.sweep_runs(p)]
    assert names == ["topk_k20", "topk_k320", "topk_k448", "topk_k544", "batchtopk_k20",
                     "batchtopk_k320", "batchtopk_k448", "batchtopk_k544", "relu_l1_lambda0.01",
                     "relu_l1_lambda0.2", "relu_l1_lambda1", "stage5_clustering_lambda8x",
                     "stage5_clustering_lambda32x", "stage5_clustering_lambda128x",
                     "stage5_clustering_lambda512x", "stage1_linear_sparsity_lambda8x",
                     "stage1_linear_sparsity_lambda32x", "stage1_linear_sparsity_lambda128x",
                     "stage1_linear_sparsity_lambda512x"]
    assert runs.get_run("topk_k20", p).overrides == {"k": 20}
    with pytest.raises(ValueError, match="Valid runs"):
        runs.get_run("topk_k20")  # sweep runs need the profile


def test_table1_is_mean_and_sample_std_over_seeds(tmp_path, monkeypatch):
    table = report.table1(_results(tmp_path, monkeypatch))
    assert list(table.index) == ["TopK", runs.HSAE]  # configurations absent are left out
    ev = np.array([0.90, 0.91, 0.95])
    assert table.loc[runs.HSAE, "Explained variance"] == f"{ev.mean():.3f} ± {ev.std(ddof=1):.3f}"
    assert table.loc["TopK", "Seeds"] == 3


def test_configs_order_paper_runs_first_then_sweep(tmp_path, monkeypatch):
    assert _results(tmp_path, monkeypatch).configs == ["topk", runs.HSAE, "topk_k20"]


def test_frontier_points_and_absorption_by_letter(tmp_path, monkeypatch):
    r = _results(tmp_path, monkeypatch)
    pts = report.frontier_points(r, ["explained_variance_legacy"]).set_index("config")
    assert pts.loc["topk_k20", "family"] == "topk" and pts.loc["topk_k20", "l0"] == 20
    assert math.isclose(pts.loc["topk", "explained_variance_legacy"], 0.82)
    letters = report.absorption_by_letter(r)
    assert list(letters.columns) == ["topk", runs.HSAE]
    assert letters.loc["a"].tolist() == pytest.approx([0.2, 0.1])


def test_figures_and_tables_are_written(tmp_path, monkeypatch):
    r = _results(tmp_path, monkeypatch)
    paths = report.save_figure(report.plot_frontier(r), "frontier", "unit", out_dir=tmp_path)
    paths += list(report.write_table(report.table1(r), "table1", "unit", out_dir=tmp_path).values())
    assert [p.name for p in paths] == ["frontier_unit.png", "frontier_unit.pdf",
                                       "table1_unit.md", "table1_unit.csv"]
    assert all(p.stat().st_size > 0 for p in paths)
    assert not list(tmp_path.glob(".*.tmp"))


def test_missing_results_name_the_notebook_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv("HSAE_OUTPUT_ROOT", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="--only 08"):
        report.load_results(config.get_profile("smoke"))


def test_notebook_08_tables_and_figures_from_a_fresh_evaluation(tmp_path, monkeypatch):
    from types import SimpleNamespace

    tidy = _results(tmp_path, monkeypatch).tidy
    evaluation = SimpleNamespace(results=tidy, runs=[SimpleNamespace(config="topk", label="TopK")])
    r = report.Results.from_evaluation(evaluation)
    table = report.summary_table(r)
    assert list(table.index) == ["TopK", runs.HSAE, "topk_k20"]
    assert table.loc["topk_k20", "Seeds"] == 1 and table.loc["topk_k20", "l0"] == "20.000"
    assert report.plot_core_metrics(r, configs=None) is not None
    assert report.plot_absorption_scores(r) is None  # no absorption scores in this table
