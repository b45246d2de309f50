"""Saving and loading SAEs (SAELens folder layout) and training checkpoints.

An exported SAE folder holds
    cfg.json                   SAELens 6.x config (`sae_lens.SAE.load_from_disk(folder)` works)
    sae_weights.safetensors    SAELens weights with the input normalization folded in, so the
                               SAELens SAE takes raw activations; the scale goes into the latent
                               magnitudes (latents z / s, in raw units) and the decoder rows stay
                               unit-norm, as SAEBench and SAELens assume (see `folded_weights`)
    sparsity.safetensors       log10 firing frequency per latent (SAELens "sparsity")
    hsae_weights.safetensors   our module's full state (normalized space, buffers included)
    hsae_config.json           our class name and config, normalization, training config,
                               metadata and the sha256 of every file above; written last, so
                               its presence marks a complete export
`load_sae` reads our two files, so it round-trips exactly (un-folding would round); it first
verifies the whole folder (`verify_export`) and rebuilds damaged SAELens files from our weights
(`repair_export`), so a folder a user shares is never left broken.

Architectures: ReLUSAE and HierarchicalSAE export as SAELens "standard", TopKSAE as "topk"
(rescale_acts_by_decoder_norm False: our decoder rows are unit-norm already), BatchTopKSAE as
"jumprelu" with its global threshold copied to every latent (as SAELens' own BatchTopK export).
Every file is written atomically.
"""

from __future__ import annotations

import dataclasses
import shutil
import warnings
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from hsae_utils.io import atomic_path, read_json, sha256_file, write_json_atomic
from hsae_utils.method.saes import SAE_CLASSES, BaseSAE

SAE_LENS_CFG = "cfg.json"
SAE_LENS_WEIGHTS = "sae_weights.safetensors"
SAE_LENS_SPARSITY = "sparsity.safetensors"
HSAE_CONFIG = "hsae_config.json"
HSAE_WEIGHTS = "hsae_weights.safetensors"
LOG_NAME = "train_log.jsonl"
EXPORT_FORMAT = 1
# The trainer's revision, recorded in every export and training checkpoint. Bump it (and say why
# in TRAINER_CHANGES) when a change to the trainer alters what a run of the same configuration
# ends with: finished runs of another revision are then retrained, not reused (`is_finished`),
# their folders set aside, never deleted (`set_aside_stale`). Records without it are revision 1.
TRAINER_REVISION = 2
TRAINER_CHANGES = {
    1: "the trainer before revisions were recorded",
    2: "no resample or merge after the last step (a latent re-initialised at t = T was exported "
    "untrained)",
}
_CHECKPOINT = "checkpoint.pt"  # train.CHECKPOINT_NAME (train imports this module, not the reverse)
# The exported files whose sha256 hsae_config.json records (the log is append-only, not checked).
EXPORT_FILES = (SAE_LENS_CFG, SAE_LENS_WEIGHTS, SAE_LENS_SPARSITY, HSAE_WEIGHTS)
_RETRAIN = (
    "Retrain it: delete the folder (or run the notebook with force_retrain=True); "
    "an interrupted training run resumes from its checkpoint.pt."
)


class CheckpointError(RuntimeError):
    """A checkpoint or exported SAE on disk that cannot be read; the message says what to do."""


def _unreadable(path: Path, err: Exception, fix: str) -> CheckpointError:
    return CheckpointError(f"{path} is truncated or corrupted ({type(err).__name__}: {err}). {fix}")


def _sae_lens_version() -> str:
    try:
        return importlib_metadata.version("sae-lens")
    except importlib_metadata.PackageNotFoundError:  # any 6.x marks the config as 6.x-format
        return "6.0.0"


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    with atomic_path(path, nbytes=_tensor_bytes(tensors)) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))


def _tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors in a (nested) dict or list: a file's size, give or take its header."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


# ----------------------------------------------------------------------------- SAELens export


