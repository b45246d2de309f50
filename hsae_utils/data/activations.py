"""Activation cache: residual-stream vectors on disk, in shards, with a manifest.

Layout of one split (`<output_dir>/activations/<split>/`):
    tokens.npy          int32 [n_contexts, context_size]: the model inputs, BOS first
    shard_00000.npy     [rows, d_model] activations of the non-special positions, in the
                        profile's `cache_dtype` (bfloat16 is stored as its uint16 bit pattern:
                        numpy has no bf16, and .npy keeps memory-mapping)
    ...
    manifest.json       what was cached (model, hook, corpus, ...), the shards done so far, and
                        the normalization statistics

Every file is written to a temporary name and renamed, and the manifest is rewritten after each
shard, so an interrupted run resumes from the last complete shard. Shards are read back
memory-mapped; training streams them in shuffled groups, holding one group (in the cache dtype) at
a time, and converts each batch to fp32.
"""

from __future__ import annotations

import functools
import hashlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from hsae_utils.config import Profile
from hsae_utils.data.forward import layer_resid, model_dtype
from hsae_utils.data.tokens import bos_token_id, keep_mask, make_contexts, special_token_ids
from hsae_utils.io import (
    atomic_path,
    read_json,
    remove_stale_temporaries,
    sha256_file,
    write_json_atomic,
)

CACHE_FORMAT = 1
# What must match between a cache on disk and the request, or the cache is not reused.
IDENTITY_KEYS = (
    "model",
    "model_sha256",
    "hook",
    "d_model",
    "context_size",
    "corpus_sha256",
    "split",
    "n_contexts",
    "bos_token_id",
    "massive_norm_factor",
    "format",
    "cache_dtype",
    "model_dtype",
)
# Keys added after format 1 was written, with the value every older cache has (every cache built
# before `model_dtype` was recorded ran the model in fp32).
_LEGACY_DEFAULTS = {"cache_dtype": "float32", "model_dtype": "float32"}
# How each cache dtype is stored in .npy (bf16 as its raw bits) and viewed back in torch.
_STORAGE = {
    "float32": (np.float32, torch.float32),
    "float16": (np.float16, torch.float16),
    "bfloat16": (np.uint16, torch.bfloat16),
}


class CacheError(RuntimeError):
    """A cache on disk that cannot be used as it is; the message says how to fix it."""


def code_version() -> str:
    """Hash of the code that decides what a cache contains (recorded; a change only warns)."""
    here = Path(__file__).parent
    h = hashlib.sha256()
    for name in ("activations.py", "forward.py", "tokens.py", "model.py"):
        h.update((here / name).read_bytes())
    return h.hexdigest()[:16]


def dtype_bytes(cache_dtype: str) -> int:
    """Bytes per cached value."""
    return np.dtype(_STORAGE[cache_dtype][0]).itemsize


def to_storage(x_ND: torch.Tensor, cache_dtype: str) -> np.ndarray:
    """fp32 rows -> the array written to a shard (round to nearest even for bf16 / fp16)."""
    x_ND = x_ND.to(_STORAGE[cache_dtype][1]).contiguous()
    return (
        x_ND.view(torch.int16).numpy().view(np.uint16)
        if cache_dtype == "bfloat16"
        else x_ND.numpy()
    )


def from_storage(arr: np.ndarray, cache_dtype: str) -> torch.Tensor:
    """A shard's array (or rows of it) as a torch tensor in the cache dtype (no conversion)."""
    t = torch.from_numpy(np.ascontiguousarray(arr))
    return t.view(torch.bfloat16) if cache_dtype == "bfloat16" else t


def manifest_cache_dtype(manifest: dict) -> str:
    return manifest.get("cache_dtype", _LEGACY_DEFAULTS["cache_dtype"])


