"""One trainer for every SAE architecture: `train(sae, store, cfg, out_dir)`, one plain loop.

Step t (0-based) is: batch t -> loss -> backward -> project out the decoder gradient parallel to
its rows -> clip the gradient norm -> optimizer step -> renormalize decoder rows (`optimizer_step`)
-> `sae.after_step` (statistics and, for the HierarchicalSAE, resampling / merging, whose latents
get their Adam moments reset) -> log / checkpoint (`RunFiles`); at the end, the export.

Logs and events say `step` = completed steps (t + 1). The run folder `out_dir` gets
    train_log.jsonl   one JSON object per line: "kind": "metrics" every `log_every` steps, or
                      "kind": "event" (resample / merge) when one happens
    checkpoint.pt     the latest checkpoint (atomic), every `checkpoint_every` steps and at the end
    + the exported SAE (cfg.json, sae_weights.safetensors, ... see hsae_utils.method.checkpoint)
Calling `train` again with the same configs resumes from checkpoint.pt and reaches bit-identical
weights on CPU (same data batches via the store's `start_step`, same optimizer / RNG / mechanism
state). Training several SAEs from one pass over the store, each exactly as `train` would:
`hsae_utils.method.train_many`.
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

from hsae_utils.io import atomic_path, remove_stale_temporaries
from hsae_utils.method.checkpoint import (
    LOG_NAME,
    TRAINER_CHANGES,
    TRAINER_REVISION,
    load_training_checkpoint,
    restore_training_state,
    save_sae,
    save_training_checkpoint,
    trainer_revision_of,
)
from hsae_utils.method.mechanisms import reset_adam_state
from hsae_utils.method.saes import BaseSAE, StepOutput
from hsae_utils.method.saes.sparse_decode import DECODE_MODES

CHECKPOINT_NAME = "checkpoint.pt"
# Readings of the paper's "Adam with weight decay 0.01" (TrainConfig.optimizer).
OPTIMIZER_READINGS = ("adamw", "adam_l2", "none")
# TrainConfig fields that change the result: a checkpoint is only resumed if they match.
_RESULT_FIELDS = (
    "steps",
    "batch_size",
    "lr",
    "betas",
    "weight_decay",
    "optimizer",
    "grad_clip",
    "seed",
    "init_weights",
)


class BatchSource(Protocol):
    """What `train` reads batches from: hsae_utils.data.activations.ActivationStore (the cache on
    disk) or any object with these members (tests and the ground-truth experiment use tensors).
    `iter_batches` must be deterministic in (batch_size, seed): batch `start_step` onward is what a
    fresh iterator yields there, so a resumed run reads the same data."""

    d_model: int
    n_tokens: int

    def iter_batches(
        self, batch_size: int, seed: int, start_step: int = 0, device: str | torch.device = "cpu"
    ) -> Iterator[Tensor]: ...

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
        bad = [
            f"{k}={getattr(self, k)!r}"
            for k in ("steps", "batch_size", "lr", "log_every", "checkpoint_every")
            if getattr(self, k) <= 0
        ]
        if self.optimizer not in OPTIMIZER_READINGS:
            raise ValueError(
                f"TrainConfig: optimizer must be one of {OPTIMIZER_READINGS}, got "
                f"{self.optimizer!r} ('adam' is now 'adam_l2')."
            )
        if self.grad_clip is not None and self.grad_clip <= 0:
            bad.append(f"grad_clip={self.grad_clip!r} (None disables clipping)")
        if bad:
            raise ValueError(f"TrainConfig: {', '.join(bad)} must be positive.")
        if self.decode not in DECODE_MODES:
            raise ValueError(
                f"TrainConfig: decode must be one of {DECODE_MODES}, got {self.decode!r}."
            )

    @classmethod
    def from_profile(cls, profile, seed: int, **overrides: Any) -> "TrainConfig":
        kw = dict(
            steps=profile.train_steps,
            batch_size=profile.train_batch_size,
            seed=seed,
            log_every=profile.log_every,
            checkpoint_every=profile.checkpoint_every,
            device=profile.resolve_device(),
        )
        return cls(**{**kw, **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrainResult:
    """A training run's outcome, as `train` / `train_many` return it and, per (run, seed),
    `hsae_utils.experiment.paper_runs.train_runs` (which also reuses finished runs)."""

    folder: Path  # the run folder: the export, train_log.jsonl, checkpoint.pt
    log: list[dict[str, Any]]  # metric rows of the whole run (earlier segments included)
    events: list[dict[str, Any]]  # resample / merge events of the whole run
    steps: int  # the run's length, TrainConfig.steps
    trained_steps: int = 0  # steps this call trained (0: the run was finished before)
    resumed_from: int | None = None  # the checkpoint step this call started from (None: fresh)
    seconds: float | None = None  # wall time of this call's steps (a shared pass's); None: reused
    tokens_per_s: float = 0.0
    shared_steps: int = 0  # steps copied from a twin's gradient step (train_many)
    sae: BaseSAE | None = None  # trained, in eval mode; None when not kept (`load_sae(folder)`)
    name: str = ""  # the run's name (paper runs: the registry's; else the folder's)
    seed: int | None = None

    @property
    def out_dir(self) -> Path:
        """The run folder under its older name (`folder`)."""
        return self.folder


def make_optimizer(sae: BaseSAE, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer `cfg.optimizer` names (see TrainConfig), on the fused path where it can."""
    opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    weight_decay = 0.0 if cfg.optimizer == "none" else cfg.weight_decay
    # The fused kernel does the whole update in one pass over each tensor: the same formula as
    # the default multi-tensor path, equal up to float rounding, and ~10x faster on CPU (a 2-4 %
    # faster training step; scripts/benchmark.py section 1).
    fused = all(
        p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in sae.parameters()
    )
    return opt_cls(
        sae.parameters(),
        lr=cfg.lr,
        betas=tuple(cfg.betas),
        weight_decay=weight_decay,
        fused=fused or None,
    )


