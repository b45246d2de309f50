"""Evaluating SAEs: core metrics, the model-side cache, and the orchestration of notebook 08.

Metric definitions (SAEBench `evals/core`, SAELens `evals.py`, dictionary_learning):

Reconstruction, on every non-special token of the validation split (x: the layer's residual).
- `explained_variance_legacy`: mean over tokens of 1 - ||x - xhat||^2 / ||x - mean(x)||^2, the
  per-token formula the SAEBench paper reported ("legacy" in SAEBench). mean(x) is the mean over
  the evaluation tokens (SAEBench: over a batch of 16 x 128 tokens).
- `frac_variance_explained`: 1 - sum_d var(x_d - xhat_d) / sum_d var(x_d), dictionary_learning's
  variance-based formula, under its name there (variance around the mean; SAEBench's newer
  `explained_variance` measures it around zero and is known to be wrong: SAELens PRs #665 / #710,
  SAEBench issue #76, so we do not report a metric of that name).
- `mse`: per-token sum of squared errors, averaged over tokens (SAEBench's "mse"), in the
  normalized space the SAE was trained in; `mse_raw` is the same in raw activation units.
- `cossim`, `l2_ratio` (||xhat|| / ||x||, per token, averaged) and
  `relative_reconstruction_bias` (E||xhat||^2 / E<x, xhat>) in raw space.
- `l0`: mean number of non-zero latents per token; `l1`: mean sum of |z| per token.
- `alive`, `frac_alive`, `dead`: latents that fire at least once on the evaluation tokens
  (dictionary_learning `frac_alive`), and the rest.

Splice, on the first `profile.n_eval_contexts` validation contexts: the layer output of every
non-special position is replaced by the SAE reconstruction (zeros for the ablation) and only the
layers after the hook, the final norm and the unembedding run again (`forward.logits_from_layer`).
Special positions (BOS, document boundaries) keep their activation and are left out of every
average, as is every prediction made at a special position.
- `kl_div_with_sae`, `kl_div_with_ablation`: per-token KL(clean || spliced), averaged.
- `kl_div_score` = (KL_ablation - KL_sae) / KL_ablation.
- `ce_loss_without_sae`, `ce_loss_with_sae`, `ce_loss_with_ablation`: next-token cross-entropy.
- `ce_loss_score` (fraction of CE loss recovered) = (CE_abl - CE_sae) / (CE_abl - CE_clean).

Model-side cache (`profile.output_dir / "eval_cache" / <kind>-<key>/`): the splice inputs (the
layer output of the splice contexts), per-token clean and zero-ablated CE and the ablation KL, the
absorption and the probing activations. Keys hash the model, the hook and the data; files are
written atomically, the manifest last. The clean log-softmax is not stored: for SmolLM2 it is
49,152 floats per token, 200 kB in fp32 (0.8 GB for the `local` splice set of 32 x 128 tokens,
400 GB for `paper`'s Gemma vocabulary and 3,200 contexts; fp16 is too coarse for KL), while
recomputing it from the stored layer output costs one pass through the remaining layers per
evaluation session (~5 s for `local`), shared by all SAEs evaluated together (`splice_metrics`
takes them all). That pass also checks the cache: its clean CE must equal the stored one.

Results are a tidy table: run, config, seed, metric, value. Headline metrics have plain names;
details carry a suffix after a colon: `absorption_fraction:a`, `sae_top_1_accuracy:sentiment`.
"""
from __future__ import annotations

import json
import math
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .config import Profile
from .forward import layer_resid, logits_from_layer
from .tokens import keep_mask
from .io import atomic_path, read_json, sha256_json, write_json_atomic

CACHE_FORMAT = 1
MMAP_BYTES = 512 * 2**20  # cached arrays larger than this stay memory-mapped


