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
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor

from hsae_utils.io import atomic_path, read_json, sha256_json, write_json_atomic

CACHE_FORMAT = 1
MMAP_BYTES = 512 * 2**20  # cached arrays larger than this stay memory-mapped


def cache_folder(root: str | Path, kind: str, identity: Mapping[str, Any]) -> Path:
    """`root / <kind>-<16 hex of sha256(identity)>`."""
    return Path(root) / f"{kind}-{sha256_json({'kind': kind, **identity})[:16]}"


def load_cached(root: str | Path, kind: str, identity: Mapping[str, Any]) -> dict | None:
    """The arrays and metadata of a complete cache entry, or None.

    Returns {"arrays": {name: np.ndarray}, "meta": dict, "folder": Path}. An entry whose manifest
    is missing (interrupted write) or whose identity or files do not match is ignored.
    """
    folder = cache_folder(root, kind, identity)
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        return None
    try:
        manifest = read_json(manifest_path)
    except ValueError:
        return None
    if manifest.get("format") != CACHE_FORMAT or manifest.get("identity") != json.loads(
            json.dumps(dict(identity), default=str)):
        return None
    arrays = {}
    for name, spec in manifest["arrays"].items():
        path = folder / f"{name}.npy"
        if not path.is_file():
            return None
        arr = np.load(path, mmap_mode="r")
        if list(arr.shape) != spec["shape"] or str(arr.dtype) != spec["dtype"]:
            return None
        # small arrays are read into memory; large ones stay memory-mapped (read-only)
        arrays[name] = np.array(arr) if arr.nbytes <= MMAP_BYTES else arr
    return {"arrays": arrays, "meta": manifest.get("meta", {}), "folder": folder}


def save_cached(root: str | Path, kind: str, identity: Mapping[str, Any],
                arrays: Mapping[str, np.ndarray | Path], meta: Mapping[str, Any] | None = None
                ) -> Path:
    """Write arrays (one .npy each, atomically) then the manifest, whose presence marks the entry
    complete. A Path value is an .npy file already written (e.g. a filled memory map), moved into
    place."""
    folder = cache_folder(root, kind, identity)
    folder.mkdir(parents=True, exist_ok=True)
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
        specs[name] = {"shape": list(arr.shape), "dtype": str(arr.dtype)}
    write_json_atomic(folder / "manifest.json", {
        "format": CACHE_FORMAT, "kind": kind, "identity": dict(identity), "arrays": specs,
        "meta": dict(meta or {}),
    })
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
    return {"model": getattr(cfg, "model_name", type(model).__name__),
            "model_sha256": fingerprint or "", "d_model": cfg.d_model, "n_layers": cfg.n_layers}


def model_device(model) -> torch.device:
    return next(model.parameters()).device
