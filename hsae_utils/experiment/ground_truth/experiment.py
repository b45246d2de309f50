"""Every configuration of Table 1 trained on the synthetic world, several seeds, evaluated against
the truth with SAELens' ground-truth metrics plus the absorption measure of `absorption.py`.

Configurations: the three baselines and the five cumulative stages exactly as
`hsae_utils.experiment.paper_runs.RUNS` defines them (our SAE classes, our trainer, the paper's settings and
the profile's steps / batch / windows), plus `topk_matched`: TopK with k = the L0 the
HierarchicalSAE (stage 5) reached on the same seed, for the comparison at matched sparsity.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hsae_utils.analysis.stats import ALPHA, POWER, minimum_detectable_effect, paired_stats
from hsae_utils.experiment.ground_truth.absorption import absorption_scores, hierarchy_pairs
from hsae_utils.experiment.ground_truth.data import SyntheticWorld, TensorStore
from hsae_utils.experiment.paper_runs import is_finished
from hsae_utils.io import atomic_path
from hsae_utils.method.checkpoint import load_sae, set_aside_stale
from hsae_utils.method.saes import ARCHITECTURES, BaseSAE, config_from_profile
from hsae_utils.method.train import TrainConfig, train
from hsae_utils.runs import RUNS, RunSpec

HSAE, TOPK_MATCHED = "stage5_clustering", "topk_matched"
GT_CONFIGS = (*RUNS, TOPK_MATCHED)
VERDICT_CONFIGS = (HSAE, TOPK_MATCHED)  # the absorption verdict's pair, run on more seeds
LABELS = {
    **{name: spec.label for name, spec in RUNS.items()},
    TOPK_MATCHED: "TopK (k = HierarchicalSAE's L0)",
}
METRICS = (
    "mcc",
    "f1",
    "precision",
    "recall",
    "uniqueness",
    "dead",
    "l0",
    "ev",
    "shrinkage",
    "absorption",
    "recall_child",
    "recall_alone",
    "absorbed_by_child",
)
CLAIMED_RELATIVE_REDUCTION = 0.34  # the paper: absorption 0.0088 -> 0.0058


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate_sae(sae: BaseSAE, world: SyntheticWorld, batch_size: int = 8192) -> dict:
    """SAELens' ground-truth metrics (its own calculators) and the absorption measure, on the
    world's eval tokens. Metrics are invariant to the store's scalar normalization."""
    from sae_lens.evals import ExplainedVarianceCalculator
    from sae_lens.synthetic import (
        ClassificationMetricsCalculator,
        DeadLatentsCalculator,
        L0Calculator,
        ShrinkageCalculator,
        feature_uniqueness,
        mean_correlation_coefficient,
    )

    sae = sae.eval().cpu()
    W_dec_LD, true_FD = sae.W_dec.detach(), world.feature_vectors_FD
    l0, dead = L0Calculator(), DeadLatentsCalculator(sae.cfg.d_sae)
    shrink, ev = ShrinkageCalculator(), ExplainedVarianceCalculator()
    cls = ClassificationMetricsCalculator(W_dec_LD, true_FD)
    codes = []
    for i in range(0, len(world.eval_x_ND), batch_size):
        x_BD, f_BF = world.eval_x_ND[i : i + batch_size], world.eval_feats_NF[i : i + batch_size]
        xhat_BD, z_BL = sae(x_BD)
        for calc, args in (
            (l0, (z_BL,)),
            (dead, (z_BL,)),
            (shrink, (xhat_BD, x_BD)),
            (ev, (xhat_BD, x_BD)),
            (cls, (z_BL, f_BF)),
        ):
            calc.add_batch(*args)
        codes.append(z_BL)
    c = cls.compute()
    rows = absorption_scores(
        torch.cat(codes), W_dec_LD, true_FD, world.eval_feats_NF, hierarchy_pairs(world.hierarchy)
    )
    pairs = pd.DataFrame(rows)
    return {
        "mcc": mean_correlation_coefficient(W_dec_LD, true_FD),
        "f1": c.f1_score,
        "precision": c.precision,
        "recall": c.recall,
        "uniqueness": feature_uniqueness(W_dec_LD, true_FD),
        "dead": dead.compute(),
        "l0": l0.compute(),
        "ev": ev.compute(),
        "shrinkage": shrink.compute(),
        **{
            k: float(pairs[k].mean())
            for k in ("absorption", "recall_child", "recall_alone", "absorbed_by_child")
        },
    }


# ----------------------------------------------------------------------------- training


def _world_id(world: SyntheticWorld, optimizer: str) -> str:
    blob = json.dumps({**world.setup.to_dict(), "optimizer": optimizer}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def gt_profile(profile, setup):
    """The profile with the synthetic world's sizes (d, d_sae, steps, batch): the registry's
    runs and sweeps (k scaled by d_sae, lambda_0 = 1/sqrt(d_sae)) as they apply there."""
    return dataclasses.replace(
        profile,
        d_model=setup.hidden_dim,
        d_sae=setup.d_sae,
        train_steps=setup.train_steps or profile.train_steps,
        train_batch_size=setup.train_batch_size or profile.train_batch_size,
    )


def _train_one(
    profile,
    world,
    config: str,
    seed: int,
    folder: Path,
    optimizer: str,
    k: int | None,
    progress: bool,
    spec: RunSpec | None = None,
) -> tuple[BaseSAE, float | None]:
    spec = spec or RUNS["topk" if config == TOPK_MATCHED else config]
    gt = gt_profile(profile, world.setup)
    cfg = dataclasses.replace(TrainConfig.from_profile(gt, seed), optimizer=optimizer)
    set_aside_stale(folder)  # another trainer revision: kept as <folder>.rev<N>, retrained
    if is_finished(folder, cfg.steps, cfg.optimizer):
        return load_sae(folder), None
    overrides = {**spec.overrides, **({"k": k} if k is not None else {})}
    sae_cfg = config_from_profile(
        spec.arch, gt, hook_name="synthetic", model_name="synthetic", **overrides
    )
    sae = ARCHITECTURES[spec.arch](sae_cfg, seed=seed)
    res = train(
        sae,
        TensorStore(world.train_x_ND, world.normalizer),
        cfg,
        folder,
        progress=progress,
        metadata={"profile": profile.name, "run": config, "ground_truth": world.setup.to_dict()},
    )
    return res.sae, res.seconds


def run_ground_truth(
    profile,
    world: SyntheticWorld,
    seeds: tuple[int, ...] | None = None,
    configs: tuple[str, ...] = GT_CONFIGS,
    optimizer: str = "adamw",
    progress: bool = True,
    threads: int | None = 1,
    workers: int | None = None,
) -> pd.DataFrame:
    """Train (or reuse) and evaluate each configuration x seed; one tidy row per run.

    Runs are saved under `<output_dir>/ground_truth/<world id>/<config>/seed<seed>/` (the world
    id hashes the synthetic setup and the optimizer reading), so a finished run is reused and an
    interrupted one resumes; the table is written by `save_table`. `progress`: a bar over the
    runs. `threads`: torch CPU threads
    per run (1 by default: at these sizes a second thread only adds synchronisation, and on a
    busy 2-core machine it made a run 7x slower); None leaves torch's setting. `workers`: runs
    trained at once in worker processes (default: one per CPU core, `run_tasks`); 1 trains them
    one after the other here. The rows are the same either way, bit for bit (timings aside)."""
    unknown = sorted(set(configs) - set(GT_CONFIGS))
    if unknown:
        raise ValueError(f"Unknown ground-truth configuration(s) {unknown}; valid: {GT_CONFIGS}.")
    if TOPK_MATCHED in configs and HSAE not in configs:
        raise ValueError(f"{TOPK_MATCHED} needs {HSAE} (its k is the HierarchicalSAE's L0).")
    order = [c for c in configs if c != TOPK_MATCHED] + (
        [TOPK_MATCHED] if TOPK_MATCHED in configs else []
    )
    root = profile.output_dir / "ground_truth" / _world_id(world, optimizer)
    tasks = []
    for seed in seeds or profile.seeds:
        hsae_index = None
        for config in order:
            if config == HSAE:
                hsae_index = len(tasks)
            after = hsae_index if config == TOPK_MATCHED else None
            tasks.append(GTTask(config, seed, root, {"label": LABELS[config]}, after=after))
    rows = run_tasks(
        profile, world, tasks, optimizer, workers, threads, progress, "ground-truth runs"
    )
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- runs at once


@dataclass(frozen=True)
class GTTask:
    """One run of the synthetic experiment: train (or reuse) `config` at `seed`, evaluate it.

    `extra`: row fields written before the metrics (label, base, family). `after`: the index, in
    the task list, of the HierarchicalSAE run whose L0 sets this TopK's k (`topk_matched`).
    `spec`: a run outside `RUNS` (the sweep's)."""

    config: str
    seed: int
    root: Path  # <output_dir>/ground_truth/<world id>
    extra: dict
    after: int | None = None
    spec: RunSpec | None = None


def _row(profile, world, task: GTTask, k: int | None, optimizer: str) -> dict:
    """Train (or reuse) and evaluate one run: its table row."""
    name = task.config if k is None else f"{task.config}_k{k}"
    t0 = time.perf_counter()
    sae, train_s = _train_one(
        profile,
        world,
        task.config,
        task.seed,
        task.root / name / f"seed{task.seed}",
        optimizer,
        k,
        False,
        spec=task.spec,
    )
    return {
        "config": task.config,
        **task.extra,  # label first, then (sweep) base and family
        "seed": task.seed,
        **({"k": k} if task.spec is None else {}),  # the registry's runs carry k (topk_matched's)
        **evaluate_sae(sae, world),
        "train_s": train_s,
        "total_s": time.perf_counter() - t0,
    }


def _k_for(world, task: GTTask, rows: dict[int, dict]) -> int | None:
    if task.after is None:
        return None
    return min(world.setup.d_sae, max(1, round(rows[task.after]["l0"])))


def default_workers(profile) -> int:
    """On a CPU profile, the cores this process may run on (its affinity mask, else
    `os.cpu_count()`); on a GPU one, 1 (the runs train on the one device)."""
    if profile.resolve_device() != "cpu":
        return 1
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


_WORKER: dict = {}  # a worker process's profile, world and settings (`_init_worker`)


def _init_worker(profile, world, optimizer: str, threads: int | None) -> None:
    if threads is not None:
        torch.set_num_threads(threads)
    _WORKER.update(profile=profile, world=world, optimizer=optimizer)


def _work(task: GTTask, k: int | None) -> dict:
    w = _WORKER
    return _row(w["profile"], w["world"], task, k, w["optimizer"])


def run_tasks(
    profile,
    world: SyntheticWorld,
    tasks: list[GTTask],
    optimizer: str = "adamw",
    workers: int | None = None,
    threads: int | None = 1,
    progress: bool = True,
    desc: str = "runs",
) -> list[dict]:
    """The rows of `tasks`, in their order. The runs are independent (each seeds its own
    generators; none reads torch's global RNG), so `workers` processes (default
    `default_workers(profile)`: one per core) train them at once, each at `threads` torch
    threads: on a 2-core machine the 1-thread runs, Python-overhead bound, take about half the
    time. A task waits for the run named by its `after`. `workers=1` (or a single task) runs
    them here, one after the other.

    Workers are forked from a fork server that imported this module and sae_lens once per
    session (about 10 s of CPU; not from this process, whose torch / OpenMP thread pools do not
    survive a fork reliably), or spawned where there is none; each gets the world once. A failed
    run stops the rest and raises its error."""
    from tqdm.auto import tqdm

    workers = default_workers(profile) if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be >= 1 (or None for one per core), got {workers}.")
    bad = [i for i, t in enumerate(tasks) if t.after is not None and not 0 <= t.after < i]
    if bad:
        raise ValueError(f"Tasks {bad} wait for a run that is not listed before them.")
    rows: dict[int, dict] = {}
    bar = tqdm(total=len(tasks), desc=desc, disable=not progress)
    n_threads = torch.get_num_threads()
    try:
        if workers == 1 or len(tasks) <= 1:
            if threads is not None:
                torch.set_num_threads(threads)
            for i, task in enumerate(tasks):
                rows[i] = _row(profile, world, task, _k_for(world, task, rows), optimizer)
                bar.update()
        else:
            _run_pool(profile, world, tasks, optimizer, workers, threads, rows, bar)
    finally:
        torch.set_num_threads(n_threads)
        bar.close()
    return [rows[i] for i in range(len(tasks))]


# what every worker imports: loaded once in the fork server, not once per worker
_PRELOAD = ("hsae_utils.experiment.ground_truth.experiment", "sae_lens.evals", "sae_lens.synthetic")


def _mp_context():
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(_PRELOAD))  # no effect once the server runs: then lazily
    return ctx


