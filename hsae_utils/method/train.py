"""One trainer for every SAE architecture: `train(sae, store, cfg, out_dir)`.

Step t (0-based) is: loss -> backward -> project out the decoder gradient parallel to its rows ->
clip the gradient norm -> optimizer step -> renormalize decoder rows -> `sae.after_step` (statistics
and, for the HierarchicalSAE, resampling / merging, whose latents get their Adam moments reset).

Logs and events say `step` = completed steps (t + 1). The run folder `out_dir` gets
    train_log.jsonl   one JSON object per line: "kind": "metrics" every `log_every` steps, or
                      "kind": "event" (resample / merge) when one happens
    checkpoint.pt     the latest checkpoint (atomic), every `checkpoint_every` steps and at the end
    + the exported SAE (cfg.json, sae_weights.safetensors, ... see hsae_utils.method.checkpoint)
`train_many(jobs, store)` trains several SAEs that share the batch order (seed, batch size) from one
pass over the store, each exactly as `train` would.
Calling `train` again with the same configs resumes from checkpoint.pt and reaches bit-identical
weights on CPU (same data batches via the store's `start_step`, same optimizer / RNG / mechanism
state).
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol

import torch
from torch import Tensor
from tqdm.auto import tqdm

from hsae_utils.method.checkpoint import (LOG_NAME, load_training_checkpoint, restore_training_state, save_sae,
                         save_training_checkpoint)
from hsae_utils.io import atomic_path, remove_stale_temporaries
from hsae_utils.method.mechanisms import reset_adam_state
from hsae_utils.method.saes import BaseSAE, StepOutput
from hsae_utils.method.saes.sparse_decode import DECODE_MODES

CHECKPOINT_NAME = "checkpoint.pt"
# Readings of the paper's "Adam with weight decay 0.01" (TrainConfig.optimizer).
OPTIMIZER_READINGS = ("adamw", "adam_l2", "none")
# TrainConfig fields that change the result: a checkpoint is only resumed if they match.
_RESULT_FIELDS = ("steps", "batch_size", "lr", "betas", "weight_decay", "optimizer", "grad_clip",
                  "seed", "init_weights")


class ActivationStore(Protocol):
    """What `train` needs from an activation store (hsae_utils.data.activations.ActivationStore)."""

    d_model: int
    n_tokens: int

    def iter_batches(self, batch_size: int, seed: int, start_step: int = 0,
                     device: str | torch.device = "cpu") -> Iterator[Tensor]: ...

    def sample(self, n_tokens: int, seed: int) -> Tensor: ...


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN/Inf; the message names the step and the last good checkpoint."""


