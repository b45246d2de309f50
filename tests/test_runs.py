"""The run registry's sweeps: every family gets a frontier that reaches the others' L0 range."""

import math

import pytest

from hsae_utils.config import get_profile
from hsae_utils.method.saes import config_from_profile
from hsae_utils.runs import (
    ABLATIONS,
    HSAE,
    RUNS,
    all_runs,
    family,
    notebook_runs,
    sweep_base,
    sweep_runs,
)

PROFILES = ("local", "smoke", "paper")


@pytest.mark.parametrize("name", PROFILES)
def test_every_sweep_run_lands_in_its_methods_family(name):
    P = get_profile(name)
    sweep = sweep_runs(P)
    assert len({s.name for s in sweep}) == len(sweep) and not {s.name for s in sweep} & set(RUNS)
    for spec in sweep:
        base = RUNS[spec.base]
        assert spec.arch == base.arch
        # by the profile's registry and by the name alone (as the figures read folder names)
        assert sweep_base(spec.name, P) == sweep_base(spec.name) == spec.base
        assert family(spec.name) == family(base.name)
        assert family(f"{spec.name}__recon_units-mean") == family(base.name)
    fams = {family(s.name) for s in sweep}
    assert fams == {"topk", "batchtopk", "relu_l1", "hierarchical"}
    # the sweep is trained on sweep_seeds by notebook 02
    assert {r for r, _ in notebook_runs(P, "02_baselines.ipynb")} >= {s.name for s in sweep}


def test_local_sweeps_cover_each_others_l0_range():
    """TopK / BatchTopK reach k near the dictionary size (the HierarchicalSAE's default L0 is
    ~570 of 576 at local); the HierarchicalSAE is swept to larger lambda_0 (sparser codes)."""
    P = get_profile("local")
    for arch in ("topk", "batchtopk"):
        ks = sorted(s.overrides["k"] for s in sweep_runs(P) if s.base == arch)
        assert ks[0] <= P.topk_k / 2 and ks[-1] >= 0.9 * P.dict_size and ks[-1] <= P.dict_size
    lams = sorted(s.overrides["l1_coefficient"] for s in sweep_runs(P) if s.base == "relu_l1")
    assert lams[0] < RUNS["relu_l1"].overrides["l1_coefficient"] < lams[-1]
    for base in (HSAE, ABLATIONS[0].name):
        factors = sorted(
            s.overrides["l1_coefficient"] * math.sqrt(P.dict_size)
            for s in sweep_runs(P)
            if s.base == base
        )
        assert len(factors) >= 3 and factors[-1] >= 128  # spans a wide range of sparsity


def test_hierarchical_sweep_is_the_stage_with_another_lambda0():
    """A swept stage trains the stage's mechanisms with lambda_0 = factor / sqrt(d_sae); the
    default run gets 1 / sqrt(d_sae) from the SAE config itself (an independent path)."""
    P = get_profile("local")
    for spec in (s for s in sweep_runs(P) if s.arch == "hierarchical"):
        base = RUNS[spec.base]
        cfg = config_from_profile(spec.arch, P, **spec.overrides)
        default = config_from_profile(base.arch, P, **base.overrides)
        assert default.l1_coefficient == pytest.approx(1 / math.sqrt(P.dict_size))
        factor = float(spec.name.rsplit("_lambda", 1)[1].rstrip("x"))
        assert cfg.l1_coefficient == pytest.approx(factor * default.l1_coefficient)
        for switch in (
            "linear_sparsity",
            "resampling",
            "window_tracking",
            "adaptive_sparsity",
            "clustering",
        ):
            assert getattr(cfg, switch) == getattr(default, switch)
    assert set(all_runs(P)) == set(RUNS) | {s.name for s in sweep_runs(P)}