def _run_pool(profile, world, tasks, optimizer, workers, threads, rows, bar) -> None:
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    waiting = {i for i, t in enumerate(tasks) if t.after is not None}
    with ProcessPoolExecutor(
        min(workers, len(tasks)),
        mp_context=_mp_context(),
        initializer=_init_worker,
        initargs=(profile, world, optimizer, threads),
    ) as pool:
        running = {pool.submit(_work, t, None): i for i, t in enumerate(tasks) if i not in waiting}
        try:
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    rows[running.pop(fut)] = fut.result()
                    bar.update()
                for i in sorted(j for j in waiting if tasks[j].after in rows):
                    waiting.discard(i)
                    running[pool.submit(_work, tasks[i], _k_for(world, tasks[i], rows))] = i
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def save_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Atomic CSV write (a crash never leaves half a table)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return path


# ----------------------------------------------------------------------------- seeds


def seeds_for_power(
    std_diff: float, effect: float, alpha: float = ALPHA, power: float = POWER
) -> int:
    """Pairs a two-sided paired t-test needs to detect a mean difference `effect` with `power`
    when the paired differences spread by `std_diff` (statsmodels' TTestPower, as
    `minimum_detectable_effect` inverts it). At least 2."""
    from statsmodels.stats.power import TTestPower

    if not (std_diff > 0 and effect > 0):
        raise ValueError(
            f"seeds_for_power needs std_diff > 0 and effect > 0, got {std_diff}, {effect}."
        )
    solver, d_z = TTestPower(), effect / std_diff
    n = 2  # the smallest n whose power reaches `power` (the root solver fails for large d_z)
    while solver.power(d_z, nobs=n, alpha=alpha, alternative="two-sided") < power:
        n += 1
    return n