@dataclass
class TrainConfig:
    """Optimisation settings of the paper (section 5.1), shared by every architecture.

    optimizer: how "Adam ... with weight decay 0.01" (section 5.1) is read (docs/weight_decay.md):
        "adamw" (default): decoupled decay, torch.optim.AdamW(weight_decay=...): the weights
            shrink by lr x weight_decay per step, outside Adam's normalisation;
        "adam_l2": torch.optim.Adam(weight_decay=...), the L2 term added to the clipped gradient
            and normalised by Adam like the rest (the literal torch reading; for rarely-firing
            latents the update then follows the decay, which kills TopK latents);
        "none": Adam without decay (weight_decay is ignored).
    grad_clip: max global gradient norm (None = no clipping).
    init_weights: at step 0, re-initialise the SAE from `seed` (so one seed fixes the init, the
        data order and the mechanisms' random draws); False trains the weights as given.
    decode: how TopK / BatchTopK SAEs compute the training step, "auto" | "dense" | "sparse"
        (only the active latents in the decode and the backward; `TopKSAE.decode_mode`; equal up
        to float rounding, so not a result field: resuming a
        run under another mode continues it, though not bit-identically).
    """

    steps: int = 4882
    batch_size: int = 2048
    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.01
    optimizer: str = "adamw"
    grad_clip: float | None = 1.0
    seed: int = 42
    log_every: int = 50
    checkpoint_every: int = 500
    device: str = "cpu"
    init_weights: bool = True
    decode: str = "auto"

    def __post_init__(self):
        bad = [f"{k}={getattr(self, k)!r}" for k in ("steps", "batch_size", "lr", "log_every",
                                                      "checkpoint_every") if getattr(self, k) <= 0]
        if self.optimizer not in OPTIMIZER_READINGS:
            raise ValueError(f"TrainConfig: optimizer must be one of {OPTIMIZER_READINGS}, got "
                             f"{self.optimizer!r} ('adam' is now 'adam_l2').")
        if self.grad_clip is not None and self.grad_clip <= 0:
            bad.append(f"grad_clip={self.grad_clip!r} (None disables clipping)")
        if bad:
            raise ValueError(f"TrainConfig: {', '.join(bad)} must be positive.")
        if self.decode not in DECODE_MODES:
            raise ValueError(f"TrainConfig: decode must be one of {DECODE_MODES}, got "
                             f"{self.decode!r}.")

    @classmethod
    def from_profile(cls, profile, seed: int, **overrides: Any) -> "TrainConfig":
        kw = dict(steps=profile.train_steps, batch_size=profile.train_batch_size, seed=seed,
                  log_every=profile.log_every, checkpoint_every=profile.checkpoint_every,
                  device=profile.resolve_device())
        return cls(**{**kw, **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrainResult:
    sae: BaseSAE  # trained, in eval mode
    out_dir: Path
    steps: int
    resumed_from: int | None  # the checkpoint step this call started from, None for a fresh run
    log: list[dict[str, Any]]  # metric rows of the whole run (earlier segments included)
    events: list[dict[str, Any]]
    seconds: float  # wall time of this call's training steps
    tokens_per_s: float
    shared_steps: int = 0  # steps copied from a twin's gradient step (train_many)


def make_optimizer(sae: BaseSAE, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer `cfg.optimizer` names (see TrainConfig), on the fused path where it can."""
    opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    weight_decay = 0.0 if cfg.optimizer == "none" else cfg.weight_decay
    # The fused kernel does the whole update in one pass over each tensor: the same formula as
    # the default multi-tensor path, equal up to float rounding, and ~10x faster on CPU (a 2-4 %
    # faster training step; scripts/benchmark.py section 1).
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point()
                for p in sae.parameters())
    return opt_cls(sae.parameters(), lr=cfg.lr, betas=tuple(cfg.betas),
                   weight_decay=weight_decay, fused=fused or None)


def train_step(sae: BaseSAE, optimizer: torch.optim.Optimizer, x_BD: Tensor, step: int,
               total_steps: int, grad_clip: float | None = 1.0,
               generator: torch.Generator | None = None) -> tuple[StepOutput, list[dict]]:
    """One optimisation step (0-based `step`); no host syncs except inside rare mechanism events."""
    out = optimizer_step(sae, optimizer, x_BD, step, total_steps, grad_clip)
    return out, after_step(sae, optimizer, x_BD, step, out, generator)


def optimizer_step(sae: BaseSAE, optimizer: torch.optim.Optimizer, x_BD: Tensor, step: int,
                   total_steps: int, grad_clip: float | None = 1.0) -> StepOutput:
    """The gradient part of a step: loss, backward, decoder-gradient projection, clipping, the
    optimizer's update and the decoder renormalization."""
    out = sae.loss(x_BD, step, total_steps)
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    sae.remove_parallel_decoder_grad()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(sae.parameters(), grad_clip)
    optimizer.step()
    sae.normalize_decoder_()
    return out


def after_step(sae: BaseSAE, optimizer: torch.optim.Optimizer, x_BD: Tensor, step: int,
               out: StepOutput, generator: torch.Generator | None = None) -> list[dict]:
    """The bookkeeping part of a step: statistics and the SAE's mechanisms (`sae.after_step`);
    latents a mechanism re-initialised get their Adam moments reset."""
    events = sae.after_step(step, x_BD, out, generator)
    for event in events:
        reset_adam_state(optimizer, sae, torch.tensor(event["reset"], dtype=torch.long))
    return events


@torch.no_grad()
def step_metrics(sae: BaseSAE, x_BD: Tensor, out: StepOutput) -> dict[str, float]:
    """The logged numbers of one step (syncs: call on log steps only).

    ev: 1 - sum ||x - xhat||^2 / sum ||x - mean_batch(x)||^2 over the batch.
    dead: the architecture's own count (window-based for the HierarchicalSAE with window tracking);
    dead_tokens: not fired in the last `dead_after_tokens` tokens, for every architecture.
    """
    B = x_BD.shape[0]
    row = {
        "loss": out.loss.detach(),
        "l0": out.fired_F.sum() / B,
        "ev": 1 - out.sq_err_B.sum() / (x_BD - x_BD.mean(0)).pow(2).sum(),
        "dead": sae.dead_mask().sum(),
        "dead_tokens": sae.firing.dead_mask(sae.cfg.dead_after_tokens).sum(),
        **out.metrics,
    }
    if hasattr(sae, "threshold"):
        row["threshold"] = sae.threshold
    return {k: (v.item() if isinstance(v, Tensor) else v) for k, v in row.items()}


# ----------------------------------------------------------------------------- log file


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a training log. A process killed mid-append can leave the last line cut short;
    that line is dropped (a resumed run rewrites the log up to its checkpoint anyway)."""
    path = Path(path)
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:  # only the last line can be cut by a crash
                raise
    return rows


def _truncate_log(path: Path, last_step: int) -> None:
    """Keep the rows of steps <= last_step (the checkpoint), so a resumed run appends cleanly."""
    rows = [r for r in read_log(path) if r["step"] <= last_step]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _comparable(d: dict[str, Any]) -> Any:
    return json.loads(json.dumps(d, sort_keys=True, default=str))


# ----------------------------------------------------------------------------- train


def train(
    sae: BaseSAE,
    store: ActivationStore,
    cfg: TrainConfig,
    out_dir: str | Path,
    progress: bool = True,
    metadata: dict[str, Any] | None = None,
) -> TrainResult:
    """Train `sae` on `store` for `cfg.steps` steps; resume from out_dir/checkpoint.pt if present.

    If the store exposes a `normalizer` (hsae_utils.data.activations.ActivationStore does), its
    statistics are recorded in `sae.cfg.normalization` for export. `metadata` (profile name, ...)
    goes into the exported hsae_config.json and SAELens metadata. Raises NonFiniteLossError naming
    the first step whose loss was NaN/Inf; the checkpoint on disk then is the last good one.
    """
    return train_many([TrainJob(sae, cfg, out_dir, metadata)], store, progress=progress)[0]


@dataclass
class TrainJob:
    """One SAE of a shared pass (`train_many`): what `train` takes besides the store."""

    sae: BaseSAE
    cfg: TrainConfig
    out_dir: str | Path
    metadata: dict[str, Any] | None = None


def train_many(jobs: list[TrainJob], store: ActivationStore, progress: bool = True,
               share_trajectories: bool = True) -> list[TrainResult]:
    """Train several SAEs from one pass over the store: each batch is read and normalized once and
    fed to every SAE in turn. Each keeps its own optimizer, RNG, mechanisms, log, checkpoints and
    resume, so each ends bit-identical (CPU) to `train` on its own: the jobs must share the batch
    order (seed and batch_size) and the device; their step counts may differ. Jobs resume from
    their own checkpoints; the pass starts at the earliest one. An error (NaN loss, interruption)
    stops the pass; every job keeps its last checkpoint. TrainResult.seconds is the pass's time.

    `share_trajectories`: SAEs that differ only in mechanisms that act through rare events (the
    HierarchicalSAE's resampling, window tracking, clustering: `trajectory_neutral_fields`) take
    identical steps until one of them acts; such twins share one gradient step (see `pair_twins`)
    until then, and each still ends bit-identical to training it alone."""
    if not jobs:
        raise ValueError("train_many: no jobs given.")
    first = jobs[0].cfg
    for job in jobs[1:]:
        for key in ("seed", "batch_size", "device"):
            if getattr(job.cfg, key) != getattr(first, key):
                raise ValueError(
                    f"train_many: jobs read different batches ({key} {getattr(first, key)!r} vs "
                    f"{getattr(job.cfg, key)!r}); group jobs by seed, batch_size and device.")
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
                batches = store.iter_batches(first.batch_size, first.seed, start_step=start,
                                             device=torch.device(first.device))
            for step in range(start, end):
                x_BD = next(batches)
                # leaders as the step begins: a follower the step hands on to is done with it
                for run in [r for r in runs if r.leader is None]:
                    if run.start <= step < run.cfg.steps:
                        row = run.step(step, x_BD, t0)
                        if row is not None and len(runs) == 1:
                            bar.set_postfix(loss=f"{row['loss']:.4g}", l0=f"{row['l0']:.1f}")
                if share_trajectories and any(r.acted for r in runs
                                              if r.start <= step < r.cfg.steps):
                    pair_twins(runs)  # runs that acted alike (the same resample) are twins again
                bar.update(1)
        seconds = time.perf_counter() - t0
    finally:
        for run in runs:
            run.log.close()
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
    if any(_comparable(ca[k]) != _comparable(cb[k]) for k in ca if k not in neutral):
        return False
    if _comparable(a.cfg.to_dict()) != _comparable(b.cfg.to_dict()):
        return False
    pa, pb = list(a.sae.parameters()), list(b.sae.parameters())
    if not all(torch.equal(p, q) for p, q in zip(pa, pb)):
        return False
    sa, sb = (o.state_dict()["state"] for o in (a.optimizer, b.optimizer))
    return sa.keys() == sb.keys() and all(
        sa[i].keys() == sb[i].keys() and all(torch.equal(sa[i][k], sb[i][k]) for k in sa[i])
        for i in sa)


class _Run:
    """One SAE's state during a pass: set up (resume or fresh start), steps, export."""

    def __init__(self, job: TrainJob, store: ActivationStore):
        sae, cfg = job.sae, job.cfg
        self.sae, self.cfg, self.metadata = sae, cfg, job.metadata
        self.out_dir = out_dir = Path(job.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        _check_store_matches(store, sae, cfg)
        remove_stale_temporaries(out_dir)
        normalizer = getattr(store, "normalizer", None)
        if normalizer is not None:
            norm = normalizer.to_dict()
            sae.cfg.normalization = {"scale": norm["scale"], "center": norm["center"],
                                     "mean": norm["mean"]}

        device = torch.device(cfg.device)
        sae.to(device).train()
        if hasattr(sae, "decode_mode"):
            sae.decode_mode = cfg.decode
        self.optimizer = make_optimizer(sae, cfg)
        self.generator = torch.Generator(device=device).manual_seed(cfg.seed)
        self.ckpt_path, log_path = out_dir / CHECKPOINT_NAME, out_dir / LOG_NAME
        self.log_path = log_path

        self.start, self.resumed_from = 0, None
        if self.ckpt_path.exists():
            state = load_training_checkpoint(self.ckpt_path)
            _check_resumable(state, sae, cfg, self.ckpt_path)
            restore_training_state(state, sae, self.optimizer, self.generator)
            self.start = self.resumed_from = state["step"]
            _truncate_log(log_path, self.start)
        else:
            if cfg.init_weights:
                sae.reset_parameters(cfg.seed)
            log_path.unlink(missing_ok=True)
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)  # checked lazily
        self.last_ckpt = self.start if self.resumed_from is not None else None
        self.log = open(log_path, "a")
        # Sharing a gradient step with twins (train_many's `share_trajectories`).
        self.leader: _Run | None = None
        self.followers: list[_Run] = []
        self.shared_steps = 0  # steps whose gradient step was copied from a leader
        self.acted = False  # a mechanism event in the last step

    def step(self, step: int, x_BD: Tensor, t0: float) -> dict[str, Any] | None:
        """Train on batch `step` (and the followers' copies of it); returns the metrics row on
        log steps."""
        out = optimizer_step(self.sae, self.optimizer, x_BD, step, self.cfg.steps,
                             self.cfg.grad_clip)
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

    def bookkeep(self, step: int, x_BD: Tensor, out: StepOutput,
                 t0: float) -> tuple[dict[str, Any] | None, list[dict]]:
        """After the gradient step: mechanisms, NaN checks, log, checkpoint."""
        sae, cfg, ckpt_path = self.sae, self.cfg, self.ckpt_path
        events = after_step(sae, self.optimizer, x_BD, step, out, self.generator)
        self.acted = bool(events)
        self.first_bad = torch.where(torch.isfinite(out.loss) | (self.first_bad >= 0),
                                     self.first_bad, step)
        done, row = step + 1, None
        is_log = done % cfg.log_every == 0 or done == cfg.steps
        is_ckpt = done % cfg.checkpoint_every == 0 or done == cfg.steps
        if is_log or is_ckpt or events:
            _raise_if_bad(self.first_bad, ckpt_path, self.last_ckpt)
        for event in events:
            self.log.write(json.dumps({"kind": "event", **event}) + "\n")
        if is_log:
            row = {"kind": "metrics", "step": done, "tokens": done * cfg.batch_size,
                   **step_metrics(sae, x_BD, out),
                   "elapsed_s": round(time.perf_counter() - t0, 3)}
            self.log.write(json.dumps(row) + "\n")
        if is_log or events:
            self.log.flush()
        if is_ckpt:
            _raise_if_weights_bad(sae, done, ckpt_path, self.last_ckpt)
            save_training_checkpoint(ckpt_path, step=done, sae=sae, optimizer=self.optimizer,
                                     generator=self.generator, train_config=cfg.to_dict())
            self.last_ckpt = done
        return row, events

    def finish(self, seconds: float) -> TrainResult:
        n_new = self.cfg.steps - self.start
        self.sae.eval()
        save_sae(self.sae, self.out_dir, train_config=self.cfg, metadata=self.metadata)
        rows = read_log(self.log_path)
        return TrainResult(
            sae=self.sae, out_dir=self.out_dir, steps=self.cfg.steps,
            resumed_from=self.resumed_from,
            log=[r for r in rows if r["kind"] == "metrics"],
            events=[r for r in rows if r["kind"] == "event"],
            seconds=seconds,
            tokens_per_s=n_new * self.cfg.batch_size / seconds if n_new and seconds else 0.0,
            shared_steps=self.shared_steps,
        )


_NONFINITE_FIX = ("Check the activation cache for NaN/Inf (rebuild it: notebook 01 with "
                  "rebuild_cache=True) or lower `lr`, then delete the checkpoint to start over "
                  "(resuming replays the same batches).")


def _kept(ckpt_path: Path, last_ckpt: int | None) -> str:
    return (f"the last good checkpoint ({ckpt_path}, step {last_ckpt}) is kept"
            if last_ckpt is not None else "no checkpoint had been written yet")


def _raise_if_bad(first_bad: Tensor, ckpt_path: Path, last_ckpt: int | None) -> None:
    bad = int(first_bad)
    if bad >= 0:
        raise NonFiniteLossError(
            f"Non-finite loss at step {bad + 1} (batch index {bad}); training stopped and "
            f"{_kept(ckpt_path, last_ckpt)}. {_NONFINITE_FIX}"
        )


def _raise_if_weights_bad(sae: BaseSAE, step: int, ckpt_path: Path, last_ckpt: int | None) -> None:
    """A finite loss can be followed by an overflowing update: such weights are never saved."""
    if not all(bool(torch.isfinite(p).all()) for p in sae.parameters()):
        raise NonFiniteLossError(
            f"Non-finite weights after step {step}; training stopped and "
            f"{_kept(ckpt_path, last_ckpt)}. {_NONFINITE_FIX}"
        )


def _check_store_matches(store: ActivationStore, sae: BaseSAE, cfg: TrainConfig) -> None:
    """Refuse activations of another width, hook or model before any step is taken."""
    if store.d_model != sae.cfg.d_in:
        raise ValueError(f"store.d_model = {store.d_model} but the SAE has d_in = {sae.cfg.d_in}: "
                         "build the SAE config from the same profile as the cache.")
    manifest = getattr(store, "manifest", {})
    for key, mine in (("hook", sae.cfg.hook_name), ("model", sae.cfg.model_name)):
        if mine and manifest.get(key) not in (None, mine):
            raise ValueError(
                f"The activation cache has {key} {manifest[key]!r} but the SAE is for {mine!r}: "
                "re-run notebook 01 for this profile (rebuild_cache=True) or pass the matching "
                "profile."
            )
    if cfg.batch_size > store.n_tokens:
        raise ValueError(f"batch_size {cfg.batch_size} exceeds the cache's {store.n_tokens} "
                         "tokens: cache more tokens or pass a smaller batch_size.")


def _check_resumable(state: dict, sae: BaseSAE, cfg: TrainConfig, path: Path) -> None:
    saved, now = state["train_config"], cfg.to_dict()
    diffs = [] if state["architecture"] == type(sae).__name__ else [
        f"architecture: checkpoint {state['architecture']}, now {type(sae).__name__}"]
    diffs += [f"{k}: checkpoint {saved.get(k)!r}, now {now[k]!r}" for k in _RESULT_FIELDS
             if _comparable(saved.get(k)) != _comparable(now[k])]
    if _comparable(state["sae_config"]) != _comparable(sae.cfg.to_dict()):
        diffs.append("the SAE config differs")
    if diffs:
        raise ValueError(
            f"Cannot resume from {path}: " + "; ".join(diffs)
            + ". Delete the checkpoint (or use another out_dir) to start over."
        )
