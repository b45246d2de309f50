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
        rows += [
            ("topk", seed, "explained_variance_legacy", ev_topk),
            ("topk", seed, "l0", 80.0),
            (runs.HSAE, seed, "explained_variance_legacy", ev_hsae),
            (runs.HSAE, seed, "l0", 500.0),
            ("topk", seed, "absorption_fraction:a", 0.2),
            (runs.HSAE, seed, "absorption_fraction:a", 0.1),
        ]
    rows += [("topk_k20", 42, "explained_variance_legacy", 0.6), ("topk_k20", 42, "l0", 20.0)]
    tidy = pd.DataFrame(
        [(f"{c}/seed{s}", c, s, m, v) for c, s, m, v in rows],
        columns=["run", "config", "seed", "metric", "value"],
    )
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
    assert names == [
        "topk_k20",
        "topk_k320",
        "topk_k448",
        "topk_k544",
        "topk_k572",
        "batchtopk_k20",
        "batchtopk_k320",
        "batchtopk_k448",
        "batchtopk_k544",
        "batchtopk_k572",
        "relu_l1_lambda0.001",
        "relu_l1_lambda0.003",
        "relu_l1_lambda0.01",
        "relu_l1_lambda0.2",
        "relu_l1_lambda1",
        "stage5_clustering_lambda8x",
        "stage5_clustering_lambda32x",
        "stage5_clustering_lambda128x",
        "stage5_clustering_lambda512x",
        "stage1_linear_sparsity_lambda8x",
        "stage1_linear_sparsity_lambda32x",
        "stage1_linear_sparsity_lambda128x",
        "stage1_linear_sparsity_lambda512x",
    ]
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
    assert [p.name for p in paths] == [
        "frontier_unit.png",
        "frontier_unit.pdf",
        "table1_unit.md",
        "table1_unit.csv",
    ]
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


def _frontier_results(tmp_path, monkeypatch, dead=0.0, absorption=0.1) -> report.Results:
    """Every family at several sparsity levels (three seeds for the headline runs), the five
    stages, a HierarchicalSAE sweep run and a reading of notebook 11; absorption per letter."""
    monkeypatch.setenv("HSAE_OUTPUT_ROOT", str(tmp_path))
    points = {
        "topk": 80,
        "topk_k20": 20,
        "batchtopk": 78,
        "relu_l1": 500,
        "relu_l1_lambda1": 100,
        **{s.name: 570 for s in runs.ABLATIONS},
        "stage5_clustering_lambda0.2": 200,
        "stage4_adaptive_sparsity__recon_units-mean": 300,
    }
    rows = []
    for c, l0 in points.items():
        for seed in (
            (42, 43, 44) if "_" not in c or c.startswith("stage") and "lambda" not in c else (42,)
        ):
            ev = 1 - 10 / l0 + 0.01 * (seed - 43)
            rows += [
                (c, seed, "l0", l0 + seed - 43),
                (c, seed, "explained_variance_legacy", ev),
                (c, seed, "ce_loss_score", ev),
                (c, seed, "kl_div_with_sae", 1 - ev),
                (c, seed, "mean_full_absorption_score", absorption),
                (c, seed, "mean_absorption_fraction_score", 0.3),
                (c, seed, "dead", dead),
                (c, seed, "absorption_fraction:a", 0.2 + 0.01 * (seed - 43)),
                (c, seed, "full_absorption:a", 0.1),
            ]
    tidy = pd.DataFrame(
        [(f"{c}/seed{s}", c, s, m, v) for c, s, m, v in rows],
        columns=["run", "config", "seed", "metric", "value"],
    )
    return report.Results(config.get_profile("smoke"), tidy, {})


def test_frontier_method_of_every_configuration():
    from hsae_utils.analysis.report.tables import frontier_method

    assert [frontier_method(c) for c in ("topk_k20", "batchtopk", "relu_l1_lambda1")] == [
        "topk",
        "batchtopk",
        "relu_l1",
    ]
    assert frontier_method("stage1_linear_sparsity") == "stage1"
    assert frontier_method(runs.HSAE) == "hierarchical"
    assert frontier_method("stage5_clustering_lambda0.2") == "hierarchical"  # a sweep of its family
    assert frontier_method("stage3_window_tracking") is None
    assert frontier_method("stage4_adaptive_sparsity__recon_units-mean") is None


