"""The run registry: every SAE the paper's pipeline trains, where it lives, and which notebook
trains it. Torch-free, so the pipeline's skip-check, the claims and the figures read it cheaply.

- `BASELINES` (notebook 02) and `ABLATIONS`, the five cumulative stages of the HierarchicalSAE
  (notebooks 03-07; stage n switches on the first n `MECHANISMS`); `RUNS` holds both.
- `sweep_runs(profile)`: other sparsity levels of the baselines and of the HierarchicalSAE (its
  full model and stage 1, at lambda_0 = multiples of 1/sqrt(d_sae)): the sparsity-fidelity
  frontier of every family (notebook 02 trains them in the same passes).
- `run_dir`: the folder of one run and seed under `profile.sae_dir`.
- `NOTEBOOK_RUNS`: the runs each notebook trains, written out (a renamed notebook keeps its runs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hsae_utils.config import Profile
from hsae_utils.method.stages import MECHANISMS, stage_switches  # torch-free


@dataclass(frozen=True)
class RunSpec:
    name: str  # folder name and results key
    label: str  # for tables and plots
    arch: str  # key of hsae_utils.method.saes.ARCHITECTURES
    overrides: dict[str, Any] = field(default_factory=dict)
    base: str | None = None  # a sweep run: the registered run it varies (e.g. "topk")


BASELINES = (
    RunSpec("topk", "TopK", "topk"),
    RunSpec("batchtopk", "BatchTopK", "batchtopk"),
    RunSpec("relu_l1", "L1 (lambda=0.04)", "relu", {"l1_coefficient": 0.04}),
)
_STAGE_LABELS = (
    "Linear sparsity",
    "+Resampling",
    "+Window tracking",
    "+Adaptive sparsity",
    "+Clustering (HierarchicalSAE)",
)
ABLATIONS = tuple(
    RunSpec(
        f"stage{n}_{MECHANISMS[n - 1]}", _STAGE_LABELS[n - 1], "hierarchical", stage_switches(n)
    )
    for n in range(1, len(MECHANISMS) + 1)
)
RUNS: dict[str, RunSpec] = {r.name: r for r in BASELINES + ABLATIONS}
TOPK = BASELINES[0].name  # the paper's baseline (Table 1, the claims)
HSAE = ABLATIONS[-1].name  # the full method: stage 5, +clustering
PAPER_RUNS = tuple(RUNS)  # the paper's configurations, in its order
DEFAULT_L1 = BASELINES[2].overrides["l1_coefficient"]
# the HierarchicalSAE's runs swept over lambda_0: the full model and stage 1 (the plain schedule);
# stage 4 trains like stage 5 wherever clustering merges nothing, so it is not swept separately
HSAE_SWEPT = (HSAE, ABLATIONS[0].name)


def sweep_runs(profile: Profile) -> tuple[RunSpec, ...]:
    """Other sparsity levels (k for TopK / BatchTopK, lambda for L1, lambda_0 for the
    HierarchicalSAE's full model and its stage 1), trained on `profile.sweep_seeds`: the field
    compares SAEs at matched L0, the paper does not, and the HierarchicalSAE's default L0 (~570 of
    576 latents at `local`) lies far above TopK's, so every family gets a frontier that overlaps
    the others' L0 range."""
    ks = sorted(
        {min(profile.dict_size, max(1, round(profile.topk_k * f))) for f in profile.sweep_k_factors}
        - {profile.topk_k}
    )
    specs = [
        RunSpec(f"{arch}_k{k}", f"{label} k={k}", arch, {"k": k}, base=arch)
        for arch, label in (("topk", "TopK"), ("batchtopk", "BatchTopK"))
        for k in ks
    ]
    specs += [
        RunSpec(
            f"relu_l1_lambda{lam:g}",
            f"L1 (lambda={lam:g})",
            "relu",
            {"l1_coefficient": lam},
            base="relu_l1",
        )
        for lam in profile.sweep_l1_coefficients
        if lam != DEFAULT_L1
    ]
    lambda0 = 1.0 / math.sqrt(profile.dict_size)  # the paper's lambda_0 (schedules.default_lambda0)
    specs += [
        RunSpec(
            f"{run.name}_lambda{m:g}x",
            f"{run.label} (lambda_0={m:g}x)",
            run.arch,
            {**run.overrides, "l1_coefficient": m * lambda0},
            base=run.name,
        )
        for run in (RUNS[name] for name in HSAE_SWEPT)
        for m in profile.sweep_hsae_lambda_factors
        if m != 1
    ]
    return tuple(specs)