@torch.no_grad()
def folded_weights(sae: BaseSAE) -> dict[str, torch.Tensor]:
    """SAELens weights acting on raw activations x, with x_norm = (x - mean if center) * s.

    The scale is folded into the latents, z_raw = z / s, so that the decoder keeps unit-norm rows
    (SAEBench's `check_decoder_norms` and its absorption calculator assume them):
        pre / s = (x - mean) W_enc + b_enc / s    -> W_enc' = W_enc, b_enc' = b_enc / s - mean W_enc
        x = xhat_norm / s + mean = (z / s) W_dec + b_dec / s + mean
                                                  -> W_dec' = W_dec, b_dec' = b_dec / s + mean
    Every activation here (ReLU, TopK, BatchTopK's JumpReLU) commutes with a positive scale, so
    z' = act(pre / s) = z / s, with the JumpReLU threshold theta' = theta / s. Reconstructions are
    unchanged. Computed in float64, stored in float32.
    """
    norm = sae.cfg.normalization
    s = float(norm.get("scale", 1.0))
    W_enc, b_enc = sae.W_enc.double(), sae.b_enc.double()
    W_dec, b_dec = sae.W_dec.double(), sae.b_dec.double()
    out = {"W_enc": W_enc, "b_enc": b_enc / s, "W_dec": W_dec, "b_dec": b_dec / s}
    if norm.get("center") and norm.get("mean") is not None:
        mean_D = torch.tensor(norm["mean"], dtype=torch.float64, device=W_enc.device)
        out["b_enc"] = out["b_enc"] - mean_D @ W_enc
        out["b_dec"] = out["b_dec"] + mean_D
    if sae.sae_lens_architecture == "jumprelu":
        out["threshold"] = (sae.threshold.double() / s).expand(sae.cfg.d_sae)
    return {k: v.float() for k, v in out.items()}


