"""Ground truth on synthetic activations: the library's hierarchy, the absorption measure on a
hand-built SAE with a known answer, and a tiny train + evaluate end to end."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from hsae_utils.config import get_profile
from hsae_utils.experiment.ground_truth import (
    absorption_scores,
    absorption_verdict,
    build_world,
    ground_truth_figure,
    hierarchy_pairs,
    run_ground_truth,
    setup_for_profile,
    summarize,
)
from hsae_utils.experiment.ground_truth.experiment import save_table
from hsae_utils.method.saes import ReLUSAE, ReLUSAEConfig


@pytest.fixture(scope="module")
def world():
    return build_world(setup_for_profile(get_profile("smoke")))


def test_library_hierarchy_children_exclusive_and_gated_by_parent(world):
    """sae_lens' generator: a child fires only with its parent, at most one child per token, and
    every child and parent does fire (the measure has tokens to work on)."""
    active = world.eval_feats_NF > 0
    pairs = hierarchy_pairs(world.hierarchy)
    parents = {p.parent for p in pairs}
    assert len(parents) == world.setup.n_parents and all(p.exclusive for p in pairs)
    for parent in parents:
        kids = [p.child for p in pairs if p.parent == parent]
        assert 2 <= len(kids) <= world.setup.children[1]
        assert not (active[:, kids].any(1) & ~active[:, parent]).any()  # gated by the parent
        assert active[:, kids].sum(1).max() <= 1  # mutually exclusive
        assert active[:, kids].any(0).all() and active[:, parent].any()
    assert world.setup.num_features > world.setup.hidden_dim  # superposition


def _absorbing_sae() -> ReLUSAE:
    """Three orthonormal features: parent e0 with exclusive children e1, e2. Latent 0 = the parent
    but silenced by child 1 (encoder e0 - e1), latent 1 = child 1 with the parent absorbed
    (decoder (e0 + e1)/sqrt 2, fires only when both are present), latent 2 = child 2 (clean)."""
    sae = ReLUSAE(ReLUSAEConfig(d_in=3, d_sae=3))
    e = torch.eye(3)
    with torch.no_grad():
        sae.W_enc.copy_(torch.stack([e[0] - e[1], e[0] + e[1], e[2]], 1))
        sae.b_enc.copy_(torch.tensor([-0.5, -1.5, -0.5]))
        sae.W_dec.copy_(torch.stack([e[0], (e[0] + e[1]) / 2**0.5, e[2]]))
    return sae


def test_absorption_measure_on_a_hand_built_sae():
    from sae_lens.synthetic import HierarchyNode
    from sae_lens.synthetic.hierarchy import Hierarchy

    root = HierarchyNode(0, [HierarchyNode(1), HierarchyNode(2)], mutually_exclusive_children=True)
    pairs = hierarchy_pairs(Hierarchy(roots=[root], modifier=None))
    assert [(p.parent, p.child) for p in pairs] == [(0, 1), (0, 2)]
    # tokens: parent alone x3, parent + child 1 x2, parent + child 2 x1, nothing x1
    feats = torch.tensor([[1.0, 0, 0]] * 3 + [[1.0, 1, 0]] * 2 + [[1.0, 0, 1]] + [[0.0, 0, 0]])
    z = _absorbing_sae().encode(feats)  # features are the basis: x = feats
    assert (z[:3, 0] > 0).all() and (z[3:5, 0] == 0).all() and (z[3:5, 1] > 0).all()
    child1, child2 = absorption_scores(z, _absorbing_sae().W_dec, torch.eye(3), feats, pairs)
    assert (child1["parent_latent"], child1["child_latent"]) == (0, 1)
    assert child1["recall_alone"] == 1 and child1["recall_child"] == 0
    assert child1["absorption"] == 1 and child1["absorbed_by_child"] == 1
    assert child1["child_parent_cos"] == pytest.approx(2**-0.5)
    assert child2["recall_child"] == 1 and child2["absorption"] == 0
    assert math.isnan(child2["absorbed_by_child"])  # nothing missed, nothing absorbed


def test_train_and_evaluate_end_to_end(world, tmp_path, monkeypatch):
    monkeypatch.setenv("HSAE_OUTPUT_ROOT", str(tmp_path))
    profile = get_profile("smoke", train_steps=20)
    configs = ("topk", "stage5_clustering", "topk_matched")
    df = run_ground_truth(profile, world, seeds=(1, 2), configs=configs, workers=1)
    assert list(df.config) == list(configs) * 2 and df.train_s.notna().all()
    for _seed, g in df.groupby("seed"):
        hsae, matched = (
            g.set_index("config").loc["stage5_clustering"],
            g.set_index("config").loc["topk_matched"],
        )
        assert matched.k == max(1, round(hsae.l0))
        assert matched.l0 <= matched.k  # TopK: at most k latents per token
    numeric = df[["mcc", "f1", "precision", "recall", "l0", "ev", "absorption"]]
    assert numeric.notna().all().all() and ((df.mcc > 0) & (df.mcc <= 1)).all()

    # reused, same numbers
    again = run_ground_truth(profile, world, seeds=(1, 2), configs=configs, workers=1)
    assert again.train_s.isna().all()
    pd.testing.assert_frame_equal(
        df.drop(columns=["train_s", "total_s"]), again.drop(columns=["train_s", "total_s"])
    )

    path = save_table(df, tmp_path / "results" / "ground_truth.csv")
    assert len(pd.read_csv(path)) == len(df)
    summary = summarize(df)
    assert list(summary.config) == list(configs) and (summary.seeds == 2).all()
    verdict = absorption_verdict(df)
    assert verdict["n_seeds"] == 2 and verdict["verdict"] in (
        "holds",
        "does not hold",
        "inconclusive (underpowered)",
        "not comparable",
    )
    assert verdict["matched"] == (verdict["l0_b"] >= verdict["l0_a"] - 0.5)
    paths = ground_truth_figure(df, "smoke", out_dir=tmp_path)
    assert [p.name for p in paths] == ["ground_truth_smoke.png", "ground_truth_smoke.pdf"]
    assert all(p.stat().st_size > 0 for p in paths)


TIMINGS = ["train_s", "total_s"]


def test_worker_processes_give_the_sequential_rows_bit_for_bit(world, tmp_path, monkeypatch):
    """Two spawned workers at one thread each train and evaluate the same runs as the
    sequential path, every metric equal bit for bit; `topk_matched` waits for its seed's
    HierarchicalSAE (its k comes from that L0), and the sweep's rows agree too."""
    from hsae_utils.experiment.ground_truth.curves import run_sweep

    profile = get_profile("smoke", train_steps=20)
    configs = ("topk", "stage5_clustering", "topk_matched")
    tables = {}
    for workers in (1, 2):
        monkeypatch.setenv("HSAE_OUTPUT_ROOT", str(tmp_path / f"workers{workers}"))
        main = run_ground_truth(profile, world, seeds=(1, 2), configs=configs, workers=workers)
        sweep = run_sweep(profile, world, seeds=(3,), progress=False, workers=workers)
        assert main.train_s.notna().all() and sweep.train_s.notna().all()  # trained, not reused
        tables[workers] = (main.drop(columns=TIMINGS), sweep.drop(columns=TIMINGS))
    for sequential, pooled in zip(tables[1], tables[2]):
        pd.testing.assert_frame_equal(sequential, pooled, check_exact=True)
    main = tables[2][0].set_index(["seed", "config"])
    for seed in (1, 2):
        assert main.loc[(seed, "topk_matched"), "k"] == round(
            main.loc[(seed, "stage5_clustering"), "l0"]
        )
    assert len(tables[2][1]) > 4 and set(tables[2][1].family) >= {"topk", "relu_l1", "hierarchical"}


