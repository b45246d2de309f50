"""Training the runs of the paper (`runs`: three baselines, the five cumulative ablation stages
and the sparsity sweep): `train_run` trains a run for every seed of the profile (or reuses a
finished one; `train_runs` trains several from one pass over the cache per seed), saving each to
`runs.run_dir` = `<sae_dir>/<run name>/seed<seed>/`. A run trained by another trainer revision
(`checkpoint.TRAINER_REVISION`) is not reused: it is moved to `<sae_dir>.rev<N>/` and retrained.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from hsae_utils.config import Profile
from hsae_utils.data.activations import ActivationStore
from hsae_utils.method.checkpoint import (
    LOG_NAME,
    TRAINER_REVISION,
    read_export_info,
    set_aside_stale,
    trainer_revision_of,
)
from hsae_utils.method.saes import ARCHITECTURES, config_from_profile
from hsae_utils.method.train import TrainConfig, TrainResult, read_log
from hsae_utils.method.train_many import TrainJob, train_many
from hsae_utils.runs import get_run, run_dir


def is_finished(folder: Path, steps: int, optimizer: str = TrainConfig.optimizer) -> bool:
    """A complete export whose training reached `steps` under the same optimizer reading (a run of
    another reading is not reused: training then refuses to resume it and says to delete it) and
    the current trainer revision (callers that retrain first move an older one aside:
    `checkpoint.set_aside_stale`)."""
    try:
        info = read_export_info(folder)
    except (FileNotFoundError, ValueError):
        return False
    train = info.get("train") or {}
    return (
        train.get("steps") == steps
        and train.get("optimizer", "adam") == optimizer
        and trainer_revision_of(info) == TRAINER_REVISION
        and (folder / "sae_weights.safetensors").exists()
    )


def train_run(
    profile: Profile,
    name: str,
    seeds: tuple[int, ...] | None = None,
    store: ActivationStore | None = None,
    force: bool = False,
    progress: bool = True,
    overrides: dict | None = None,
) -> list[TrainResult]:
    """Train run `name` for each seed, or reuse a finished one; an interrupted run resumes.

    `overrides` changes config fields of the run (e.g. an interpretation such as
    `{"recon_units": "mean"}`); such runs are saved under their own folder name."""
    return train_runs(profile, [name], seeds, store, force, progress, overrides)[name]


def train_runs(
    profile: Profile,
    names: list[str],
    seeds: tuple[int, ...] | None = None,
    store: ActivationStore | None = None,
    force: bool = False,
    progress: bool = True,
    overrides: dict | None = None,
) -> dict[str, list[TrainResult]]:
    """`train_run` for several runs: per seed, the unfinished ones train together from one pass
    over the cache (`train_many`; each ends as it would alone). `seconds` of a run trained
    here is the shared pass's time."""
    specs = {name: get_run(name, profile) for name in names}
    store = store or ActivationStore(profile.cache_dir / "train", cache_dtype=profile.cache_dtype)
    results: dict[str, list[TrainResult]] = {name: [] for name in names}
    for seed in seeds or profile.seeds:
        cfg = TrainConfig.from_profile(profile, seed)
        folders = {name: run_dir(profile, name, seed, overrides) for name in names}
        jobs = {}
        for name, spec in specs.items():
            folder = folders[name]
            set_aside_stale(folder, profile.sae_dir)  # before `force` could delete it
            if not force and is_finished(folder, cfg.steps, cfg.optimizer):
                continue
            if force and folder.exists():
                shutil.rmtree(folder)
            sae_cfg = config_from_profile(
                spec.arch, profile, **{**spec.overrides, **(overrides or {})}
            )
            jobs[name] = TrainJob(
                ARCHITECTURES[spec.arch](sae_cfg, seed=seed),
                cfg,
                folder,
                {
                    "profile": profile.name,
                    "run": name,
                    "label": spec.label,
                    "seed": seed,
                    "overrides": overrides or {},
                },
            )
        trained = (
            dict(zip(jobs, train_many(list(jobs.values()), store, progress=progress)))
            if jobs
            else {}
        )
        for name, folder in folders.items():
            if name in trained:  # named as the registry names them; the SAE is not kept (a
                # pass's worth of SAEs on the GPU): `load_sae(result.folder)`
                trained[name].name, trained[name].sae = folder.parent.name, None
                results[name].append(trained[name])
                continue
            rows = read_log(folder / LOG_NAME)  # finished before: reused as it is on disk
            results[name].append(
                TrainResult(
                    folder,
                    log=[r for r in rows if r.get("kind") == "metrics"],
                    events=[r for r in rows if r.get("kind") == "event"],
                    steps=cfg.steps,
                    name=folder.parent.name,
                    seed=seed,
                )
            )
    return results


def train_paper_runs(
    profile: Profile,
    store: ActivationStore | None = None,
    force: bool = False,
    progress: bool = True,
) -> dict[str, list[TrainResult]]:
    """Every run of the paper's pipeline (the baselines, the five stages on `profile.seeds`, the
    sweep on `profile.sweep_seeds`) with one pass over the cache per seed (`train_runs`)."""
    from hsae_utils.runs import PAPER_RUNS, sweep_runs

    sweep = [spec.name for spec in sweep_runs(profile)]
    results: dict[str, list[TrainResult]] = {name: [] for name in [*PAPER_RUNS, *sweep]}
    for seed in sorted({*profile.seeds, *profile.sweep_seeds}):
        names = [
            *(PAPER_RUNS if seed in profile.seeds else ()),
            *(sweep if seed in profile.sweep_seeds else ()),
        ]
        for name, runs in train_runs(
            profile, names, (seed,), store, force=force, progress=progress
        ).items():
            results[name] += runs
    return results


def sharing_report(results: dict[str, list[TrainResult]]) -> str:
    """What the shared passes of `train_runs` computed: per seed, the gradient steps taken
    against those of training each run alone (twins share a step until one of them acts)."""
    lines = []
    seeds = sorted({r.seed for rs in results.values() for r in rs})
    for seed in seeds:
        trained = [r for rs in results.values() for r in rs if r.seed == seed and r.trained_steps]
        if not trained:
            lines.append(f"seed {seed}: every run trained before (reused)")
            continue
        total = sum(r.trained_steps for r in trained)
        shared = sum(r.shared_steps for r in trained)
        lines.append(
            f"seed {seed}: {len(trained)} runs in one pass, {total - shared:,} gradient "
            f"steps computed for {total:,} ({shared / total:.0%} shared by twins), "
            f"{trained[0].seconds:.0f} s"
        )
    return "\n".join(lines)


def final_metrics(results: list[TrainResult]):
    """Last logged training metrics per (run, seed), plus event counts, as a DataFrame."""
    import pandas as pd  # slow to import; only this summary needs it

    rows = []
    for r in results:
        last = r.log[-1] if r.log else {}
        rows.append(
            {
                "run": r.name,
                "seed": r.seed,
                "step": last.get("step"),
                "loss": last.get("loss"),
                "mse": last.get("mse"),
                "ev": last.get("ev"),
                "l0": last.get("l0"),
                "dead": last.get("dead"),
                "resamples": sum(e.get("event") == "resample" for e in r.events),
                "merges": sum(
                    len(e.get("pairs", [])) for e in r.events if e.get("event") == "merge"
                ),
                "train_s": None if r.seconds is None else round(r.seconds, 1),
            }
        )
    return pd.DataFrame(rows)