def sae_lens_config(sae: BaseSAE, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    cfg = sae.cfg
    d: dict[str, Any] = {
        "architecture": sae.sae_lens_architecture,
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": False,  # Eq. 1 encodes x, not x - b_dec
        "normalize_activations": "none",  # folded into the weights
        "reshape_activations": "none",
        "hook_name": cfg.hook_name,  # also top level, for tools that read it there
        "model_name": cfg.model_name,
        "metadata": {
            "sae_lens_version": _sae_lens_version(),
            "sae_lens_training_version": None,
            "model_name": cfg.model_name,
            "hook_name": cfg.hook_name,
            "hook_head_index": None,
            "trained_with": f"hsae_utils.{type(sae).__name__}",
            **(metadata or {}),
        },
    }
    if sae.sae_lens_architecture == "topk":
        d.update(k=cfg.k, rescale_acts_by_decoder_norm=False)
    return d


def save_sae(
    sae: BaseSAE,
    folder: str | Path,
    train_config: Any = None,
    metadata: dict[str, Any] | None = None,
    log_path: str | Path | None = None,
    trainer_revision: int | None = TRAINER_REVISION,
) -> Path:
    """Export `sae` to `folder` (see the module docstring). `train_config`: a dataclass or dict;
    `metadata`: free-form (profile name, seed, ...), also copied into SAELens' metadata;
    `log_path`: a training log copied into the folder unless it is already there;
    `trainer_revision`: the trainer that trained it (None: not recorded, i.e. revision 1)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if dataclasses.is_dataclass(train_config):
        train_config = dataclasses.asdict(train_config)

    _save_tensors(folder / SAE_LENS_WEIGHTS, folded_weights(sae))
    write_json_atomic(folder / SAE_LENS_CFG, sae_lens_config(sae, metadata))
    counter = sae.firing
    if bool((counter.tokens_seen_F > 0).any()):
        _save_tensors(
            folder / SAE_LENS_SPARSITY,
            {"sparsity": torch.log10(counter.frequency().double() + 1e-10).float()},
        )
    _save_tensors(folder / HSAE_WEIGHTS, sae.state_dict())
    if log_path is not None and Path(log_path).resolve() != (folder / LOG_NAME).resolve():
        with atomic_path(folder / LOG_NAME) as tmp:
            shutil.copyfile(log_path, tmp)
    write_json_atomic(
        folder / HSAE_CONFIG,
        {
            "format": EXPORT_FORMAT,
            **({} if trainer_revision is None else {"trainer_revision": trainer_revision}),
            "architecture": type(sae).__name__,
            "config": sae.cfg.to_dict(),
            "normalization": sae.cfg.normalization,
            "sae_lens_architecture": sae.sae_lens_architecture,
            "train": train_config,
            "metadata": metadata or {},
            "files": {
                name: sha256_file(folder / name)
                for name in EXPORT_FILES
                if (folder / name).exists()
            },
        },
    )
    return folder


def load_sae(folder: str | Path, device: str | torch.device = "cpu") -> BaseSAE:
    """Our SAE class from an exported folder, normalized-space weights, in eval mode. The whole
    folder is verified first; damaged SAELens files are rebuilt from our weights."""
    folder = Path(folder)
    problems = repair_export(folder) if (folder / HSAE_CONFIG).exists() else []
    if problems:
        raise CheckpointError(f"{folder}: {'; '.join(problems)}. {_RETRAIN}")
    return _load_ours(folder, device)


def _load_ours(folder: Path, device: str | torch.device = "cpu") -> BaseSAE:
    if not (folder / HSAE_CONFIG).exists():
        raise FileNotFoundError(
            f"No {HSAE_CONFIG} in {folder}: not a complete export from hsae_utils.method.checkpoint."
        )
    try:
        info = read_json(folder / HSAE_CONFIG)
        cls = SAE_CLASSES[info["architecture"]]
        sae = cls(cls.config_class.from_dict(info["config"]))
        sae.load_state_dict(load_file(folder / HSAE_WEIGHTS))
    except Exception as err:  # json, safetensors and torch each raise their own types
        raise _unreadable(folder, err, _RETRAIN) from err
    return sae.to(device).eval()


def _export_problems(folder: Path) -> dict[str, str]:
    """{file name: what is wrong} for an exported folder (see `verify_export`)."""
    try:
        info = read_json(folder / HSAE_CONFIG)
    except (OSError, ValueError) as err:
        return {
            HSAE_CONFIG: f"{folder / HSAE_CONFIG} is missing or unreadable ({type(err).__name__})"
        }
    recorded = info.get("files")
    problems = {}
    for name in EXPORT_FILES:
        path = folder / name
        if recorded is not None and name not in recorded:
            continue  # e.g. no sparsity file for an SAE that never saw a token
        if not path.is_file():
            if recorded is not None or name != SAE_LENS_SPARSITY:
                problems[name] = f"{path} is missing"
        elif recorded is not None:
            if sha256_file(path) != recorded[name]:
                problems[name] = f"{path} fails its checksum (truncated or corrupted)"
        else:  # an export from before the checksums: each file must at least parse
            try:
                read_json(path) if name.endswith(".json") else load_file(path)
            except Exception as err:  # json and safetensors raise their own types
                problems[name] = f"{path} is truncated or corrupted ({type(err).__name__})"
    return problems


def verify_export(folder: str | Path) -> list[str]:
    """What is missing or damaged in an exported folder, ours and SAELens' files alike: each file
    against the sha256 recorded at export (older exports: each file must parse)."""
    return list(_export_problems(Path(folder)).values())


def repair_export(folder: str | Path) -> list[str]:
    """Verify `folder` and rebuild damaged or missing SAELens files from our own weights (which
    are exact). Returns the problems left: our own files damaged, so the run must be retrained."""
    folder = Path(folder)
    problems = _export_problems(folder)
    if not problems or HSAE_CONFIG in problems or HSAE_WEIGHTS in problems:
        return list(problems.values())
    info = read_json(folder / HSAE_CONFIG)
    sae = _load_ours(folder)
    print(
        f"Note: rebuilding the SAELens files of {folder} from its own weights "
        f"({'; '.join(problems.values())})."
    )
    save_sae(  # the same export again: its trainer revision is kept, not upgraded
        sae,
        folder,
        train_config=info.get("train"),
        metadata=info.get("metadata"),
        trainer_revision=info.get("trainer_revision"),
    )
    return verify_export(folder)


def read_export_info(folder: str | Path) -> dict[str, Any]:
    return read_json(Path(folder) / HSAE_CONFIG)


def trainer_revision_of(record: dict[str, Any]) -> int:
    """The trainer revision of an export's hsae_config.json or a training checkpoint (1: written
    before revisions were recorded)."""
    return int(record.get("trainer_revision", 1))


def stale_revision(folder: str | Path) -> int | None:
    """The trainer revision of the run in `folder` when it is not TRAINER_REVISION, else None.
    Read from the export (a json read); a folder with no export, only a checkpoint (an
    interrupted run), from the checkpoint. None too when there is nothing readable: no run
    to set aside, and the reader of a damaged file says what to do."""
    folder = Path(folder)
    try:
        if (folder / HSAE_CONFIG).is_file():
            revision = trainer_revision_of(read_export_info(folder))
        elif (folder / _CHECKPOINT).is_file():
            revision = trainer_revision_of(load_training_checkpoint(folder / _CHECKPOINT))
        else:
            return None
    except (OSError, ValueError, CheckpointError):
        return None
    return None if revision == TRAINER_REVISION else revision


def set_aside_stale(folder: str | Path, root: str | Path | None = None) -> Path | None:
    """Move a run of another trainer revision out of the way, so that it is retrained rather
    than reused or resumed; it is never deleted. Under `root` (a folder that others walk for
    exports, e.g. `saes/`) it goes to the same relative path under `<root>.rev<N>/`, beside
    `root` and not in it; with no root, to `<folder>.rev<N>`. Returns where it went (None: the
    folder holds no run of another revision)."""
    folder = Path(folder)
    revision = stale_revision(folder)
    if revision is None:
        return None
    base = Path(root) if root is not None else folder
    target = base.with_name(f"{base.name}.rev{revision}") / folder.relative_to(base)
    n = 1
    while target.exists():  # set aside before: keep both
        n += 1
        target = target.with_name(f"{target.name.split('~')[0]}~{n}")
    target.parent.mkdir(parents=True, exist_ok=True)
    folder.rename(target)
    print(
        f"{folder}: trained by trainer revision {revision}, this code is revision "
        f"{TRAINER_REVISION} ({TRAINER_CHANGES[TRAINER_REVISION]}): not reused; "
        f"moved to {target}, retraining."
    )
    return target


# ----------------------------------------------------------------------------- training state


def save_training_checkpoint(
    path: str | Path,
    *,
    step: int,
    sae: BaseSAE,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    train_config: dict[str, Any],
) -> None:
    """Everything needed to continue bit-identically after `step` completed steps."""
    state = {
        "format": EXPORT_FORMAT,
        "trainer_revision": TRAINER_REVISION,
        "step": step,
        "architecture": type(sae).__name__,
        "sae_config": sae.cfg.to_dict(),
        "train_config": train_config,
        "model": sae.state_dict(),  # parameters + mechanism buffers (counters, window, threshold)
        "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(),
        "generator_device": generator.device.type,  # a CPU and a CUDA state differ in format
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    with atomic_path(path, nbytes=_tensor_bytes(state)) as tmp:  # + a few KB of structure
        torch.save(state, tmp)


def load_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint: its "step", configs and states (see `restore_training_state`).

    Raises CheckpointError (left untouched on disk) when the file cannot be read."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or state.get("format") != EXPORT_FORMAT:
            raise ValueError("not a training checkpoint of this format")
    except Exception as err:  # a truncated zip, a bad pickle, ...: torch raises several types
        fix = "Delete it to restart this run from step 0, or restore it from a copy."
        raise _unreadable(Path(path), err, fix) from err
    return state


def restore_training_state(
    state: dict[str, Any],
    sae: BaseSAE,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    seed: int = 0,
) -> None:
    """Load a checkpoint's states into fresh objects (as in a new process), on their devices: the
    tensors are moved to the SAE's device (the optimizer's state follows its parameters); the
    mechanisms' generator is restored exactly when the checkpoint was written on the same kind of
    device, else re-seeded (`restore_generator`; `seed`: the run's seed)."""
    if state["architecture"] != type(sae).__name__:
        raise ValueError(
            f"The checkpoint is for {state['architecture']}, not {type(sae).__name__}."
        )
    sae.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    restore_generator(
        generator, state["generator"], state.get("generator_device"), seed, state["step"]
    )
    torch.set_rng_state(state["torch_rng"])
    cuda_states = state["cuda_rng"]
    if cuda_states and torch.cuda.is_available():  # as many GPUs as both machines have
        for i, cuda_state in enumerate(cuda_states[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, i)


# The byte length of a CPU generator's state (the Mersenne Twister's); a CUDA one (Philox seed
# and offset) is 16 bytes. Tells the two apart in checkpoints older than "generator_device".
_CPU_GENERATOR_STATE_BYTES = 5056


def restore_generator(
    generator: torch.Generator,
    saved_state: torch.Tensor,
    saved_device: str | None,
    seed: int,
    step: int,
) -> bool:
    """Restore the mechanisms' generator from a checkpoint; True when exactly.

    A CPU generator's state (Mersenne Twister) and a CUDA one's (Philox seed and offset) have
    different formats, and `set_state` with the other one fails: a run checkpointed on one kind of
    device and resumed on the other gets its generator seeded from (seed, step) instead, with a
    warning. Only the mechanisms' random draws (resampling) then differ from an uninterrupted
    run; the gradient steps and the batches do not depend on it."""
    if saved_device is None:
        saved_device = "cpu" if saved_state.numel() == _CPU_GENERATOR_STATE_BYTES else "cuda"
    if saved_device == generator.device.type:
        generator.set_state(saved_state)
        return True
    generator.manual_seed(seed * 1_000_003 + step)
    warnings.warn(
        f"The checkpoint (step {step}) was written on {saved_device} and is resumed on "
        f"{generator.device.type}: its random generator cannot move between them, so it is "
        "re-seeded from the run's seed and step. The run continues; its later resampling draws "
        "differ from an uninterrupted run's.",
        stacklevel=2,
    )
    return False
