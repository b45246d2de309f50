"""Training the runs of the paper (`runs`: three baselines, the five cumulative ablation stages
and the sparsity sweep): `train_run` trains a run for every seed of the profile (or reuses a
finished one), saving each to `runs.run_dir` = `<sae_dir>/<run name>/seed<seed>/`.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .activations import ActivationStore
from .checkpoint import LOG_NAME, read_export_info
from .config import Profile
from .runs import get_run, run_dir
from .saes import ARCHITECTURES, config_from_profile
from .train import TrainConfig, read_log, train


def is_finished(folder: Path, steps: int, optimizer: str = TrainConfig.optimizer) -> bool:
    """A complete export whose training reached `steps` under the same optimizer reading (a run of
    another reading is not reused: training then refuses to resume it and says to delete it)."""
    try:
        info = read_export_info(folder)
    except (FileNotFoundError, ValueError):
        return False
    train = info.get("train") or {}
    return (train.get("steps") == steps and train.get("optimizer", "adam") == optimizer
            and (folder / "sae_weights.safetensors").exists())


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
    store = store or ActivationStore(profile.cache_dir / "train", cache_dtype=profile.cache_dtype)
    results = []
    for seed in seeds or profile.seeds:
        folder = run_dir(profile, name, seed, overrides)
        cfg = TrainConfig.from_profile(profile, seed)
        seconds = None
        if force or not is_finished(folder, cfg.steps, cfg.optimizer):
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


def final_metrics(results: list[RunResult]):
    """Last logged training metrics per (run, seed), plus event counts, as a DataFrame."""
    import pandas as pd  # slow to import; only this summary needs it

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
    alpha = np.array([row["alpha_t"] for r in results for row in r.log if "alpha_t" in row])
    if alpha.size == 0:
        return "no alpha_t logged"
    return (f"alpha_t over {alpha.size} logged steps: min {alpha.min():.3g}, median "
            f"{np.median(alpha):.3g}, max {alpha.max():.3g}; at the lower clamp {lo} on "
            f"{np.mean(alpha <= lo + 1e-9):.0%}, at the upper clamp {hi} on {np.mean(alpha >= hi - 1e-9):.0%}")