# ============================================================================================
# Timing
# ============================================================================================
class Timer:
    """Wall-clock seconds per named phase, split into model-side work and per-SAE work."""

    def __init__(self):
        self.model_side: dict[str, float] = {}
        self.per_sae: dict[str, dict[str, float]] = {}

    @contextmanager
    def model(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        self.model_side[name] = self.model_side.get(name, 0.0) + time.perf_counter() - t0

    @contextmanager
    def sae(self, run: str, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        self.add_sae(run, name, time.perf_counter() - t0)

    def add_sae(self, run: str, name: str, seconds: float) -> None:
        row = self.per_sae.setdefault(run, {})
        row[name] = row.get(name, 0.0) + seconds

    def summary(self) -> str:
        total_model = sum(self.model_side.values())
        lines = [f"model-side work (once): {total_model:.1f} s"]
        lines += [f"    {k}: {v:.1f} s" for k, v in self.model_side.items()]
        n = len(self.per_sae)
        if n:
            per = {}
            for row in self.per_sae.values():
                for k, v in row.items():
                    per[k] = per.get(k, 0.0) + v
            total_sae = sum(per.values())
            lines.append(f"per-SAE work: {total_sae:.1f} s for {n} SAE(s), "
                         f"{total_sae / n:.2f} s per SAE")
            lines += [f"    {k}: {v / n:.2f} s per SAE" for k, v in per.items()]
            lines.append(f"total: {total_model + total_sae:.1f} s")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"model_side_s": self.model_side, "per_sae_s": self.per_sae}


@contextmanager
def single_thread() -> Iterator[None]:
    """One torch / BLAS thread for loops of small operations (probe fits): on a shared 2-core
    CPU, thread synchronisation costs more than such operations themselves."""
    from threadpoolctl import threadpool_limits

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(old)


# ============================================================================================
# Model-side cache on disk
# ============================================================================================
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
    import hashlib

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


# ============================================================================================
# Residual stream at the hooked layer
# ============================================================================================
def model_device(model) -> torch.device:
    return next(model.parameters()).device


# ============================================================================================
# SAEs on raw activations
# ============================================================================================
class SAEAdapter:
    """An SAE trained on normalized activations, applied to raw ones:
    x_raw -> x_norm = (x_raw - mean if center) * scale -> SAE -> inverse."""

    def __init__(self, sae, normalization: Mapping[str, Any] | None = None):
        self.sae = sae.eval() if hasattr(sae, "eval") else sae
        norm = dict(normalization if normalization is not None
                    else getattr(getattr(sae, "cfg", None), "normalization", None) or {})
        self.scale = float(norm.get("scale", 1.0) or 1.0)
        self.center = bool(norm.get("center", False)) and norm.get("mean") is not None
        self._mean = (torch.tensor(norm["mean"], dtype=torch.float32) if self.center else None)

    @property
    def d_sae(self) -> int:
        return int(self.sae.W_dec.shape[0])

    @property
    def W_dec(self) -> Tensor:
        return self.sae.W_dec

    def normalize(self, x_raw: Tensor) -> Tensor:
        if self.center:
            x_raw = x_raw - self._mean.to(x_raw.device, x_raw.dtype)
        return x_raw * self.scale

    def denormalize(self, x_norm: Tensor) -> Tensor:
        x = x_norm / self.scale
        if self.center:
            x = x + self._mean.to(x.device, x.dtype)
        return x

    @torch.no_grad()
    def encode(self, x_raw: Tensor) -> Tensor:
        return self.sae.encode(self.normalize(x_raw))

    @torch.no_grad()
    def reconstruct(self, x_raw: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(xhat_raw, z, x_norm, xhat_norm) for rows x_raw [..., D]."""
        shape = x_raw.shape
        x_norm = self.normalize(x_raw.reshape(-1, shape[-1]))
        z = self.sae.encode(x_norm)
        xhat_norm = self.sae.decode(z)
        return (self.denormalize(xhat_norm).reshape(shape), z.reshape(*shape[:-1], -1),
                x_norm.reshape(shape), xhat_norm.reshape(shape))


# ============================================================================================
# Reconstruction metrics
# ============================================================================================
def _batches(x: Tensor | Iterable[Tensor], batch_size: int) -> Iterator[Tensor]:
    if isinstance(x, Tensor):
        for i in range(0, x.shape[0], batch_size):
            yield x[i : i + batch_size]
    else:
        for chunk in x:
            for i in range(0, chunk.shape[0], batch_size):
                yield chunk[i : i + batch_size]


@torch.no_grad()
def reconstruction_metrics(adapter: SAEAdapter, x_raw_ND: Tensor, batch_size: int = 4096,
                           mean_raw_D: Tensor | None = None) -> dict[str, float]:
    """Reconstruction and sparsity metrics on raw activation rows (special tokens already
    removed). See the module docstring for the definitions."""
    device = adapter.W_dec.device
    if mean_raw_D is None:
        mean_raw_D = x_raw_ND.double().mean(0)
    mean_norm_D = adapter.normalize(mean_raw_D.float()[None].to(device)).double()[0]
    F = adapter.d_sae
    D = x_raw_ND.shape[1]
    acc = {k: 0.0 for k in ("n", "sse", "sse_raw", "ev_legacy", "l0", "l1", "cos", "l2_ratio",
                            "xhat_sq", "x_dot_xhat")}
    s_x, s_x2 = torch.zeros(D, dtype=torch.float64), torch.zeros(D, dtype=torch.float64)
    s_e, s_e2 = torch.zeros(D, dtype=torch.float64), torch.zeros(D, dtype=torch.float64)
    fired_F = torch.zeros(F, dtype=torch.bool, device=device)
    for x_raw in _batches(x_raw_ND, batch_size):
        x_raw = x_raw.to(device, torch.float32)
        xhat_raw, z, x_n, xhat_n = adapter.reconstruct(x_raw)
        err_n = (x_n - xhat_n).double()
        sse_t = err_n.pow(2).sum(-1)
        var_t = (x_n.double() - mean_norm_D).pow(2).sum(-1)
        acc["n"] += x_raw.shape[0]
        acc["sse"] += sse_t.sum().item()
        acc["sse_raw"] += (x_raw - xhat_raw).double().pow(2).sum().item()
        acc["ev_legacy"] += (1 - sse_t / var_t).sum().item()
        nz = z != 0
        acc["l0"] += nz.sum().item()
        acc["l1"] += z.abs().double().sum().item()
        fired_F |= nz.any(0)
        xr, xh = x_raw.double(), xhat_raw.double()
        nx, nxh = xr.norm(dim=-1), xh.norm(dim=-1)
        acc["cos"] += ((xr * xh).sum(-1) / (nx * nxh).clamp_min(1e-12)).sum().item()
        acc["l2_ratio"] += (nxh / torch.where(nx < 1e-4, torch.ones_like(nx), nx)).sum().item()
        acc["xhat_sq"] += nxh.pow(2).sum().item()
        acc["x_dot_xhat"] += (xr * xh).sum().item()
        xd = x_n.double().cpu()
        s_x += xd.sum(0)
        s_x2 += xd.pow(2).sum(0)
        e = err_n.cpu()
        s_e += e.sum(0)
        s_e2 += e.pow(2).sum(0)
    n = acc["n"]
    if n == 0:
        raise ValueError("No evaluation tokens.")
    var_x = (s_x2 / n - (s_x / n).pow(2)).sum().item()
    var_e = (s_e2 / n - (s_e / n).pow(2)).sum().item()
    alive = int(fired_F.sum().item())
    return {
        "explained_variance_legacy": acc["ev_legacy"] / n,
        "frac_variance_explained": 1 - var_e / var_x,
        "mse": acc["sse"] / n,
        "mse_raw": acc["sse_raw"] / n,
        "cossim": acc["cos"] / n,
        "l2_ratio": acc["l2_ratio"] / n,
        "relative_reconstruction_bias": acc["xhat_sq"] / acc["x_dot_xhat"],
        "l0": acc["l0"] / n,
        "l1": acc["l1"] / n,
        "alive": alive,
        "dead": F - alive,
        "frac_alive": alive / F,
        "d_sae": F,
        "n_tokens_reconstruction": int(n),
    }


# ============================================================================================
# Splice: KL divergence and CE loss with the SAE in the forward pass
# ============================================================================================
@dataclass
class SpliceData:
    """Model-side inputs of the splice metrics for N contexts of length S."""

    tokens_NS: Tensor  # int64
    keep_NS: Tensor  # bool: non-special positions (replaced, and averaged over)
    resid_NSD: Tensor  # float32: the layer output of the clean run
    ce_clean_NS: Tensor  # per-position CE of the next token (last position: 0, unused)
    ce_zero_NS: Tensor
    kl_zero_NS: Tensor
    folder: Path | None = None
    reused: bool = False

    @property
    def ce_mask_NS(self) -> Tensor:
        """Positions whose next-token prediction counts: non-special and not the last one."""
        m = self.keep_NS.clone()
        m[:, -1] = False
        return m


def _log_softmax(logits: Tensor) -> Tensor:
    return torch.log_softmax(logits.float(), dim=-1)


def _ce_per_position(logp_BSV: Tensor, tokens_BS: Tensor) -> Tensor:
    """-log p(token_{t+1}) at each position t; 0 at the last position."""
    ce = torch.zeros(tokens_BS.shape, dtype=torch.float32, device=logp_BSV.device)
    ce[:, :-1] = -logp_BSV[:, :-1].gather(-1, tokens_BS[:, 1:, None].to(logp_BSV.device))[..., 0]
    return ce


def _kl_per_position(logp_clean: Tensor, logp_new: Tensor) -> Tensor:
    """KL(clean || new) per position, summed over the vocabulary."""
    return torch.nn.functional.kl_div(logp_new, logp_clean, log_target=True,
                                      reduction="none").sum(-1)


@torch.no_grad()
def build_splice_data(model, tokens_NS: Tensor, layer: int, special_ids: Iterable[int],
                      cache_root: str | Path | None = None, fingerprint: str | None = None,
                      batch_contexts: int = 8, progress: bool = True,
                      massive_factor: float | None = None) -> SpliceData:
    """Run the model once on the splice contexts: the layer output, the clean and zero-ablated
    per-token CE, and the ablation KL; stored in (or reused from) `cache_root`.

    Positions kept for the splice and the averages: `tokens.keep_mask` (not special, and not a
    massive activation above `massive_factor` x the batch median norm, as in the cache)."""
    tokens_NS = tokens_NS.long().cpu()
    special = torch.tensor(sorted(set(int(i) for i in special_ids)), dtype=torch.long)
    identity = {**model_identity(model, fingerprint), "hook": f"blocks.{layer}.hook_resid_post",
                "tokens_sha256": tensor_sha(tokens_NS), "special_ids": special.tolist(),
                "ablation": "zero at non-special positions", "massive_factor": massive_factor}
    if cache_root is not None:
        hit = load_cached(cache_root, "splice", identity)
        if hit is not None:
            a = hit["arrays"]
            return SpliceData(torch.from_numpy(a["tokens"]).long(), torch.from_numpy(a["keep"]),
                              torch.from_numpy(a["resid"]), torch.from_numpy(a["ce_clean"]),
                              torch.from_numpy(a["ce_zero"]), torch.from_numpy(a["kl_zero"]),
                              folder=hit["folder"], reused=True)
    device = model_device(model)
    resid, keeps, ce_clean, ce_zero, kl_zero = [], [], [], [], []
    for i in tqdm(range(0, tokens_NS.shape[0], batch_contexts), disable=not progress,
                  desc="splice set (model)"):
        toks = tokens_NS[i : i + batch_contexts].to(device)
        r = layer_resid(model, toks, layer).float()
        keep = keep_mask(toks, r, special, massive_factor)
        keeps.append(keep.cpu())
        logp_c = _log_softmax(logits_from_layer(model, r, layer))
        r_zero = torch.where(keep[..., None], torch.zeros_like(r), r)
        logp_z = _log_softmax(logits_from_layer(model, r_zero, layer))
        resid.append(r.cpu())
        ce_clean.append(_ce_per_position(logp_c, toks).cpu())
        ce_zero.append(_ce_per_position(logp_z, toks).cpu())
        kl_zero.append(_kl_per_position(logp_c, logp_z).cpu())
        del logp_c, logp_z
    data = SpliceData(tokens_NS, torch.cat(keeps), torch.cat(resid), torch.cat(ce_clean),
                      torch.cat(ce_zero), torch.cat(kl_zero))
    if cache_root is not None:
        data.folder = save_cached(cache_root, "splice", identity, {
            "tokens": data.tokens_NS.numpy(), "keep": data.keep_NS.numpy(),
            "resid": data.resid_NSD.numpy(), "ce_clean": data.ce_clean_NS.numpy(),
            "ce_zero": data.ce_zero_NS.numpy(), "kl_zero": data.kl_zero_NS.numpy()})
    return data


@torch.no_grad()
def splice_metrics(model, data: SpliceData, adapters: Mapping[str, SAEAdapter], layer: int,
                   batch_contexts: int = 8, timer: Timer | None = None,
                   progress: bool = True) -> dict[str, dict[str, float]]:
    """KL and CE metrics for every SAE in `adapters` (name -> adapter), sharing one clean pass
    through the remaining layers per batch of contexts."""
    device = model_device(model)
    keep_all, ce_mask_all = data.keep_NS, data.ce_mask_NS
    n_kl, n_ce = keep_all.sum().item(), ce_mask_all.sum().item()
    if n_kl == 0 or n_ce == 0:
        raise ValueError("The splice set has no non-special positions.")
    sums = {name: {"kl": 0.0, "ce": 0.0} for name in adapters}
    clean_check = 0.0
    N = data.tokens_NS.shape[0]
    for i in tqdm(range(0, N, batch_contexts), disable=not progress, desc="splice (SAEs)"):
        sl = slice(i, i + batch_contexts)
        toks = data.tokens_NS[sl].to(device)
        keep = keep_all[sl].to(device)
        ce_mask = ce_mask_all[sl].to(device)
        x = data.resid_NSD[sl].to(device)
        t0 = time.perf_counter()
        logp_c = _log_softmax(logits_from_layer(model, x, layer))
        p_c = logp_c.exp()  # shared by every SAE of the batch
        clean_check += (_ce_per_position(logp_c, toks) * ce_mask).double().sum().item()
        if timer is not None:
            timer.model_side["clean logits (recomputed once per session)"] = (
                timer.model_side.get("clean logits (recomputed once per session)", 0.0)
                + time.perf_counter() - t0)
        for name, adapter in adapters.items():
            t0 = time.perf_counter()
            xhat, *_ = adapter.reconstruct(x.to(adapter.W_dec.device))
            x_spliced = torch.where(keep[..., None], xhat.to(device, x.dtype), x)
            logp_s = _log_softmax(logits_from_layer(model, x_spliced, layer))
            kl = torch.einsum("bsv,bsv->bs", p_c, logp_c - logp_s)  # KL(clean || spliced)
            sums[name]["kl"] += (kl * keep).double().sum().item()
            sums[name]["ce"] += (_ce_per_position(logp_s, toks) * ce_mask).double().sum().item()
            del logp_s, kl
            if timer is not None:
                timer.add_sae(name, "splice KL/CE", time.perf_counter() - t0)
        del logp_c, p_c
    ce_clean = (data.ce_clean_NS * ce_mask_all).double().sum().item() / n_ce
    if not math.isclose(clean_check / n_ce, ce_clean, rel_tol=1e-4, abs_tol=1e-5):
        raise RuntimeError(
            f"Clean CE recomputed from the cached layer output ({clean_check / n_ce:.6f}) differs "
            f"from the cached clean CE ({ce_clean:.6f}): the model changed; delete {data.folder}.")
    ce_zero = (data.ce_zero_NS * ce_mask_all).double().sum().item() / n_ce
    kl_zero = (data.kl_zero_NS * keep_all).double().sum().item() / n_kl
    out = {}
    for name, s in sums.items():
        kl_sae, ce_sae = s["kl"] / n_kl, s["ce"] / n_ce
        out[name] = {
            "kl_div_with_sae": kl_sae,
            "kl_div_with_ablation": kl_zero,
            "kl_div_score": (kl_zero - kl_sae) / kl_zero,
            "ce_loss_with_sae": ce_sae,
            "ce_loss_without_sae": ce_clean,
            "ce_loss_with_ablation": ce_zero,
            "ce_loss_score": (ce_zero - ce_sae) / (ce_zero - ce_clean),
            "n_tokens_splice": int(n_kl),
        }
    return out


# ============================================================================================
# Finding the trained SAEs
# ============================================================================================
@dataclass
class SAERun:
    """One SAE to evaluate: an export of ours (usually under `profile.sae_dir`) or, with
    `external` set, a SAELens-format SAE (`hsae_utils.external`)."""

    run: str  # unique name: the folder relative to sae_dir, e.g. "topk/seed42"
    config: str  # the configuration (run folder name), e.g. "topk"
    seed: int | None
    label: str
    architecture: str
    folder: Path | None  # None only for an external SAE from the hub
    metadata: dict = field(default_factory=dict)
    external: str | None = None  # a SAELens folder or "release:sae_id"; None: our export


def load_adapter(run: SAERun, device: str | torch.device = "cpu", profile: Profile | None = None,
                 normalization: Mapping[str, Any] | None = None) -> SAEAdapter:
    """The SAE of `run` on raw activations. An external SAE is checked against `profile` and put
    in the normalized space `normalization` (the activation cache's), where ours live."""
    if run.external is not None:
        from .external import load_external_adapter

        return load_external_adapter(run.external, device, profile, normalization)
    from .checkpoint import load_sae

    return SAEAdapter(load_sae(run.folder, device=device))


def find_saes(sae_dir: str | Path) -> list[SAERun]:
    """Every complete export (a folder with hsae_config.json) under `sae_dir`, in the paper's
    run order when the names are known (hsae_utils.experiments.RUNS), then alphabetically."""
    from .checkpoint import HSAE_CONFIG, read_export_info

    sae_dir = Path(sae_dir)
    if not sae_dir.is_dir():
        return []
    try:
        from .experiments import RUNS

        order = {name: i for i, name in enumerate(RUNS)}
    except Exception:  # the experiments module is optional here
        order = {}
    runs = []
    for cfg_path in sorted(sae_dir.rglob(HSAE_CONFIG)):
        folder = cfg_path.parent
        try:
            info = read_export_info(folder)
        except (ValueError, OSError):
            continue
        meta = info.get("metadata") or {}
        rel = folder.relative_to(sae_dir).as_posix()
        seed = meta.get("seed")
        if seed is None:
            m = re.search(r"seed(\d+)", folder.name)
            seed = int(m.group(1)) if m else None
        config = folder.parent.name if folder.parent != sae_dir else folder.name
        if folder.parent == sae_dir and seed is None:
            config = meta.get("run", folder.name)
        runs.append(SAERun(run=rel, config=config, seed=seed,
                           label=meta.get("label") or config,
                           architecture=info.get("architecture", ""), folder=folder,
                           metadata=meta))
    base = lambda r: r.config.split("__")[0]  # noqa: E731
    runs.sort(key=lambda r: (order.get(base(r), len(order)), r.config, r.seed or 0))
    return runs


# ============================================================================================
# Orchestration
# ============================================================================================
FAMILIES = ("core", "absorption", "probing")


@dataclass
class EvaluationResult:
    results: Any  # tidy pandas DataFrame: run, config, seed, metric, value
    runs: list[SAERun]
    absorption_letters: Any  # per-letter DataFrame (run, config, seed, letter, ...)
    probing_tasks: Any  # per-dataset DataFrame
    notes: list[str]
    timer: Timer

    def summary(self, metrics: Iterable[str] | None = None):
        """Mean (and std over seeds) per configuration of headline metrics, configs as rows."""
        df = self.results
        df = df[~df["metric"].str.contains(":")]
        if metrics is not None:
            df = df[df["metric"].isin(list(metrics))]
        order = list(dict.fromkeys(r.config for r in self.runs))
        table = df.pivot_table(index="config", columns="metric", values="value", aggfunc="mean")
        return table.reindex([c for c in order if c in table.index])


def eval_cache_root(profile: Profile) -> Path:
    return profile.output_dir / "eval_cache"


def _tidy_rows(run: SAERun, metrics: Mapping[str, Any]) -> list[dict]:
    """Numeric, finite metrics as rows (an undefined metric, e.g. a letter without probe-positive
    test words, is left out rather than written as NaN)."""
    rows = []
    for k, v in metrics.items():
        if isinstance(v, (bool, np.bool_)):
            v = float(v)
        if isinstance(v, (int, float, np.integer, np.floating)) and math.isfinite(v):
            rows.append({"run": run.run, "config": run.config, "seed": run.seed, "metric": k,
                         "value": float(v)})
    return rows


def evaluate_profile(profile: Profile, runs: list[SAERun] | None = None, model=None,
                     families: Iterable[str] = FAMILIES, progress: bool = True,
                     device: str | None = None) -> EvaluationResult:
    """Evaluate every SAE of `runs` (default: all under `profile.sae_dir`) on the profile's
    validation split, absorption task and probing tasks.

    The model-side work is done (or read from `eval_cache`) once; per SAE only the SAE passes and
    the splice through the layers after the hook run. Prints the time split at the end.
    """
    import pandas as pd

    from . import absorption as absorption_mod
    from . import probing as probing_mod
    from .activations import ActivationStore

    families = tuple(families)
    unknown = set(families) - set(FAMILIES)
    if unknown:
        raise ValueError(f"Unknown metric families {sorted(unknown)}; valid: {FAMILIES}.")
    runs = find_saes(profile.sae_dir) if runs is None else runs
    timer = Timer()
    notes: list[str] = []
    if not runs:
        empty = pd.DataFrame(columns=["run", "config", "seed", "metric", "value"])
        return EvaluationResult(empty, [], pd.DataFrame(), pd.DataFrame(), ["no SAEs found"], timer)

    device = device or profile.resolve_device()
    root = eval_cache_root(profile)
    with timer.model("load model"):
        if model is None:
            from .model import load_model

            model = load_model(profile, device=device)
        from .model import model_fingerprint

        fingerprint = model_fingerprint(profile)
    layer = profile.layer

    valid = ActivationStore(profile.cache_dir / "validation")
    with timer.model("read validation activations"):
        x_valid = torch.cat([torch.from_numpy(np.load(valid.folder / s["file"]))
                             for s in valid.manifest["shards"]])  # raw rows, special tokens out
        mean_valid = x_valid.double().mean(0)

    splice = absorption_data = probing_data = None
    if "core" in families:
        with timer.model("splice set: layer output, clean / zero-ablated CE and KL"):
            tokens = valid.tokens()[: profile.n_eval_contexts]
            splice = build_splice_data(model, tokens, layer, valid.manifest["special_token_ids"],
                                       massive_factor=valid.manifest.get("massive_norm_factor"),
                                       cache_root=root, fingerprint=fingerprint,
                                       batch_contexts=profile.eval_batch_contexts,
                                       progress=progress)
        notes.append(f"splice set: {'reused' if splice.reused else 'built'} {splice.folder}")
    if "absorption" in families:
        with timer.model("absorption: word activations and ground-truth probe"):
            absorption_data = absorption_mod.build_absorption_data(
                model, profile, cache_root=root, fingerprint=fingerprint, progress=progress)
        notes.append(f"absorption data: {'reused' if absorption_data.reused else 'built'} "
                     f"{absorption_data.folder}")
        notes.extend(absorption_data.notes)
    if "probing" in families:
        with timer.model("probing: text activations and LLM probes"):
            probing_data = probing_mod.build_probing_data(
                model, profile, cache_root=root, fingerprint=fingerprint, progress=progress)
        notes.append(f"probing data: {'reused' if probing_data.reused else 'built'} "
                     f"{probing_data.folder}")

    rows, letter_rows, task_rows, adapters = [], [], [], {}
    for run in tqdm(runs, disable=not progress, desc="SAEs"):
        with timer.sae(run.run, "load"):
            adapter = load_adapter(run, device, profile, valid.manifest["normalization"])
        adapters[run.run] = adapter
        metrics: dict[str, Any] = {}
        if "core" in families:
            with timer.sae(run.run, "reconstruction"):
                metrics.update(reconstruction_metrics(adapter, x_valid, mean_raw_D=mean_valid))
        if absorption_data is not None:
            with timer.sae(run.run, "absorption"):
                summary, per_letter = absorption_mod.evaluate_absorption(
                    adapter, absorption_data, seed=profile.eval_seed)
            metrics.update(summary)
            for r in per_letter:
                letter_rows.append({"run": run.run, "config": run.config, "seed": run.seed, **r})
                metrics[f"absorption_fraction:{r['letter']}"] = r["mean_absorption_fraction"]
                metrics[f"full_absorption:{r['letter']}"] = r["full_absorption_rate"]
        if probing_data is not None:
            with timer.sae(run.run, "sparse probing"):
                summary, per_task = probing_mod.evaluate_sparse_probing(
                    adapter, probing_data, k_values=profile.probe_k_values)
            metrics.update(summary)
            for r in per_task:
                task_rows.append({"run": run.run, "config": run.config, "seed": run.seed, **r})
                for k, v in r.items():
                    if k.endswith("accuracy"):
                        metrics[f"{k}:{r['dataset']}"] = v
        rows.append((run, metrics))
    if splice is not None:
        spliced = splice_metrics(model, splice, adapters, layer,
                                 batch_contexts=profile.eval_batch_contexts, timer=timer,
                                 progress=progress)
        for run, metrics in rows:
            metrics.update(spliced[run.run])
    tidy = [row for run, metrics in rows for row in _tidy_rows(run, metrics)]
    result = EvaluationResult(
        results=pd.DataFrame(tidy, columns=["run", "config", "seed", "metric", "value"]),
        runs=list(runs),
        absorption_letters=pd.DataFrame(letter_rows),
        probing_tasks=pd.DataFrame(task_rows),
        notes=notes,
        timer=timer,
    )
    if progress:
        print(timer.summary())
    return result


def save_results(result: EvaluationResult, results_dir: str | Path,
                 profile: Profile | None = None) -> dict[str, Path]:
    """Write the tidy table (CSV + JSON) and the detail tables to `results_dir`."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": results_dir / "evaluation.csv", "json": results_dir / "evaluation.json",
             "runs": results_dir / "evaluation_runs.csv",
             "absorption_letters": results_dir / "absorption_per_letter.csv",
             "probing_tasks": results_dir / "sparse_probing_per_dataset.csv",
             "timing": results_dir / "evaluation_timing.json"}
    import pandas as pd

    def write_csv(df, path):
        with atomic_path(path) as tmp:
            df.to_csv(tmp, index=False)

    write_csv(result.results, paths["csv"])
    write_json_atomic(paths["json"], {
        "profile": profile.name if profile else None,
        "columns": ["run", "config", "seed", "metric", "value"],
        "rows": result.results.to_dict(orient="records"),
        "notes": result.notes,
    })
    write_csv(pd.DataFrame([{"run": r.run, "config": r.config, "seed": r.seed, "label": r.label,
                             "architecture": r.architecture, "folder": str(r.folder or ""),
                             "external": r.external or ""}
                            for r in result.runs]), paths["runs"])
    write_csv(result.absorption_letters, paths["absorption_letters"])
    write_csv(result.probing_tasks, paths["probing_tasks"])
    write_json_atomic(paths["timing"], result.timer.to_dict())
    return paths


# ============================================================================================
# Tables and plots for notebook 08
# ============================================================================================
HEADLINE_METRICS = (
    "explained_variance_legacy", "frac_variance_explained", "mse", "l0", "frac_alive",
    "kl_div_with_sae", "kl_div_score", "ce_loss_score", "mean_absorption_fraction_score",
    "mean_full_absorption_score", "llm_test_accuracy", "llm_top_1_test_accuracy",
    "sae_top_1_test_accuracy", "sae_top_5_test_accuracy", "sae_top_20_test_accuracy",
)


def config_labels(runs: Iterable[SAERun]) -> dict[str, str]:
    return {r.config: r.label for r in runs}


def summary_table(result: EvaluationResult, metrics: Iterable[str] = HEADLINE_METRICS,
                  digits: int = 3):
    """Configurations x metrics, "mean ± std over seeds" (std omitted for a single seed)."""
    import pandas as pd

    df = result.results
    metrics = [m for m in metrics if m in set(df["metric"])]
    if df.empty or not metrics:
        return pd.DataFrame()
    g = df[df["metric"].isin(metrics)].groupby(["config", "metric"])["value"]
    mean, std, n = g.mean().unstack(), g.std().unstack(), g.count().unstack()
    fmt = lambda m, s, k: (f"{m:.{digits}f}" if k < 2 or not np.isfinite(s)  # noqa: E731
                           else f"{m:.{digits}f} ± {s:.{digits}f}")
    table = pd.DataFrame({c: [fmt(mean.loc[i, c], std.loc[i, c], n.loc[i, c]) for i in mean.index]
                          for c in metrics}, index=mean.index)
    order = list(dict.fromkeys(r.config for r in result.runs))
    table = table.reindex([c for c in order if c in table.index])
    labels = config_labels(result.runs)
    table.insert(0, "seeds", [int(n.loc[c].max()) for c in table.index])
    table.index = [labels.get(c, c) for c in table.index]
    table.index.name = "configuration"
    return table


def _per_config(result: EvaluationResult, metric: str):
    df = result.results[result.results["metric"] == metric]
    order = [c for c in dict.fromkeys(r.config for r in result.runs) if c in set(df["config"])]
    return order, [df[df["config"] == c]["value"].to_numpy() for c in order]


def _bars(ax, result: EvaluationResult, metric: str, title: str | None = None) -> None:
    order, values = _per_config(result, metric)
    labels = config_labels(result.runs)
    x = np.arange(len(order))
    ax.bar(x, [v.mean() for v in values], color="C0", alpha=0.6)
    for i, v in enumerate(values):
        ax.plot(np.full(len(v), i), v, "k.", ms=4)
    ax.set_xticks(x, [labels.get(c, c) for c in order], rotation=60, ha="right", fontsize=8)
    ax.set_title(title or metric, fontsize=10)


def plot_core(result: EvaluationResult):
    """Bars (mean over seeds, dots = seeds) of the core metrics per configuration."""
    import matplotlib.pyplot as plt

    if result.results.empty:
        print("No results to plot.")
        return None
    panels = [("explained_variance_legacy", "explained variance (legacy)"),
              ("frac_variance_explained", "variance explained (variance-based)"),
              ("l0", "L0"), ("frac_alive", "fraction of latents alive"),
              ("kl_div_score", "KL score"), ("ce_loss_score", "CE loss recovered")]
    panels = [p for p in panels if p[0] in set(result.results["metric"])]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3.4), squeeze=False)
    for ax, (m, t) in zip(axes[0], panels):
        _bars(ax, result, m, t)
    fig.tight_layout()
    return fig


def plot_probing_and_absorption(result: EvaluationResult):
    """Sparse-probing accuracy (SAE top-k, LLM lines) and absorption scores per configuration."""
    import matplotlib.pyplot as plt

    present = set(result.results["metric"]) if not result.results.empty else set()
    ks = sorted(int(m.split("_")[2]) for m in present
                if m.startswith("sae_top_") and m.endswith("_test_accuracy"))
    absorb = [m for m in ("mean_absorption_fraction_score", "mean_full_absorption_score")
              if m in present]
    if not ks and not absorb:
        print("No probing or absorption results to plot.")
        return None
    n = (1 if ks else 0) + len(absorb)
    fig, axes = plt.subplots(1, n, figsize=(5 + 3 * (n - 1), 3.4), squeeze=False)
    axes = list(axes[0])
    labels = config_labels(result.runs)
    if ks:
        ax = axes.pop(0)
        width = 0.8 / len(ks)
        for j, k in enumerate(ks):
            order, values = _per_config(result, f"sae_top_{k}_test_accuracy")
            ax.bar(np.arange(len(order)) + (j - (len(ks) - 1) / 2) * width,
                   [v.mean() for v in values], width, label=f"SAE top-{k}")
        for m, style in (("llm_test_accuracy", "-"), ("llm_top_1_test_accuracy", "--")):
            if m in present:
                ax.axhline(result.results[result.results["metric"] == m]["value"].mean(),
                           color="k", ls=style, lw=1, label=m.replace("_test_accuracy", ""))
        ax.set_xticks(np.arange(len(order)), [labels.get(c, c) for c in order], rotation=60,
                      ha="right", fontsize=8)
        ax.set_ylim(0.4, 1.0)
        ax.set_title("sparse probing accuracy", fontsize=10)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    for ax, m in zip(axes, absorb):
        _bars(ax, result, m, m.replace("_", " ").replace("mean ", ""))
    fig.tight_layout()
    return fig