def verdict_seeds(profile) -> tuple[int, ...]:
    """The seeds of the absorption verdict: `profile.seeds`, then the next integers after the
    largest, up to `profile.ground_truth_verdict_seeds` seeds in all (every configuration runs
    on `profile.seeds`; only `VERDICT_CONFIGS` on the rest)."""
    seeds = list(profile.seeds)
    nxt = max(seeds) + 1
    while len(seeds) < profile.ground_truth_verdict_seeds:
        seeds.append(nxt)
        nxt += 1
    return tuple(seeds)


# ----------------------------------------------------------------------------- summaries


def summarize(
    df: pd.DataFrame,
    metrics: tuple[str, ...] = (
        "mcc",
        "f1",
        "precision",
        "recall",
        "dead",
        "l0",
        "ev",
        "absorption",
    ),
) -> pd.DataFrame:
    """Mean ± std over seeds per configuration, in Table 1 order, as 'mean ± std' strings."""
    g = df.groupby("config", sort=False)
    out = pd.DataFrame({"label": g["label"].first(), "seeds": g["seed"].nunique()})
    for m in metrics:
        mean, std = g[m].mean(), g[m].std(ddof=1).fillna(0.0)
        out[m] = [f"{a:.3f} ± {b:.3f}" for a, b in zip(mean, std)]
    return out.reset_index()


