"""The model-side evaluation cache: what the language model computes once per evaluation set.

Model-side cache (`profile.output_dir / "eval_cache" / <kind>-<key>/`): the splice inputs (the
layer output of the splice contexts), per-token clean and zero-ablated CE and the ablation KL, the
absorption and the probing activations. Keys hash the model, the hook and the data; files are
written atomically, the manifest last. The clean log-softmax is not stored: for SmolLM2 it is
49,152 floats per token, 200 kB in fp32 (0.8 GB for the `local` splice set of 32 x 128 tokens,
400 GB for `paper`'s Gemma vocabulary and 3,200 contexts; fp16 is too coarse for KL), while
recomputing it from the stored layer output costs one pass through the remaining layers per
evaluation session (~5 s for `local`), shared by all SAEs evaluated together (`splice_metrics`
takes them all). That pass also checks the cache: its clean CE must equal the stored one.

Trust: the manifest records each array's byte size and sha256 (and, for arrays too large to hash
on every read, the sha256 of sampled blocks). `load_cached` checks them before use: an entry with
a truncated, missing or altered file is reported (a `DamagedCacheWarning` naming the folder and
the file) and rebuilt, as is an entry of an older format; `rebuild=True` (notebook 08's
`rebuild_cache`, `run_all.sh --force`) rebuilds every entry it is asked for. A rebuild removes
the manifest first, so an interrupted rebuild leaves an incomplete entry, never a stale one.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor

from hsae_utils.io import atomic_path, read_json, sha256_file, sha256_json, write_json_atomic

CACHE_FORMAT = 2  # 2: each array's size and sha256 in the manifest, checked on every read
MMAP_BYTES = 512 * 2**20  # cached arrays larger than this stay memory-mapped
# Arrays up to this size are hashed whole on every read (~1 s per GB); larger ones (the `paper`
# probing activations, tens of GB) by their exact size, their header and 64 sampled 1 MiB blocks,
# which catches a truncated or partly rewritten file without reading all of it per session.
FULL_HASH_BYTES = 2 * 2**30
SAMPLE_BLOCKS, SAMPLE_BLOCK_BYTES = 64, 2**20


class DamagedCacheWarning(UserWarning):
    """An evaluation-cache entry failed its checks and is rebuilt."""


def sampled_sha256(path: str | Path, size: int | None = None) -> str:
    """sha256 of SAMPLE_BLOCKS blocks spread evenly over a file (first and last included)."""
    size = os.path.getsize(path) if size is None else size
    h = hashlib.sha256()
    n = SAMPLE_BLOCKS if size > SAMPLE_BLOCKS * SAMPLE_BLOCK_BYTES else 1
    with open(path, "rb") as f:
        for i in range(n):
            f.seek(0 if n == 1 else (size - SAMPLE_BLOCK_BYTES) * i // (n - 1))
            h.update(f.read(size if n == 1 else SAMPLE_BLOCK_BYTES))
    return h.hexdigest()


def file_check(path: str | Path) -> dict:
    """What the manifest records of an array file, for `entry_problem`."""
    size = os.path.getsize(path)
    check = {"bytes": size, "sampled_sha256": sampled_sha256(path, size)}
    if size <= FULL_HASH_BYTES:
        check["sha256"] = sha256_file(path)
    return check


def entry_problem(folder: Path, manifest: dict) -> str | None:
    """Why a complete-looking entry cannot be used (None: it passes every check)."""
    if manifest.get("format") != CACHE_FORMAT:
        return (
            f"written in cache format {manifest.get('format')}, this version reads {CACHE_FORMAT}"
        )
    for name, spec in manifest["arrays"].items():
        path = folder / f"{name}.npy"
        if not path.is_file():
            return f"{path.name} is missing"
        size = path.stat().st_size
        if size != spec["bytes"]:
            return (
                f"{path.name} has {size:,} bytes, the manifest says {spec['bytes']:,} (truncated?)"
            )
        if "sha256" in spec:
            if sha256_file(path) != spec["sha256"]:
                return f"{path.name} does not match its sha256"
        elif sampled_sha256(path, size) != spec["sampled_sha256"]:
            return f"{path.name} does not match its sampled sha256"
        try:
            arr = np.load(path, mmap_mode="r")
        except (ValueError, OSError) as err:
            return f"{path.name} is unreadable ({err})"
        if list(arr.shape) != spec["shape"] or str(arr.dtype) != spec["dtype"]:
            return f"{path.name} has shape {arr.shape} {arr.dtype}, not {spec['shape']} {spec['dtype']}"
    return None


def cache_folder(root: str | Path, kind: str, identity: Mapping[str, Any]) -> Path:
    """`root / <kind>-<16 hex of sha256(identity)>`."""
    return Path(root) / f"{kind}-{sha256_json({'kind': kind, **identity})[:16]}"


def load_cached(
    root: str | Path, kind: str, identity: Mapping[str, Any], rebuild: bool = False
) -> dict | None:
    """The arrays and metadata of a complete, verified cache entry, or None (build it).

    Returns {"arrays": {name: np.ndarray}, "meta": dict, "folder": Path}. None when there is no
    entry, its manifest is missing (an interrupted write), or `rebuild`; an entry that fails
    `entry_problem`'s checks also gives None, with a DamagedCacheWarning saying what was wrong.
    """
    folder = cache_folder(root, kind, identity)
    manifest_path = folder / "manifest.json"
    if rebuild or not manifest_path.is_file():
        return None
    try:
        manifest = read_json(manifest_path)
        problem = (
            None
            if manifest.get("identity") == json.loads(json.dumps(dict(identity), default=str))
            else "its identity differs from its folder name's"
        )
        problem = problem or entry_problem(folder, manifest)
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        problem = f"its manifest is unreadable ({err!r})"
    if problem:
        warnings.warn(
            f"The evaluation cache entry {folder} is damaged: {problem}. It is rebuilt "
            "now (re-running the model on its inputs).",
            DamagedCacheWarning,
            stacklevel=2,
        )
        return None
    arrays = {}
    for name in manifest["arrays"]:
        arr = np.load(folder / f"{name}.npy", mmap_mode="r")
        # small arrays are read into memory; large ones stay memory-mapped (read-only)
        arrays[name] = np.array(arr) if arr.nbytes <= MMAP_BYTES else arr
    return {"arrays": arrays, "meta": manifest.get("meta", {}), "folder": folder}


def save_cached(
    root: str | Path,
    kind: str,
    identity: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray | Path],
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write arrays (one .npy each, atomically) then the manifest, whose presence marks the entry
    complete. A Path value is an .npy file already written (e.g. a filled memory map), moved into
    place. An existing entry's manifest is removed first: until the new one is written, the
    entry reads as incomplete."""
    folder = cache_folder(root, kind, identity)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").unlink(missing_ok=True)
    specs = {}
    for name, arr in arrays.items():
        if isinstance(arr, Path):
            os.replace(arr, folder / f"{name}.npy")
            arr = np.load(folder / f"{name}.npy", mmap_mode="r")
        else:
            arr = np.ascontiguousarray(arr)
            with atomic_path(folder / f"{name}.npy") as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, arr)
        specs[name] = {
            "shape": list(arr.shape),
            "dtype": str(arr.dtype),
            **file_check(folder / f"{name}.npy"),
        }
    write_json_atomic(
        folder / "manifest.json",
        {
            "format": CACHE_FORMAT,
            "kind": kind,
            "identity": dict(identity),
            "arrays": specs,
            "meta": dict(meta or {}),
        },
    )
    return folder


def tensor_sha(*tensors: Tensor | np.ndarray) -> str:
    """sha256 of the bytes of some arrays (the "data hash" of a cache key)."""
    h = hashlib.sha256()
    for t in tensors:
        a = t.detach().cpu().numpy() if isinstance(t, Tensor) else np.asarray(t)
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def model_identity(model, fingerprint: str | None = None) -> dict:
    """What identifies the language model in a cache key."""
    cfg = model.cfg
    return {
        "model": getattr(cfg, "model_name", type(model).__name__),
        "model_sha256": fingerprint or "",
        "d_model": cfg.d_model,
        "n_layers": cfg.n_layers,
    }


def model_device(model) -> torch.device:
    return next(model.parameters()).device