def test_run_tasks_refuses_bad_workers_and_misordered_dependencies(world):
    from pathlib import Path

    from hsae_utils.experiment.ground_truth.experiment import GTTask, run_tasks

    task = GTTask("topk", 1, Path("unused"), {"label": "TopK"})
    with pytest.raises(ValueError, match="workers must be >= 1"):
        run_tasks(get_profile("smoke"), world, [task], workers=0)
    with pytest.raises(ValueError, match="not listed before them"):
        run_tasks(get_profile("smoke"), world, [task, GTTask("topk_matched", 1, Path("u"), {}, 1)])


def test_unknown_configuration_is_refused(world):
    with pytest.raises(ValueError, match="Unknown ground-truth configuration"):
        run_ground_truth(get_profile("smoke"), world, configs=("topk", "nope"))
    with pytest.raises(ValueError, match="needs stage5_clustering"):
        run_ground_truth(get_profile("smoke"), world, configs=("topk_matched",))


def test_minimum_detectable_effect_matches_a_simulated_paired_t_test():
    """At the MDE, a simulated paired t-test (3 seeds) rejects about 80 % of the time."""
    from scipy import stats

    from hsae_utils.experiment.ground_truth.experiment import minimum_detectable_effect

    sd, n = 0.01, 3
    mde = minimum_detectable_effect(sd, n)
    g = torch.Generator().manual_seed(0)
    d = (mde + sd * torch.randn(20_000, n, generator=g)).double().numpy()
    p = stats.ttest_1samp(d, 0.0, axis=1).pvalue
    assert (p < 0.05).mean() == pytest.approx(0.8, abs=0.02)
    assert math.isnan(minimum_detectable_effect(sd, 1))