# --------------------------------------------------------------------------------------------
# Normalization
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Normalizer:
    """x_norm = (x - mean if center) * scale, with scale = sqrt(d / E||x - c||^2).

    The paper normalizes inputs "using per-layer statistics from a 10K token sample" without
    saying how. We follow the field's convention (dictionary_learning, SAELens
    `expected_average_only_in`): one scalar per layer so that the average squared norm is d_model,
    which keeps the geometry of the residual stream and makes the L1 coefficients comparable to
    published sweeps. Centering is a parameter (off by default: b_dec learns the mean).
    """

    scale: float
    mean_D: tuple[float, ...]
    center: bool = False

    def __call__(self, x_BD: torch.Tensor) -> torch.Tensor:
        if self.center:
            x_BD = x_BD - self._mean(x_BD.dtype, x_BD.device)
        return x_BD * self.scale

    @functools.lru_cache(maxsize=4)  # noqa: B019 (a few small normalizers, kept for the run)
    def _mean(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """mean_D as a tensor, made once per dtype and device (not copied to a GPU per batch)."""
        return torch.tensor(self.mean_D, dtype=dtype, device=device)

    def inverse(self, x_BD: torch.Tensor) -> torch.Tensor:
        x_BD = x_BD / self.scale
        if self.center:
            x_BD = x_BD + torch.tensor(self.mean_D, dtype=x_BD.dtype, device=x_BD.device)
        return x_BD

    def to_dict(self) -> dict:
        return {"scale": self.scale, "mean": list(self.mean_D), "center": self.center}

    @classmethod
    def from_dict(cls, d: dict) -> "Normalizer":
        return cls(scale=float(d["scale"]), mean_D=tuple(d["mean"]), center=bool(d["center"]))

    @classmethod
    def fit(cls, x_ND: torch.Tensor, center: bool = False) -> "Normalizer":
        x_ND = x_ND.double()
        mean_D = x_ND.mean(0)
        centered = x_ND - mean_D if center else x_ND
        scale = (x_ND.shape[1] / centered.pow(2).sum(1).mean()).sqrt().item()
        return cls(scale=scale, mean_D=tuple(mean_D.tolist()), center=center)


# --------------------------------------------------------------------------------------------
# Building a cache
# --------------------------------------------------------------------------------------------
def _n_contexts(profile: Profile, split: str) -> int:
    n_tokens = profile.n_train_tokens if split == "train" else profile.n_valid_tokens
    return max(1, n_tokens // profile.context_size)


def _identity(
    profile: Profile, split: str, model_sha: str, corpus_sha: str, bos: int, forward_dtype: str
) -> dict:
    return {
        "format": CACHE_FORMAT,
        "model": profile.model_name,
        "model_sha256": model_sha,
        "hook": profile.hook_name,
        "d_model": profile.d_model,
        "context_size": profile.context_size,
        "corpus_sha256": corpus_sha,
        "split": split,
        "n_contexts": _n_contexts(profile, split),
        "bos_token_id": bos,
        "massive_norm_factor": profile.massive_norm_factor,
        "cache_dtype": profile.cache_dtype,
        # the dtype the model's forward actually ran in (bf16 and fp32 residuals differ well
        # beyond the cache's rounding), read from the model: `forward_dtype` may upgrade the
        # profile's model_dtype to bf16 on a GPU
        "model_dtype": forward_dtype,
    }


def _check_identity(manifest: dict, identity: dict, folder: Path) -> None:
    diffs = [
        f"{k}: cache has {manifest.get(k, _LEGACY_DEFAULTS.get(k))!r}, requested {identity[k]!r}"
        for k in IDENTITY_KEYS
        if manifest.get(k, _LEGACY_DEFAULTS.get(k)) != identity[k]
    ]
    if diffs:
        raise CacheError(
            f"The activation cache at {folder} was built for something else:\n  "
            + "\n  ".join(diffs)
            + "\nRebuild it with `rebuild=True` (notebook 01: rebuild_cache=True), or "
            "move the folder away to keep it."
        )


_REBUILD = "Rebuild the cache with `rebuild=True` (notebook 01: rebuild_cache=True)."


def _read_manifest(path: Path) -> dict:
    try:
        return read_json(path)
    except ValueError as err:  # written atomically, so only outside damage gets here
        raise CacheError(f"The cache manifest {path} is unreadable ({err}). {_REBUILD}") from err


def _verify_shard(
    shard: dict, folder: Path, d: int, deep: bool, cache_dtype: str = "float32"
) -> None:
    path = folder / shard["file"]
    if not path.is_file():
        raise CacheError(f"Shard {path} is missing. {_REBUILD}")
    try:
        big_enough = path.stat().st_size >= shard["rows"] * d * dtype_bytes(cache_dtype)
        arr = np.load(path, mmap_mode="r") if big_enough else None
    except ValueError:  # a damaged .npy header
        arr = None
    if arr is None or arr.shape != (shard["rows"], d) or arr.dtype != _STORAGE[cache_dtype][0]:
        raise CacheError(
            f"Shard {path} is truncated or has the wrong shape (expected "
            f"{shard['rows']} x {d} {cache_dtype}). {_REBUILD}"
        )
    if deep and sha256_file(path) != shard["sha256"]:
        raise CacheError(f"Shard {path} fails its checksum (corrupted). {_REBUILD}")


def _verify_shards(manifest: dict, folder: Path, deep: bool) -> None:
    for shard in manifest["shards"]:
        _verify_shard(shard, folder, manifest["d_model"], deep, manifest_cache_dtype(manifest))


NPY_HEADER_BYTES = 128  # np.save's header for these shapes (a multiple of 64 bytes)


def cache_bytes(
    n_contexts: int,
    context_size: int,
    d_model: int,
    cache_dtype: str = "float32",
    contexts_per_shard: int | None = None,
) -> int:
    """A split's size on disk, an upper bound: a row for every position but the BOS that starts
    each context (other special tokens and massive activations are dropped too, so the real cache
    is a little smaller), the int32 tokens, the .npy headers, and the manifest (its normalization
    mean: d_model JSON floats; a line per shard)."""
    n_shards = -(-n_contexts // (contexts_per_shard or n_contexts))
    rows = n_contexts * (context_size - 1)
    manifest = 2048 + 24 * d_model + 150 * n_shards
    return (
        rows * d_model * dtype_bytes(cache_dtype)
        + n_contexts * context_size * 4
        + (n_shards + 1) * NPY_HEADER_BYTES
        + manifest
    )


def contexts_per_shard(profile: Profile) -> int:
    return max(1, profile.shard_tokens // profile.context_size)


def _remaining_bytes(profile: Profile, split: str) -> int:
    """What caching `split` still has to write, given the shards already on disk."""
    n_contexts = _n_contexts(profile, split)
    path = profile.cache_dir / split / "manifest.json"
    if path.exists():
        m = _read_manifest(path)
        n_contexts = (
            0 if m["complete"] else max(0, n_contexts - len(m["shards"]) * m["contexts_per_shard"])
        )
    return cache_bytes(
        n_contexts,
        profile.context_size,
        profile.d_model,
        profile.cache_dtype,
        contexts_per_shard(profile),
    )


def check_disk_space(folder: Path, need_bytes: int) -> None:
    """Raise CacheError, before anything is written, when `folder`'s disk lacks `need_bytes`."""
    probe = folder
    while not probe.exists():  # the folder may not exist yet: ask its disk
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if need_bytes * 1.05 > free:
        raise CacheError(
            f"The activation cache needs about {need_bytes / 2**30:.2f} GiB but {probe} has "
            f"{free / 2**30:.2f} GiB free: free disk space, point HSAE_OUTPUT_ROOT at a larger "
            "disk, or pass smaller n_train_tokens / n_valid_tokens."
        )


def build_cache(
    profile: Profile,
    split: str,
    model,
    texts: Callable[[], Iterable[str]],
    model_sha: str = "",
    corpus_sha: str = "",
    normalizer: Normalizer | None = None,
    rebuild: bool = False,
    deep_verify: bool = True,
) -> Path:
    """Cache `blocks.{layer}.hook_resid_post` for one split; resume or reuse when possible.

    `texts()` returns an iterable of documents (already shuffled), called only when the cache has
    to be built; `model` is a TransformerBridge. For the train split the normalization statistics are
    fitted on `profile.n_norm_tokens` tokens; other splits reuse the train split's `normalizer`.
    Returns the cache folder.
    """
    folder = profile.cache_dir / split
    tokenizer = model.tokenizer
    bos = bos_token_id(tokenizer)
    forward_dtype = str(model_dtype(model)).removeprefix("torch.")
    identity = _identity(profile, split, model_sha, corpus_sha, bos, forward_dtype)
    manifest_path = folder / "manifest.json"

    if manifest_path.exists() and rebuild:
        shutil.rmtree(folder)
    if manifest_path.exists():
        manifest = _read_manifest(manifest_path)
        _check_identity(manifest, identity, folder)
        _verify_shards(manifest, folder, deep=deep_verify)
        if manifest.get("code_version") != code_version():
            print(f"Note: {folder} was built by another code version; reusing it (same identity).")
        if manifest["complete"]:
            print(f"Reusing complete cache {folder} ({manifest['n_tokens']:,} tokens).")
            return folder
        print(f"Resuming cache {folder} after {len(manifest['shards'])} complete shard(s).")
        check_disk_space(folder, _remaining_bytes(profile, split))
        if sha256_file(folder / "tokens.npy") != manifest["tokens_sha256"]:
            raise CacheError(f"{folder / 'tokens.npy'} fails its checksum. {_REBUILD}")
        tokens_SC = torch.from_numpy(np.load(folder / "tokens.npy").astype(np.int64))
    else:
        check_disk_space(folder, _remaining_bytes(profile, split))
        folder.mkdir(parents=True, exist_ok=True)
        tokens_SC = make_contexts(texts(), tokenizer, profile.context_size, identity["n_contexts"])
        with atomic_path(folder / "tokens.npy") as tmp:
            with open(tmp, "wb") as f:
                np.save(f, tokens_SC.numpy().astype(np.int32))
        manifest = {
            **identity,
            "code_version": code_version(),
            "complete": False,
            "shards": [],
            "n_tokens": 0,
            "normalization": None,
            "n_massive_dropped": 0,
            "special_token_ids": special_token_ids(tokenizer),
            "tokens_sha256": sha256_file(folder / "tokens.npy"),
            "contexts_per_shard": contexts_per_shard(profile),
        }
        write_json_atomic(manifest_path, manifest)

    remove_stale_temporaries(folder)  # e.g. the half-written shard of a killed run
    _fill_shards(profile, model, tokens_SC, manifest, folder)

    if split == "train":
        sample = _first_rows(folder, manifest, profile.n_norm_tokens)
        manifest["normalization"] = Normalizer.fit(sample).to_dict()
        manifest["normalization"]["n_tokens"] = int(sample.shape[0])
    else:
        if normalizer is None:
            raise ValueError("Non-train splits reuse the train split's normalizer; pass it.")
        manifest["normalization"] = normalizer.to_dict()
    manifest["complete"] = True
    write_json_atomic(manifest_path, manifest)
    return folder


def _fill_shards(
    profile: Profile, model, tokens_SC: torch.Tensor, manifest: dict, folder: Path
) -> None:
    device = next(model.parameters()).device
    special = torch.tensor(manifest["special_token_ids"])
    per_shard = manifest["contexts_per_shard"]
    n_ctx = tokens_SC.shape[0]
    n_shards = -(-n_ctx // per_shard)
    done = len(manifest["shards"])
    bar = tqdm(
        total=n_ctx * profile.context_size,
        initial=done * per_shard * profile.context_size,
        unit="tok",
        unit_scale=True,
        desc=f"caching {manifest['split']}",
    )
    t0, new_tokens = time.time(), 0
    for s in range(done, n_shards):
        ctx = tokens_SC[s * per_shard : (s + 1) * per_shard]
        rows = []
        for i in range(0, ctx.shape[0], profile.model_batch_size):
            toks_BS = ctx[i : i + profile.model_batch_size]
            resid_BSD = layer_resid(model, toks_BS.to(device), profile.layer)
            # Checked before keep_mask: its norm test would silently drop NaN rows as "massive".
            if not torch.isfinite(resid_BSD).all():
                raise CacheError(
                    f"The model produced NaN/Inf activations at {profile.hook_name} in shard {s}: "
                    "load it in float32 (profile model_dtype='float32') or check its weights. "
                    f"The {s} complete shard(s) before it are kept; a re-run resumes after them."
                )
            keep_BS = keep_mask(toks_BS, resid_BSD, special, manifest["massive_norm_factor"])
            manifest["n_massive_dropped"] += int(
                (~torch.isin(toks_BS, special)).sum() - keep_BS.sum()
            )
            rows.append(resid_BSD[keep_BS.to(resid_BSD.device)].float().cpu())
            bar.update(toks_BS.numel())
            new_tokens += toks_BS.numel()
            bar.set_postfix(tok_per_s=f"{new_tokens / (time.time() - t0):.0f}")
        acts_ND = to_storage(torch.cat(rows), manifest_cache_dtype(manifest))
        if acts_ND.dtype == np.float16 and not np.isfinite(acts_ND).all():
            raise CacheError(
                f"Activations at {profile.hook_name} overflow float16 in shard {s}: use "
                "cache_dtype='bfloat16' (same size, fp32's range) and rebuild the cache."
            )
        name = f"shard_{s:05d}.npy"
        with atomic_path(folder / name, nbytes=acts_ND.nbytes + 128) as tmp:  # + the .npy header
            with open(tmp, "wb") as f:
                np.save(f, acts_ND)
        manifest["shards"].append(
            {
                "file": name,
                "rows": int(acts_ND.shape[0]),
                "sha256": sha256_file(folder / name),
                # not identity: the batch's median norm decides the massive rows (features.rows)
                "model_batch_size": profile.model_batch_size,
            }
        )
        manifest["n_tokens"] += int(acts_ND.shape[0])
        write_json_atomic(folder / "manifest.json", manifest)
    bar.close()
    if new_tokens:
        rate = new_tokens / (time.time() - t0)
        print(f"Cached {new_tokens:,} context tokens at {rate:,.0f} tokens/s -> {folder}")


def _first_rows(folder: Path, manifest: dict, n: int) -> torch.Tensor:
    """The first n cached rows. Contexts were shuffled at the document level, so these are a
    sample of the corpus, and the same sample on every rebuild."""
    parts, have = [], 0
    for shard in manifest["shards"]:
        arr = np.load(folder / shard["file"], mmap_mode="r")
        parts.append(from_storage(arr[: n - have], manifest_cache_dtype(manifest)).float())
        have += parts[-1].shape[0]
        if have >= n:
            break
    return torch.cat(parts)


# --------------------------------------------------------------------------------------------
# Reading a cache
# --------------------------------------------------------------------------------------------
class ActivationStore:
    """Normalized activations from a complete cache, streamed in shuffled groups of shards.

    `iter_batches` is deterministic in (seed, start_step): batch `start_step` onward is the same
    as what a fresh iterator from step 0 yields there, so a resumed training run sees the same data.
    Host memory is bounded by one group: `group_shards` shards in the cache dtype
    (`group_bytes`); batches are converted to fp32 one at a time. `cache_dtype`, when given (the
    profile's), refuses a cache stored in another dtype.
    """

    def __init__(
        self,
        folder: str | Path,
        group_shards: int = 8,
        deep_verify: bool = False,
        cache_dtype: str | None = None,
    ):
        self.folder = Path(folder)
        path = self.folder / "manifest.json"
        if not path.exists():
            raise CacheError(f"No activation cache at {self.folder}: run notebook 01 first.")
        self.manifest = _read_manifest(path)
        if not self.manifest.get("complete"):
            raise CacheError(
                f"The cache at {self.folder} is incomplete: re-run notebook 01 to finish it."
            )
        self.cache_dtype = manifest_cache_dtype(self.manifest)
        if cache_dtype is not None and cache_dtype != self.cache_dtype:
            raise CacheError(
                f"The activation cache at {self.folder} is stored in "
                f"{self.cache_dtype}, the profile asks for {cache_dtype}. {_REBUILD}"
            )
        _verify_shards(self.manifest, self.folder, deep=deep_verify)
        self.d_model: int = self.manifest["d_model"]
        self.rows = [s["rows"] for s in self.manifest["shards"]]
        self.n_tokens: int = sum(self.rows)
        self.normalizer = Normalizer.from_dict(self.manifest["normalization"])
        self.group_shards = group_shards
        self._verified = set(range(len(self.rows))) if deep_verify else set()

    def _open(self, i: int) -> np.ndarray:
        """Memory-map shard i. Its checksum is verified on first use (one extra read of data that
        training reads anyway), so a corrupted shard stops the run instead of feeding it."""
        shard = self.manifest["shards"][i]
        if i not in self._verified:
            _verify_shard(shard, self.folder, self.d_model, deep=True, cache_dtype=self.cache_dtype)
            self._verified.add(i)
        return np.load(self.folder / shard["file"], mmap_mode="r")

    @property
    def group_bytes(self) -> int:
        """Host memory of the largest group of shards that `iter_batches` holds."""
        rows = sorted(self.rows, reverse=True)[: self.group_shards]
        return sum(rows) * self.d_model * dtype_bytes(self.cache_dtype)

    def _read_group(self, shards: list[int]) -> torch.Tensor:
        """The rows of some shards, concatenated, in the cache dtype: copied from the memory map
        straight into one buffer (no per-shard copies beside it)."""
        out_ND = np.empty(
            (sum(self.rows[s] for s in shards), self.d_model), dtype=_STORAGE[self.cache_dtype][0]
        )
        at = 0
        for s in shards:
            out_ND[at : at + self.rows[s]] = self._open(s)
            at += self.rows[s]
        return from_storage(out_ND, self.cache_dtype)  # a view, no copy

    def read_all(self) -> torch.Tensor:
        """Every row of the split, raw (not normalized), as fp32: for small splits (validation)."""
        return self._read_group(list(range(len(self.rows)))).float()

    def _plan(self, batch_size: int, seed: int) -> Iterator[tuple[list[int], torch.Tensor, int]]:
        """Yield (shard ids, row permutation, n_batches) per group, epoch after epoch."""
        if batch_size > self.n_tokens:
            raise ValueError(f"batch_size {batch_size} exceeds the cache's {self.n_tokens} tokens.")
        epoch = 0
        while True:
            g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            order = torch.randperm(len(self.rows), generator=g).tolist()
            groups = [
                order[i : i + self.group_shards] for i in range(0, len(order), self.group_shards)
            ]
            for shards in groups:
                n = sum(self.rows[s] for s in shards)
                # Remainder rows of a group (< batch_size) are dropped; a new order each epoch.
                yield shards, torch.randperm(n, generator=g), n // batch_size
            epoch += 1

    def iter_batches(
        self, batch_size: int, seed: int, start_step: int = 0, device: str | torch.device = "cpu"
    ) -> Iterator[torch.Tensor]:
        """Normalized fp32 batches [batch_size, d_model] on `device`, from `start_step` on.

        On a GPU each group goes to the device once, in the cache dtype, when it fits in half
        its free memory (`group_bytes`; the paper profile's 8 x 262k-token bf16 shards are
        9.7 GB): batches are then gathered, converted and normalized there, with no host copy and
        no host sync per step. Otherwise each batch is gathered on the host into pinned memory
        and copied asynchronously."""
        device = torch.device(device)
        step = 0
        for shards, perm, n_batches in self._plan(batch_size, seed):
            if step + n_batches <= start_step:  # skip whole groups without reading them
                step += n_batches
                continue
            data_ND = None  # release the previous group before reading the next one
            data_ND = self._read_group(shards)
            on_device = device.type == "cuda" and _fits_on_cuda(data_ND, device)
            if on_device:
                data_ND, perm = data_ND.to(device), perm.to(device)
            for b in range(n_batches):
                if step >= start_step:
                    idx = perm[b * batch_size : (b + 1) * batch_size]
                    batch_BD = data_ND[idx]
                    if device.type != "cpu" and not on_device:
                        batch_BD = batch_BD.pin_memory()  # so that the copy below is async
                    yield self.normalizer(batch_BD.to(device, non_blocking=True).float())
                step += 1

    def sample(self, n_tokens: int, seed: int) -> torch.Tensor:
        """n normalized rows drawn uniformly without replacement (deterministic in seed)."""
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(self.n_tokens, generator=g)[:n_tokens].sort().values
        bounds = np.cumsum([0] + self.rows)
        parts = []
        for i in range(len(self.rows)):
            sel = idx[(idx >= bounds[i]) & (idx < bounds[i + 1])] - bounds[i]
            if len(sel):
                parts.append(from_storage(self._open(i)[sel.numpy()], self.cache_dtype).float())
        return self.normalizer(torch.cat(parts))

    def tokens(self) -> torch.Tensor:
        """[n_contexts, context_size] int64 model inputs of this split."""
        return torch.from_numpy(np.load(self.folder / "tokens.npy").astype(np.int64))


def _fits_on_cuda(data_ND: torch.Tensor, device: torch.device) -> bool:
    """Whether a group fits in half of what the GPU has free (memory the caching allocator holds
    but does not use, e.g. the previous group's, counts as free)."""
    free, _ = torch.cuda.mem_get_info(device)
    free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return data_ND.numel() * data_ND.element_size() <= free // 2


# --------------------------------------------------------------------------------------------
# The notebook-level entry point
# --------------------------------------------------------------------------------------------
def cache_activations(profile: Profile, model=None, rebuild: bool = False) -> dict[str, Path]:
    """Build (or resume, or reuse) the train and validation caches of a profile."""
    from hsae_utils.data.corpus import corpus_fingerprint, load_text_dataset
    from hsae_utils.data.model import load_model, model_fingerprint

    if not rebuild:  # both splits at once, so validation cannot run out of space after train
        check_disk_space(
            profile.cache_dir, sum(_remaining_bytes(profile, s) for s in ("train", "validation"))
        )
    model = model if model is not None else load_model(profile)
    model_sha, corpus_sha = model_fingerprint(profile), corpus_fingerprint(profile)

    def texts(split: str) -> Callable[[], Iterable[str]]:
        def _iter() -> Iterable[str]:
            ds = load_text_dataset(profile, split)
            # Shuffle documents so a token budget samples every source, not the first one.
            ds = ds.shuffle(seed=0, buffer_size=10_000) if _is_streaming(ds) else ds.shuffle(seed=0)
            return (row[profile.dataset_text_field] for row in ds)

        return _iter

    train = build_cache(
        profile, "train", model, texts("train"), model_sha, corpus_sha, rebuild=rebuild
    )
    norm = ActivationStore(train).normalizer
    valid = build_cache(
        profile,
        "validation",
        model,
        texts("validation"),
        model_sha,
        corpus_sha,
        normalizer=norm,
        rebuild=rebuild,
    )
    return {"train": train, "validation": valid}


def _is_streaming(ds) -> bool:
    from datasets import IterableDataset

    return isinstance(ds, IterableDataset)
