"""Several SAEs from one pass over the store: `train_many(jobs, store)`.

Each batch is read and normalized once and fed to every SAE in turn. Each SAE keeps its own
optimizer, RNG, mechanisms, log, checkpoints and resume, and takes exactly the steps of
`hsae_utils.method.train.train` (the same `optimizer_step`, `after_step` and `RunFiles`), so each
ends bit-identical (CPU) to training it alone (tests/test_train_many.py).

Twins: SAEs that differ only in mechanisms that act through rare events (the HierarchicalSAE's
resampling, window tracking, clustering: `trajectory_neutral_fields`) take identical gradient
steps until one of them acts; such twins share one gradient step (`pair_twins`) until then.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from hsae_utils.method.saes import BaseSAE, StepOutput
from hsae_utils.method.train import (
    BatchSource,
    RunFiles,
    TrainConfig,
    TrainResult,
    after_step,
    comparable,
    finish_run,
    optimizer_step,
    setup_run,
)


@dataclass
class TrainJob:
    """One SAE of a shared pass: what `train` takes besides the store."""

    sae: BaseSAE
    cfg: TrainConfig
    out_dir: str | Path
    metadata: dict[str, Any] | None = None


def train_many(
    jobs: list[TrainJob], store: BatchSource, progress: bool = True, share_trajectories: bool = True
) -> list[TrainResult]:
    """Train several SAEs from one pass over the store, each as `train` would alone: the jobs
    must share the batch order (seed and batch_size) and the device; their step counts may
    differ. Jobs resume from their own checkpoints; the pass starts at the earliest one. An error
    (NaN loss, interruption) stops the pass; every job keeps its last checkpoint.
    TrainResult.seconds is the pass's time.

    `share_trajectories`: twins (see the module docstring) share one gradient step until one of
    them acts, and each still ends bit-identical to training it alone."""
    if not jobs:
        raise ValueError("train_many: no jobs given.")
    first = jobs[0].cfg
    for job in jobs[1:]:
        for key in ("seed", "batch_size", "device"):
            if getattr(job.cfg, key) != getattr(first, key):
                raise ValueError(
                    f"train_many: jobs read different batches ({key} {getattr(first, key)!r} vs "
                    f"{getattr(job.cfg, key)!r}); group jobs by seed, batch_size and device."
                )
    out_dirs = [Path(job.out_dir).resolve() for job in jobs]
    if len(set(out_dirs)) < len(out_dirs):
        raise ValueError("train_many: two jobs share an out_dir; give each its own folder.")

    runs: list[_Run] = []
    try:
        for job in jobs:
            runs.append(_Run(job, store))
        if share_trajectories:
            pair_twins(runs)
        start, end = min(r.start for r in runs), max(r.cfg.steps for r in runs)
        desc = type(jobs[0].sae).__name__ if len(jobs) == 1 else f"{len(jobs)} SAEs"
        t0 = time.perf_counter()
        with tqdm(total=end, initial=start, disable=not progress, unit="step", desc=desc) as bar:
            if start < end:
                batches = store.iter_batches(
                    first.batch_size,
                    first.seed,
                    start_step=start,
                    device=torch.device(first.device),
                )
            for step in range(start, end):
                x_BD = next(batches)
                # leaders as the step begins: a follower the step hands on to is done with it
                for run in [r for r in runs if r.leader is None]:
                    if run.start <= step < run.cfg.steps:
                        row = run.step(step, x_BD, t0)
                        if row is not None and len(runs) == 1:
                            bar.set_postfix(loss=f"{row['loss']:.4g}", l0=f"{row['l0']:.1f}")
                if share_trajectories and any(
                    r.acted for r in runs if r.start <= step < r.cfg.steps
                ):
                    pair_twins(runs)  # runs that acted alike (the same resample) are twins again
                bar.update(1)
        seconds = time.perf_counter() - t0
    finally:
        for run in runs:
            run.files.close()
    return [run.finish(seconds) for run in runs]


def pair_twins(runs: list["_Run"]) -> None:
    """Make each leading run that would take the same gradient steps as an earlier one its
    follower (with its own followers). Called at the start of a pass and after each step in which
    a run acted: runs whose events were identical (the same latents resampled from the same draw)
    are twins again.

    Twins: the same architecture and training config, SAE configs equal except for the
    architecture's `trajectory_neutral_fields` (switches of mechanisms that only act through
    events), the same start step and the same weights and optimizer state there. A follower
    copies its leader's weights and optimizer state after each gradient step instead of
    computing it, then runs its own bookkeeping and mechanisms: its statistics, logs,
    checkpoints and events are its own. The first event (resample, merge) of either side ends the
    sharing for that run, whose state is by then exactly what it would be alone."""
    leaders: list[_Run] = []
    for run in runs:
        if run.leader is not None:
            continue
        for lead in leaders:
            if _twins(lead, run):
                for follower in (run, *run.followers):
                    follower.leader = lead
                lead.followers += [run, *run.followers]
                run.followers = []
                break
        else:
            leaders.append(run)


def _twins(a: "_Run", b: "_Run") -> bool:
    neutral = set(getattr(type(a.sae), "trajectory_neutral_fields", ()))
    if type(a.sae) is not type(b.sae) or not neutral or a.start != b.start:
        return False
    ca, cb = a.sae.cfg.to_dict(), b.sae.cfg.to_dict()
    if any(comparable(ca[k]) != comparable(cb[k]) for k in ca if k not in neutral):
        return False
    if comparable(a.cfg.to_dict()) != comparable(b.cfg.to_dict()):
        return False
    pa, pb = list(a.sae.parameters()), list(b.sae.parameters())
    if not all(torch.equal(p, q) for p, q in zip(pa, pb)):
        return False
    sa, sb = (o.state_dict()["state"] for o in (a.optimizer, b.optimizer))
    return sa.keys() == sb.keys() and all(
        sa[i].keys() == sb[i].keys() and all(torch.equal(sa[i][k], sb[i][k]) for k in sa[i])
        for i in sa
    )


class _Run:
    """One SAE's state during a pass: set up as `train` does (resume or fresh start), steps
    (its own, or copied from its leader), export."""

    def __init__(self, job: TrainJob, store: BatchSource):
        self.sae, self.cfg, self.metadata = job.sae, job.cfg, job.metadata
        self.out_dir = Path(job.out_dir)
        self.optimizer, self.generator, self.resumed_from = setup_run(
            self.sae, store, self.cfg, self.out_dir
        )
        self.start = self.resumed_from or 0
        self.files = RunFiles(
            self.out_dir, self.cfg, self.sae, self.optimizer, self.generator, self.resumed_from
        )
        # Sharing a gradient step with twins (`share_trajectories`).
        self.leader: _Run | None = None
        self.followers: list[_Run] = []
        self.shared_steps = 0  # steps whose gradient step was copied from a leader
        self.acted = False  # a mechanism event in the last step

    def step(self, step: int, x_BD: Tensor, t0: float) -> dict[str, Any] | None:
        """Train on batch `step` (and the followers' copies of it); returns the metrics row on
        log steps."""
        out = optimizer_step(
            self.sae, self.optimizer, x_BD, step, self.cfg.steps, self.cfg.grad_clip
        )
        for follower in list(self.followers):
            follower.copy_state(self)
            follower.shared_steps += 1
            if follower.bookkeep(step, x_BD, out, t0)[1]:  # it acted: on its own from now on
                self.followers.remove(follower)
                follower.leader = None
        row, events = self.bookkeep(step, x_BD, out, t0)
        if events and self.followers:  # this run acted; its followers, still equal, go on alone
            new, *rest = self.followers
            new.leader, new.followers = None, rest
            for follower in rest:
                follower.leader = new
            self.followers = []
        return row

    @torch.no_grad()
    def copy_state(self, leader: "_Run") -> None:
        """Take the leader's weights and optimizer state (what this run's own gradient step would
        have computed: same weights, same batch, same config)."""
        for p, q in zip(self.sae.parameters(), leader.sae.parameters()):
            p.copy_(q)
            mine, theirs = self.optimizer.state[p], leader.optimizer.state[q]
            for key, value in theirs.items():
                if key in mine and mine[key].shape == value.shape:
                    mine[key].copy_(value)
                else:
                    mine[key] = value.clone()

    def bookkeep(
        self, step: int, x_BD: Tensor, out: StepOutput, t0: float
    ) -> tuple[dict[str, Any] | None, list[dict]]:
        """After the gradient step, as `train`: mechanisms, then NaN check, log, checkpoint."""
        events = after_step(
            self.sae, self.optimizer, x_BD, step, out, self.generator, self.cfg.steps
        )
        self.acted = bool(events)
        return self.files.record(step, x_BD, out, events, t0), events

    def finish(self, seconds: float) -> TrainResult:
        return finish_run(
            self.sae,
            self.cfg,
            self.out_dir,
            self.metadata,
            self.resumed_from,
            seconds,
            self.shared_steps,
        )