def absorption_verdict(df: pd.DataFrame, a: str = HSAE, b: str = TOPK_MATCHED) -> dict:
    """Does `a` (the HierarchicalSAE) absorb less than `b` (TopK at its L0)? Paired over seeds.

    'holds': lower and p < alpha; 'does not hold': not significantly lower although the test
    could detect the paper's claimed effect (34 % of b's absorption) — MDE <= claimed effect;
    otherwise 'inconclusive (underpowered)'.

    Matched by construction: `b` is TopK with k = round(a's L0) on the same seed, so the
    baselines' frontier at a's L0 is `b` itself (no interpolation), the rule of
    `analysis.claims.matched_sparsity_verdict`. A TopK can fire fewer than k latents (a
    non-positive pre-activation among its top k); where `b`'s mean L0 is below a's by more
    than the rounding (0.5), `b` is sparser and a win of `a` is "not comparable" (a loss still
    counts: a sparser baseline that absorbs less decides)."""
    va = df[df.config == a].set_index("seed")["absorption"]
    vb = df[df.config == b].set_index("seed")["absorption"]
    seeds = sorted(set(va.index) & set(vb.index))
    st = paired_stats(va[seeds].to_numpy(), vb[seeds].to_numpy())
    claimed = CLAIMED_RELATIVE_REDUCTION * st["mean_b"] if seeds else math.nan
    mde = 0.0 if st["std_diff"] == 0 else minimum_detectable_effect(st["std_diff"], len(seeds))
    lower = st["mean_diff"] < 0
    significant = st["p_value"] < ALPHA
    if lower and significant:
        verdict = "holds"
    elif math.isfinite(mde) and mde <= claimed:
        verdict = "does not hold"
    else:
        verdict = "inconclusive (underpowered)"
    l0_a, l0_b = float(df[df.config == a]["l0"].mean()), float(df[df.config == b]["l0"].mean())
    matched = l0_b >= l0_a - 0.5
    note = (
        ""
        if matched
        else (
            f"{b} is sparser (L0 {l0_b:.1f} < {l0_a:.1f}): a win of {a} "
            "cannot be told from its extra density; "
        )
    )
    if not matched and verdict == "holds":
        verdict = "not comparable"
    return {
        **st,
        "a": a,
        "b": b,
        "claimed_effect": claimed,
        "mde": mde,
        "verdict": verdict,
        "l0_a": l0_a,
        "l0_b": l0_b,
        "matched": matched,
        "matched_note": note,
    }