def test_seeds_for_power_reach_the_effect_in_a_simulated_paired_t_test():
    """With the seeds it asks for, a simulated paired t-test detects the effect ~80 % of the
    time, and one seed fewer misses the target MDE; local's default is this rule's answer."""
    from scipy import stats

    from hsae_utils.experiment.ground_truth.experiment import (
        minimum_detectable_effect,
        seeds_for_power,
        verdict_seeds,
    )

    sd, effect = 0.0306, 0.0152
    n = seeds_for_power(sd, effect)
    assert minimum_detectable_effect(sd, n) <= effect < minimum_detectable_effect(sd, n - 1)
    g = torch.Generator().manual_seed(0)
    d = (effect + sd * torch.randn(20_000, n, generator=g)).double().numpy()
    assert (stats.ttest_1samp(d, 0.0, axis=1).pvalue < 0.05).mean() == pytest.approx(0.8, abs=0.02)
    local = get_profile("local")
    assert local.ground_truth_verdict_seeds == seeds_for_power(0.030578, 0.34 * 0.044737)
    seeds = verdict_seeds(local)
    assert seeds[:3] == local.seeds and len(set(seeds)) == len(seeds) == 34
    with pytest.raises(ValueError, match="std_diff > 0"):
        seeds_for_power(0.0, effect)


def test_sweep_curves_every_family_on_the_synthetic_world(world, tmp_path, monkeypatch):
    """The registry's sweeps sized for the synthetic SAE, one curve per swept run, and the
    figure; TopK's L0 is its k, and a larger lambda_0 gives the HierarchicalSAE a sparser code."""
    from hsae_utils.experiment.ground_truth.curves import (
        absorption_l0_figure,
        curve_points,
        run_sweep,
    )

    monkeypatch.setenv("HSAE_OUTPUT_ROOT", str(tmp_path))
    profile = get_profile("smoke", train_steps=20, sweep_hsae_lambda_factors=(64.0,))
    main = run_ground_truth(
        profile, world, seeds=(1,), configs=("topk", "stage5_clustering"), workers=1
    )
    sweep = run_sweep(profile, world, seeds=(1,), progress=False, workers=1)
    assert set(sweep["family"]) == {"topk", "batchtopk", "relu_l1", "hierarchical"}
    topk = sweep[sweep["base"] == "topk"].iloc[0]
    assert topk["l0"] == pytest.approx(float(topk["config"].split("_k")[1]))
    pts = curve_points(main, sweep).set_index("config")
    assert pts.loc["stage5_clustering_lambda64x", "l0"] < pts.loc["stage5_clustering", "l0"]
    assert pts.loc["stage5_clustering", "base"] == "stage5_clustering"
    paths = absorption_l0_figure(pts.reset_index(), "smoke", out_dir=tmp_path)
    assert all(p.stat().st_size > 0 for p in paths)


def test_seeds_for_power_with_a_large_effect_is_two_not_an_error():
    """statsmodels' root solver returns NaN when 2 pairs already give the power (paper-tiny)."""
    from statsmodels.stats.power import TTestPower

    from hsae_utils.experiment.ground_truth.experiment import seeds_for_power

    assert seeds_for_power(0.001, 0.5) == 2
    n = seeds_for_power(1.0, 0.3)  # against the power function directly: n reaches 0.8, n-1 not
    assert (
        TTestPower().power(0.3, nobs=n, alpha=0.05)
        >= 0.8
        > TTestPower().power(0.3, nobs=n - 1, alpha=0.05)
    )