def train_step(
    sae: BaseSAE,
    optimizer: torch.optim.Optimizer,
    x_BD: Tensor,
    step: int,
    total_steps: int,
    grad_clip: float | None = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[StepOutput, list[dict]]:
    """One whole step as `train` takes it (0-based `step`); no host syncs except inside rare
    mechanism events (and, on CPU only, where a sync costs nothing)."""
    out = optimizer_step(sae, optimizer, x_BD, step, total_steps, grad_clip)
    return out, after_step(sae, optimizer, x_BD, step, out, generator, total_steps)


def optimizer_step(
    sae: BaseSAE,
    optimizer: torch.optim.Optimizer,
    x_BD: Tensor,
    step: int,
    total_steps: int,
    grad_clip: float | None = 1.0,
) -> StepOutput:
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


def after_step(
    sae: BaseSAE,
    optimizer: torch.optim.Optimizer,
    x_BD: Tensor,
    step: int,
    out: StepOutput,
    generator: torch.Generator | None = None,
    total_steps: int | None = None,
) -> list[dict]:
    """The bookkeeping part of a step: statistics and the SAE's mechanisms (`sae.after_step`);
    latents a mechanism re-initialised get their Adam moments reset."""
    events = sae.after_step(step, x_BD, out, generator, total_steps)
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


def comparable(d: Any) -> Any:
    """A config value as JSON would round-trip it (tuples as lists, ...), for equality checks."""
    return json.loads(json.dumps(d, sort_keys=True, default=str))


# ----------------------------------------------------------------------------- train


def train(
    sae: BaseSAE,
    store: BatchSource,
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
    out_dir = Path(out_dir)
    # The SAE on its device with its optimizer and RNG: restored from checkpoint.pt, or fresh.
    optimizer, generator, resumed_from = setup_run(sae, store, cfg, out_dir)
    start = resumed_from or 0
    files = RunFiles(out_dir, cfg, sae, optimizer, generator, resumed_from)
    batches = (
        store.iter_batches(
            cfg.batch_size, cfg.seed, start_step=start, device=torch.device(cfg.device)
        )
        if start < cfg.steps
        else iter(())
    )
    t0 = time.perf_counter()
    bar = tqdm(
        total=cfg.steps, initial=start, disable=not progress, unit="step", desc=type(sae).__name__
    )
    try:
        for step in range(start, cfg.steps):
            x_BD = next(batches)
            # loss -> backward -> decoder-gradient projection -> clip -> step -> renormalize
            out = optimizer_step(sae, optimizer, x_BD, step, cfg.steps, cfg.grad_clip)
            # statistics and mechanisms (resample / merge); reset latents' Adam moments are zeroed
            events = after_step(sae, optimizer, x_BD, step, out, generator, cfg.steps)
            # NaN check (lazy: no sync on other steps), events, metrics and checkpoint
            row = files.record(step, x_BD, out, events, t0)
            if row is not None:
                bar.set_postfix(loss=f"{row['loss']:.4g}", l0=f"{row['l0']:.1f}")
            bar.update(1)
    finally:
        bar.close()
        files.close()
    return finish_run(sae, cfg, out_dir, metadata, resumed_from, time.perf_counter() - t0)


def setup_run(
    sae: BaseSAE, store: BatchSource, cfg: TrainConfig, out_dir: Path
) -> tuple[torch.optim.Optimizer, torch.Generator, int | None]:
    """Check the store against the SAE, put the SAE on `cfg.device` in training mode, make its
    optimizer and RNG, and restore them from out_dir/checkpoint.pt (the log is cut back to it) or
    start fresh (weights re-initialised from `cfg.seed` if `cfg.init_weights`, no log). Returns
    (optimizer, generator, the checkpoint's step or None)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_store_matches(store, sae, cfg)
    remove_stale_temporaries(out_dir)
    normalizer = getattr(store, "normalizer", None)
    if normalizer is not None:
        norm = normalizer.to_dict()
        sae.cfg.normalization = {
            "scale": norm["scale"],
            "center": norm["center"],
            "mean": norm["mean"],
        }
    device = torch.device(cfg.device)
    sae.to(device).train()
    if hasattr(sae, "decode_mode"):
        sae.decode_mode = cfg.decode
    optimizer = make_optimizer(sae, cfg)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    ckpt_path, log_path = out_dir / CHECKPOINT_NAME, out_dir / LOG_NAME
    if ckpt_path.exists():
        state = load_training_checkpoint(ckpt_path)
        _check_resumable(state, sae, cfg, ckpt_path)
        restore_training_state(state, sae, optimizer, generator, seed=cfg.seed)
        _truncate_log(log_path, state["step"])
        return optimizer, generator, state["step"]
    if cfg.init_weights:
        sae.reset_parameters(cfg.seed)
    log_path.unlink(missing_ok=True)
    return optimizer, generator, None


class RunFiles:
    """A run's files while it trains: train_log.jsonl (appended: events as they happen, metrics
    every `log_every` steps) and checkpoint.pt (every `checkpoint_every` steps and at the end).
    The first non-finite loss is tracked on the device and checked only on steps that log,
    checkpoint or act, so other steps never wait for the device."""

    def __init__(
        self,
        out_dir: Path,
        cfg: TrainConfig,
        sae: BaseSAE,
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
        resumed_from: int | None,
    ):
        self.cfg, self.sae, self.optimizer, self.generator = cfg, sae, optimizer, generator
        self.ckpt_path, self.log_path = out_dir / CHECKPOINT_NAME, out_dir / LOG_NAME
        self.last_ckpt = resumed_from  # the step of the checkpoint on disk (None: none yet)
        self.first_bad = torch.full((), -1, dtype=torch.long, device=torch.device(cfg.device))
        self.log = open(self.log_path, "a")

    def record(
        self, step: int, x_BD: Tensor, out: StepOutput, events: list[dict], t0: float
    ) -> dict[str, Any] | None:
        """After step `step` (0-based): NaN check, events, metrics row, checkpoint. Returns the
        metrics row on log steps."""
        cfg, done, row = self.cfg, step + 1, None
        self.first_bad = torch.where(
            torch.isfinite(out.loss) | (self.first_bad >= 0), self.first_bad, step
        )
        is_log = done % cfg.log_every == 0 or done == cfg.steps
        is_ckpt = done % cfg.checkpoint_every == 0 or done == cfg.steps
        if is_log or is_ckpt or events:
            _raise_if_bad(self.first_bad, self.ckpt_path, self.last_ckpt)
        for event in events:
            self.log.write(json.dumps({"kind": "event", **event}) + "\n")
        if is_log:
            row = {
                "kind": "metrics",
                "step": done,
                "tokens": done * cfg.batch_size,
                **step_metrics(self.sae, x_BD, out),
                "elapsed_s": round(time.perf_counter() - t0, 3),
            }
            self.log.write(json.dumps(row) + "\n")
        if is_log or events:
            self.log.flush()
        if is_ckpt:
            _raise_if_weights_bad(self.sae, done, self.ckpt_path, self.last_ckpt)
            save_training_checkpoint(
                self.ckpt_path,
                step=done,
                sae=self.sae,
                optimizer=self.optimizer,
                generator=self.generator,
                train_config=cfg.to_dict(),
            )
            self.last_ckpt = done
        return row

    def close(self) -> None:
        self.log.close()


def finish_run(
    sae: BaseSAE,
    cfg: TrainConfig,
    out_dir: Path,
    metadata: dict[str, Any] | None,
    resumed_from: int | None,
    seconds: float,
    shared_steps: int = 0,
) -> TrainResult:
    """Export the trained SAE (eval mode) next to its log and return the run's TrainResult."""
    n_new = cfg.steps - (resumed_from or 0)
    sae.eval()
    save_sae(sae, out_dir, train_config=cfg, metadata=metadata)
    rows = read_log(out_dir / LOG_NAME)
    return TrainResult(
        folder=out_dir,
        steps=cfg.steps,
        trained_steps=n_new,
        resumed_from=resumed_from,
        log=[r for r in rows if r["kind"] == "metrics"],
        events=[r for r in rows if r["kind"] == "event"],
        seconds=seconds,
        tokens_per_s=n_new * cfg.batch_size / seconds if n_new and seconds else 0.0,
        shared_steps=shared_steps,
        sae=sae,
        name=(metadata or {}).get("run", out_dir.name),
        seed=cfg.seed,
    )


_NONFINITE_FIX = (
    "Check the activation cache for NaN/Inf (rebuild it: notebook 01 with "
    "rebuild_cache=True) or lower `lr`, then delete the checkpoint to start over "
    "(resuming replays the same batches)."
)


def _kept(ckpt_path: Path, last_ckpt: int | None) -> str:
    return (
        f"the last good checkpoint ({ckpt_path}, step {last_ckpt}) is kept"
        if last_ckpt is not None
        else "no checkpoint had been written yet"
    )


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


def _check_store_matches(store: BatchSource, sae: BaseSAE, cfg: TrainConfig) -> None:
    """Refuse activations of another width, hook or model before any step is taken."""
    if store.d_model != sae.cfg.d_in:
        raise ValueError(
            f"store.d_model = {store.d_model} but the SAE has d_in = {sae.cfg.d_in}: "
            "build the SAE config from the same profile as the cache."
        )
    manifest = getattr(store, "manifest", {})
    for key, mine in (("hook", sae.cfg.hook_name), ("model", sae.cfg.model_name)):
        if mine and manifest.get(key) not in (None, mine):
            raise ValueError(
                f"The activation cache has {key} {manifest[key]!r} but the SAE is for {mine!r}: "
                "re-run notebook 01 for this profile (rebuild_cache=True) or pass the matching "
                "profile."
            )
    if cfg.batch_size > store.n_tokens:
        raise ValueError(
            f"batch_size {cfg.batch_size} exceeds the cache's {store.n_tokens} "
            "tokens: cache more tokens or pass a smaller batch_size."
        )


def _check_resumable(state: dict, sae: BaseSAE, cfg: TrainConfig, path: Path) -> None:
    saved, now = state["train_config"], cfg.to_dict()
    diffs = (
        []
        if state["architecture"] == type(sae).__name__
        else [f"architecture: checkpoint {state['architecture']}, now {type(sae).__name__}"]
    )
    diffs += [
        f"{k}: checkpoint {saved.get(k)!r}, now {now[k]!r}"
        for k in _RESULT_FIELDS
        if comparable(saved.get(k)) != comparable(now[k])
    ]
    if comparable(state["sae_config"]) != comparable(sae.cfg.to_dict()):
        diffs.append("the SAE config differs")
    if trainer_revision_of(state) != TRAINER_REVISION:  # the trainer changed what a run ends with
        diffs.append(
            f"trainer revision: checkpoint {trainer_revision_of(state)}, now {TRAINER_REVISION} "
            f"({TRAINER_CHANGES[TRAINER_REVISION]})"
        )
    if diffs:
        raise ValueError(
            f"Cannot resume from {path}: "
            + "; ".join(diffs)
            + ". Delete the checkpoint (or use another out_dir) to start over."
        )