GT_PANELS = (  # (metric, title with the better direction, x label)
    (
        "mcc",
        "MCC ↑ (higher is better)",
        "mean |cosine| of matched decoder and true features (SAELens)",
    ),
    ("f1", "F1 ↑ (higher is better)", "mean F1 of latents detecting their true feature (SAELens)"),
    (
        "absorption",
        "absorption ↓ (lower is better)",
        "parent-latent recall lost where the child fires",
    ),
)


def ground_truth_figure(
    df: pd.DataFrame, profile_name: str, out_dir: Path | None = None
) -> list[Path]:
    """MCC, F1 and absorption per configuration (dots = seeds, bar = mean), saved as
    `figures/ground_truth_<profile>.png` and `.pdf` (atomically)."""
    import matplotlib.pyplot as plt

    from hsae_utils.analysis.report.figures import family_color, save_figure
    from hsae_utils.analysis.report.tables import FIGURES_DIR

    configs = list(dict.fromkeys(df["config"]))
    colors = [family_color(c) for c in configs]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.4), sharey=True)
    for ax, (metric, title, xlabel) in zip(axes, GT_PANELS):
        for i, c in enumerate(configs):
            v = df[df.config == c][metric].to_numpy(float)
            ax.barh(i, np.nanmean(v), color=colors[i], alpha=0.6)
            ax.plot(v, np.full(len(v), i), "k.", ms=5)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(configs)), [LABELS.get(c, c) for c in configs])
    axes[0].set_ylabel("SAE configuration")
    axes[0].invert_yaxis()
    fig.suptitle(
        "Ground truth: synthetic activations with a known feature hierarchy "
        "(bars: mean over seeds; dots: seeds)",
        fontsize=11,
    )
    fig.tight_layout()
    paths = save_figure(fig, "ground_truth", profile_name, out_dir or FIGURES_DIR)
    plt.close(fig)
    return paths
