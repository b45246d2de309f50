"""The runs of the paper: three baselines and the five cumulative ablation stages.

Each run is a named architecture plus config overrides; `train_run` trains it for every seed of
the profile (or reuses a finished run), saving each to `<sae_dir>/<run name>/seed<seed>/`.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .activations import ActivationStore
from .checkpoint import LOG_NAME, load_sae, read_export_info
from .config import Profile
from .saes import ARCHITECTURES, MECHANISMS, config_from_profile, stage_switches
from .train import TrainConfig, read_log, train


@dataclass(frozen=True)
class RunSpec:
    name: str  # folder name and results key
    label: str  # for tables and plots
    arch: str  # key of hsae_utils.saes.ARCHITECTURES
    overrides: dict[str, Any] = field(default_factory=dict)


BASELINES = (
    RunSpec("topk", "TopK", "topk"),
    RunSpec("batchtopk", "BatchTopK", "batchtopk"),
    RunSpec("relu_l1", "L1 (lambda=0.04)", "relu", {"l1_coefficient": 0.04}),
)
_STAGE_LABELS = ("Linear sparsity", "+Resampling", "+Window tracking", "+Adaptive sparsity",
                 "+Clustering (HierarchicalSAE)")
ABLATIONS = tuple(
    RunSpec(f"stage{n}_{MECHANISMS[n - 1]}", _STAGE_LABELS[n - 1], "hierarchical",
            stage_switches(n))
    for n in range(1, len(MECHANISMS) + 1)
)
RUNS: dict[str, RunSpec] = {r.name: r for r in BASELINES + ABLATIONS}


def sweep_runs(profile: Profile) -> tuple[RunSpec, ...]:
    """Other sparsity levels of the baselines (k for TopK / BatchTopK, lambda for L1), trained on
    `profile.sweep_seeds`: the field compares SAEs at matched L0, the paper does not."""
    ks = sorted({min(profile.dict_size, max(1, round(profile.topk_k * f)))
                 for f in profile.sweep_k_factors} - {profile.topk_k})
    specs = [RunSpec(f"{arch}_k{k}", f"{label} k={k}", arch, {"k": k})
             for arch, label in (("topk", "TopK"), ("batchtopk", "BatchTopK")) for k in ks]
    specs += [RunSpec(f"relu_l1_lambda{lam:g}", f"L1 (lambda={lam:g})", "relu", {"l1_coefficient": lam})
              for lam in profile.sweep_l1_coefficients if lam != 0.04]
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
    if base.startswith("stage"):
        return "hierarchical"
    for fam in ("batchtopk", "topk", "relu_l1"):
        if base == fam or base.startswith(fam + "_"):
            return fam
    return base


def train_config(profile: Profile, seed: int) -> TrainConfig:
    """The paper's optimisation settings with the profile's budget (section 5.1)."""
    return TrainConfig(steps=profile.train_steps, batch_size=profile.train_batch_size, seed=seed,
                       log_every=profile.log_every, checkpoint_every=profile.checkpoint_every,
                       device=profile.resolve_device())


def run_dir(profile: Profile, name: str, seed: int, overrides: dict | None = None) -> Path:
    """`<sae_dir>/<name>[__key-value...]/seed<seed>`: a non-default interpretation gets its own
    folder, so it never overwrites or mixes with the default run."""
    suffix = "".join(f"__{k}-{v}" for k, v in sorted((overrides or {}).items()))
    return profile.sae_dir / f"{name}{suffix}" / f"seed{seed}"


def is_finished(folder: Path, steps: int) -> bool:
    """A complete export whose training reached `steps`."""
    try:
        info = read_export_info(folder)
    except (FileNotFoundError, ValueError):
        return False
    return (info.get("train") or {}).get("steps") == steps and (folder / "sae_weights.safetensors").exists()


@dataclass
class RunResult:
    name: str
    seed: int
    folder: Path
    log: list[dict]  # metric rows
    events: list[dict]  # resample / merge events
    seconds: float | None  # training wall time of this call (None when reused)


def train_run(profile: Profile, name: str, seeds: tuple[int, ...] | None = None,
              store: ActivationStore | None = None, force: bool = False,
              progress: bool = True, overrides: dict | None = None) -> list[RunResult]:
    """Train run `name` for each seed, or reuse a finished one; an interrupted run resumes.

    `overrides` changes config fields of the run (e.g. an interpretation such as
    `{"recon_units": "mean"}`); such runs are saved under their own folder name."""
    spec = get_run(name, profile)
    store = store or ActivationStore(profile.cache_dir / "train")
    results = []
    for seed in seeds or profile.seeds:
        folder = run_dir(profile, name, seed, overrides)
        cfg = train_config(profile, seed)
        seconds = None
        if force or not is_finished(folder, cfg.steps):
            if force and folder.exists():
                shutil.rmtree(folder)
            sae_cfg = config_from_profile(spec.arch, profile, **{**spec.overrides, **(overrides or {})})
            sae = ARCHITECTURES[spec.arch](sae_cfg, seed=seed)
            res = train(sae, store, cfg, folder, progress=progress,
                        metadata={"profile": profile.name, "run": name, "label": spec.label,
                                  "seed": seed, "overrides": overrides or {}})
            seconds = res.seconds
        rows = read_log(folder / LOG_NAME)
        results.append(RunResult(
            folder.parent.name, seed, folder,
            log=[r for r in rows if r.get("kind") == "metrics"],
            events=[r for r in rows if r.get("kind") == "event"],
            seconds=seconds))
    return results


def finished_runs(profile: Profile) -> list[tuple[RunSpec, int, Path]]:
    """Every (run, seed, folder) of this profile with a complete export, in RUNS order."""
    out = []
    for spec in all_runs(profile).values():
        for folder in sorted((profile.sae_dir / spec.name).glob("seed*")):
            if (folder / "hsae_config.json").exists():
                out.append((spec, int(folder.name[4:]), folder))
    return out


def load_run_sae(folder: Path, device: str = "cpu"):
    return load_sae(folder, device=device)


def final_metrics(results: list[RunResult]):
    """Last logged training metrics per (run, seed), plus event counts, as a DataFrame."""
    import pandas as pd

    rows = []
    for r in results:
        last = r.log[-1] if r.log else {}
        rows.append({"run": r.name, "seed": r.seed, "step": last.get("step"),
                     "loss": last.get("loss"), "mse": last.get("mse"), "ev": last.get("ev"),
                     "l0": last.get("l0"), "dead": last.get("dead"),
                     "resamples": sum(e.get("event") == "resample" for e in r.events),
                     "merges": sum(len(e.get("pairs", [])) for e in r.events
                                   if e.get("event") == "merge"),
                     "train_s": None if r.seconds is None else round(r.seconds, 1)})
    return pd.DataFrame(rows)


def alpha_report(results: list[RunResult], lo: float = 0.1, hi: float = 2.0) -> str:
    """How often the adaptive factor alpha_t sat at its clamps, over all logged steps."""
    import numpy as np

    alpha = np.array([row["alpha_t"] for r in results for row in r.log if "alpha_t" in row])
    if alpha.size == 0:
        return "no alpha_t logged"
    return (f"alpha_t over {alpha.size} logged steps: min {alpha.min():.3g}, median "
            f"{np.median(alpha):.3g}, max {alpha.max():.3g}; at the lower clamp {lo} on "
            f"{np.mean(alpha <= lo + 1e-9):.0%}, at the upper clamp {hi} on {np.mean(alpha >= hi - 1e-9):.0%}")