def all_runs(profile: Profile | None = None) -> dict[str, RunSpec]:
    """The paper's runs, plus the profile's sweep runs when a profile is given."""
    return {**RUNS, **({r.name: r for r in sweep_runs(profile)} if profile else {})}


def get_run(name: str, profile: Profile | None = None) -> RunSpec:
    runs = all_runs(profile)
    if name not in runs:
        raise ValueError(f"Unknown run {name!r}. Valid runs: {', '.join(runs)}.")
    return runs[name]


def family(config: str) -> str:
    """The SAE family of a configuration name: topk, batchtopk, relu_l1 or hierarchical."""
    base = config.split("__")[0]
    if base.startswith("stage"):  # the ablation stages, and interpretations of them
        return "hierarchical"
    for fam in ("batchtopk", "topk", "relu_l1"):
        if base == fam or base.startswith(fam + "_"):
            return fam
    return base


def sweep_base(config: str, profile: Profile | None = None) -> str:
    """The registered run a configuration varies: "topk" for "topk_k448", "stage5_clustering"
    for "stage5_clustering_lambda4x", itself for a registered run (figures draw one frontier per
    base run, e.g. stage 1 apart from stage 5 within the hierarchical family)."""
    base = config.split("__")[0]
    if profile is not None:
        spec = all_runs(profile).get(base)
        if spec is not None:
            return spec.base or spec.name
    for name in sorted(RUNS, key=len, reverse=True):  # no profile: by the naming rule
        if base == name or base.startswith(name + "_"):
            return name
    return base


def run_dir(profile: Profile, name: str, seed: int, overrides: dict | None = None) -> Path:
    """`<sae_dir>/<name>[__key-value...]/seed<seed>`: a non-default interpretation gets its own
    folder, so it never overwrites or mixes with the default run."""
    suffix = "".join(f"__{k}-{v}" for k, v in sorted((overrides or {}).items()))
    return profile.sae_dir / f"{name}{suffix}" / f"seed{seed}"


# The runs each training notebook produces ("sweep": the profile's `sweep_runs`, on its
# `sweep_seeds`; every other run on `profile.seeds`).
NOTEBOOK_RUNS: dict[str, tuple[str, ...]] = {
    # notebook 02 trains every run of a seed in one pass over the cache (the stages too);
    # 03 trains the five stages together if 02 has not (twins share their steps)
    "02_baselines": ("topk", "batchtopk", "relu_l1", "sweep", *(spec.name for spec in ABLATIONS)),
    "03_stage1_linear_sparsity": tuple(spec.name for spec in ABLATIONS),
    "04_stage2_resampling": ("stage2_resampling",),
    "05_stage3_window_tracking": ("stage3_window_tracking",),
    "06_stage4_adaptive_sparsity": ("stage4_adaptive_sparsity",),
    "07_stage5_clustering": ("stage5_clustering",),
}


def notebook_runs(profile: Profile, notebook: str) -> list[tuple[str, tuple[int, ...]]]:
    """(run name, seeds) of every run `notebook` (e.g. "04_stage2_resampling.ipynb") trains;
    empty for a notebook that trains none."""
    out: list[tuple[str, tuple[int, ...]]] = []
    for name in NOTEBOOK_RUNS.get(notebook.removesuffix(".ipynb"), ()):
        if name == "sweep":
            out += [(spec.name, profile.sweep_seeds) for spec in sweep_runs(profile)]
        else:
            out.append((name, profile.seeds))
    return out