def test_frontier_has_a_curve_per_method_and_a_panel_per_measure(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    fig = report.plot_frontier(_frontier_results(tmp_path, monkeypatch))
    panels = [ax for ax in fig.axes if ax.get_xlabel()]
    assert len(panels) == 5  # EV, CE, KL and both absorption measures
    titles = " ".join(ax.get_title() for ax in panels)
    for name in (
        "explained variance",
        "CE loss recovered",
        "KL",
        "full absorption",
        "absorption fraction",
    ):
        assert name in titles
    assert all("better" in ax.get_title() and ax.get_ylabel() for ax in panels)
    ev = panels[0]
    assert ev.get_xscale() == "log"
    assert [t.get_text() for t in ev.get_xticklabels()][:3] == ["20", "50", "100"]
    lines = {c.get_label(): c.lines[0] for c in ev.containers}  # one errorbar curve per method
    assert set(lines) == {
        "TopK",
        "BatchTopK",
        "ReLU + L1",
        "HierarchicalSAE stage 1 (linear sparsity only)",
        "HierarchicalSAE (all five mechanisms)",
    }
    # each method's runs joined in order of L0: the HierarchicalSAE sweep run first, then stage 5
    assert list(lines["HierarchicalSAE (all five mechanisms)"].get_xdata()) == [199, 570]
    assert list(lines["TopK"].get_xdata()) == [19, 80]  # one seed (42) at k = 20
    assert all(c.has_yerr for c in ev.containers)  # error bars: the seeds' spread
    plt.close(fig)


def test_core_metrics_leave_out_all_zero_panels(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    r = _frontier_results(tmp_path, monkeypatch, dead=0.0)
    fig = report.plot_core_metrics(r, configs=None)
    titles = [ax.get_title() for ax in fig.axes]
    assert not any("dead" in t for t in titles) and any("explained variance" in t for t in titles)
    assert "dead features" in " ".join(t.get_text() for t in fig.texts)  # said under the figure
    plt.close(fig)
    fig = report.plot_core_metrics(_frontier_results(tmp_path, monkeypatch, dead=1.0), configs=None)
    assert any("dead" in ax.get_title() for ax in fig.axes)
    plt.close(fig)


def test_absorption_by_letter_names_both_measures_with_seed_spread(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    r = _frontier_results(tmp_path, monkeypatch)
    stats = report.absorption_letter_stats(r, (runs.TOPK, runs.HSAE), "absorption_fraction")
    assert stats.loc[("a", runs.TOPK), "std"] == pytest.approx(0.01)
    assert stats.loc[("a", runs.TOPK), "n"] == 3
    fig = report.plot_absorption(r)
    assert [ax.get_ylabel() for ax in fig.axes] == [
        "mean absorption fraction ↓",
        "full absorption rate ↓",
    ]
    assert fig.axes[-1].get_xlabel().startswith("first letter")
    plt.close(fig)


def test_ground_truth_figure_labels_its_axes(tmp_path):
    from hsae_utils.experiment.ground_truth.experiment import GT_PANELS, ground_truth_figure

    df = pd.DataFrame(
        [
            {"config": c, "seed": s, "mcc": 0.5, "f1": 0.2, "absorption": 0.05}
            for c in ("topk", runs.HSAE)
            for s in (42, 43)
        ]
    )
    paths = ground_truth_figure(df, "unit", out_dir=tmp_path)
    assert [p.name for p in paths] == ["ground_truth_unit.png", "ground_truth_unit.pdf"]
    assert all("better" in title for _, title, _ in GT_PANELS)


def test_frontier_leaves_out_a_measure_that_is_zero_everywhere(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    fig = report.plot_frontier(_frontier_results(tmp_path, monkeypatch, absorption=0.0))
    titles = " ".join(ax.get_title() for ax in fig.axes if ax.get_xlabel())
    assert "full absorption" not in titles and "absorption fraction" in titles
    assert "full absorption" in " ".join(t.get_text() for t in fig.texts)
    plt.close(fig)


def test_absorption_by_letter_says_when_it_is_zero_everywhere(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    r = _frontier_results(tmp_path, monkeypatch)
    r.tidy.loc[r.tidy["metric"].str.contains(":"), "value"] = 0.0
    fig = report.plot_absorption(r)
    assert not any(ax.get_ylabel() for ax in fig.axes)
    assert "absorption is 0 for every letter" in " ".join(t.get_text() for t in fig.axes[0].texts)
    plt.close(fig)


def test_mean_std_counts_that_differ_over_seeds_keep_a_decimal():
    """A count column (0 digits) whose seeds differ prints its mean and spread with one decimal:
    resamples 0, 0, 1 are 0.3 ± 0.6, not the misleading '0 ± 1'; equal counts stay integers."""
    from hsae_utils.analysis.report.tables import mean_std

    assert mean_std(np.array([0.0, 0.0, 1.0]), 0) == "0.3 ± 0.6"
    assert mean_std(np.array([2.0, 2.0, 2.0]), 0) == "2 ± 0"
    assert mean_std(np.array([0.12, 0.13]), 2) == "0.12 ± 0.01"
