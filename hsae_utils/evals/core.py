"""Core metrics (SAEBench `evals/core`, SAELens `evals.py`, dictionary_learning): reconstruction
and sparsity on activation rows, and the splice of the SAE into the forward pass.

Reconstruction, on every non-special token of the validation split (x: the layer's residual).
- `explained_variance_legacy`: mean over tokens of 1 - ||x - xhat||^2 / ||x - mean(x)||^2, the
  per-token formula the SAEBench paper reported ("legacy" in SAEBench). mean(x) is the mean over
  the evaluation tokens (SAEBench: over a batch of 16 x 128 tokens).
- `frac_variance_explained`: 1 - sum_d var(x_d - xhat_d) / sum_d var(x_d), dictionary_learning's
  variance-based formula, under its name there (variance around the mean; SAEBench's newer
  `explained_variance` measures it around zero and is known to be wrong: SAELens PRs #665 / #710,
  SAEBench issue #76).
- `explained_variance`: SAELens 6's corrected formula (`evals.ExplainedVarianceCalculator`),
  1 - E||x - xhat||^2 / (E||x||^2 - ||E x||^2), raw space; it differs from
  `frac_variance_explained` by the squared mean error in the numerator.
- `mse`: SAEBench's "mse" (evals/core/main.py): raw units, each token's summed squared error
  divided by the token count of its evaluation batch, averaged over tokens; its batches are 16
  contexts x 128 tokens less the special ones, ours `saebench_batch_tokens` consecutive rows
  (default 2,048). Depends on that batch size, like SAEBench's.
- `mse_raw`: per-token sum of squared errors averaged over tokens, raw units (SAELens 6's "mse",
  the training-loss convention); `mse_norm`: the same in the normalized space the SAE was
  trained in (what this table called `mse` before).
- `cossim`, `l2_ratio` (||xhat|| / ||x||, per token, averaged) and
  `relative_reconstruction_bias` (E||xhat||^2 / E<x, xhat>) in raw space.
- `l0`: mean number of non-zero latents per token; `l1`: mean sum of |z| per token.
- `alive`, `frac_alive`, `dead`: latents that fire at least once on the evaluation tokens
  (dictionary_learning `frac_alive`), and the rest.

Splice, on the first `profile.n_eval_contexts` validation contexts: the layer output of every
non-special position is replaced by the SAE reconstruction and only the layers after the hook,
the final norm and the unembedding run again (`forward.hidden_from_layer`, then
`forward.logits_from_hidden` in chunks of positions: `splice_losses`). Special positions
(BOS, document boundaries) keep their activation and are left out of every average, as is every
prediction made at a special position (SAELens / SAEBench with `ignore_tokens` and
`exclude_special_tokens_from_reconstruction`). The ablation baseline zeroes every position, BOS
included, as SAELens' and SAEBench's `get_recons_loss` do (`ablation="all"`, the default;
`ablation="non_special"` zeroes only the replaced positions, our earlier baseline).
- `kl_div_with_sae`, `kl_div_with_ablation`: per-token KL(clean || spliced), averaged.
- `kl_div_score` = (KL_ablation - KL_sae) / KL_ablation.
- `ce_loss_without_sae`, `ce_loss_with_sae`, `ce_loss_with_ablation`: next-token cross-entropy.
- `ce_loss_score` (fraction of CE loss recovered) = (CE_abl - CE_sae) / (CE_abl - CE_clean).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import torch
from torch import Tensor
from tqdm.auto import tqdm

from hsae_utils.data.forward import hidden_from_layer, layer_resid, logits_from_hidden
from hsae_utils.data.tokens import keep_mask
from hsae_utils.evals.adapter import SAEAdapter
from hsae_utils.evals.cache import (
    load_cached,
    model_device,
    model_identity,
    save_cached,
    tensor_sha,
)
from hsae_utils.timing import Timer


def _batches(x: Tensor | Iterable[Tensor], batch_size: int) -> Iterator[Tensor]:
    if isinstance(x, Tensor):
        for i in range(0, x.shape[0], batch_size):
            yield x[i : i + batch_size]
    else:
        for chunk in x:
            for i in range(0, chunk.shape[0], batch_size):
                yield chunk[i : i + batch_size]


@torch.no_grad()
def reconstruction_metrics(
    adapter: SAEAdapter,
    x_raw_ND: Tensor,
    batch_size: int = 4096,
    mean_raw_D: Tensor | None = None,
    saebench_batch_tokens: int = 16 * 128,
) -> dict[str, float]:
    """Reconstruction and sparsity metrics on raw activation rows (special tokens already
    removed). See the module docstring for the definitions."""
    device = adapter.W_dec.device
    if mean_raw_D is None:
        mean_raw_D = x_raw_ND.double().mean(0)
    mean_norm_D = adapter.normalize(mean_raw_D.float()[None].to(device)).double()[0]
    F = adapter.d_sae
    D = x_raw_ND.shape[1]
    acc = {
        k: 0.0
        for k in (
            "n",
            "sse",
            "sse_raw",
            "ev_legacy",
            "l0",
            "l1",
            "cos",
            "l2_ratio",
            "xhat_sq",
            "x_dot_xhat",
        )
    }
    s_x, s_x2 = torch.zeros(D, dtype=torch.float64), torch.zeros(D, dtype=torch.float64)
    s_e, s_e2 = torch.zeros(D, dtype=torch.float64), torch.zeros(D, dtype=torch.float64)
    fired_F = torch.zeros(F, dtype=torch.bool, device=device)
    sse_raw_N, s_xr, sq_xr = [], torch.zeros(D, dtype=torch.float64), 0.0
    for x_raw in _batches(x_raw_ND, batch_size):
        x_raw = x_raw.to(device, torch.float32)
        xhat_raw, z, x_n, xhat_n = adapter.reconstruct(x_raw)
        # each fp64 copy made once per batch and reused (the same values as converting per use)
        xr, xh, xd = x_raw.double(), xhat_raw.double(), x_n.double()
        err_n = (x_n - xhat_n).double()
        sse_t = err_n.pow(2).sum(-1)
        var_t = (xd - mean_norm_D).pow(2).sum(-1)
        acc["n"] += x_raw.shape[0]
        acc["sse"] += sse_t.sum().item()
        sse_raw_t = (x_raw - xhat_raw).double().pow(2).sum(-1)
        sse_raw_N.append(sse_raw_t.cpu())
        acc["sse_raw"] += sse_raw_t.sum().item()
        s_xr += xr.sum(0).cpu()
        sq_xr += xr.pow(2).sum().item()
        acc["ev_legacy"] += (1 - sse_t / var_t).sum().item()
        nz = z != 0
        acc["l0"] += nz.sum().item()
        acc["l1"] += z.abs().double().sum().item()
        fired_F |= nz.any(0)
        nx, nxh = xr.norm(dim=-1), xh.norm(dim=-1)
        x_xh = xr * xh
        acc["cos"] += (x_xh.sum(-1) / (nx * nxh).clamp_min(1e-12)).sum().item()
        acc["l2_ratio"] += (nxh / torch.where(nx < 1e-4, torch.ones_like(nx), nx)).sum().item()
        acc["xhat_sq"] += nxh.pow(2).sum().item()
        acc["x_dot_xhat"] += x_xh.sum().item()
        xd = xd.cpu()
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
    # SAEBench's mse: token t of evaluation batch b contributes sse_t / n_b
    sse_raw_N = torch.cat(sse_raw_N)
    n_b_N = torch.full_like(sse_raw_N, float(saebench_batch_tokens))
    last = (int(n) // saebench_batch_tokens) * saebench_batch_tokens
    n_b_N[last:] = int(n) - last
    total_var_raw = sq_xr / n - (s_xr / n).pow(2).sum().item()
    return {
        "explained_variance_legacy": acc["ev_legacy"] / n,
        "frac_variance_explained": 1 - var_e / var_x,
        "explained_variance": 1 - (acc["sse_raw"] / n) / total_var_raw,
        "mse": (sse_raw_N / n_b_N).mean().item(),
        "mse_raw": acc["sse_raw"] / n,
        "mse_norm": acc["sse"] / n,
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


# Rows of [tokens, vocab] logits held at once: the blocks after the hook run on whole contexts,
# the final norm, unembedding, softmax, KL and CE on this many positions at a time, so a batch of
# contexts needs (positions x vocab) memory only per chunk (Gemma-2: 512 x 256k x 4 B = 0.5 GB per
# copy, a few copies live, instead of 16 x 128 x 256k x 4 B = 2.1 GB per copy unchunked).
LOGIT_CHUNK_TOKENS = 512


@torch.no_grad()
def splice_losses(
    model,
    clean_BSD: Tensor,
    others: list[Tensor],
    tokens_BS: Tensor,
    layer: int,
    chunk_tokens: int = LOGIT_CHUNK_TOKENS,
    timers: list | None = None,
) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """Per-position next-token CE of the clean run, and CE and KL(clean || other) for each
    residual in `others` put at `blocks.{layer}.hook_resid_post` ([B, S] each; the last position
    is 0). The logits are computed `chunk_tokens` positions at a time; the result equals the
    unchunked computation up to float rounding. `timers[i]` (a list) collects the seconds spent on
    `others[i]`."""
    B, S = tokens_BS.shape
    t0 = time.perf_counter()
    h_clean = hidden_from_layer(model, clean_BSD, layer).flatten(0, 1)
    clean_time = time.perf_counter() - t0  # only this call's clean work (timers may hold more)
    h_others = []
    for i, x in enumerate(others):
        t1 = time.perf_counter()
        h_others.append(hidden_from_layer(model, x, layer).flatten(0, 1))
        if timers is not None:
            timers[i].append(time.perf_counter() - t1)
    # the next token of every position (the last position's is a dummy, its CE is zeroed)
    target = torch.cat([tokens_BS[:, 1:], tokens_BS[:, :1]], 1).flatten().to(h_clean.device)
    ce_clean = torch.zeros(B * S, device=h_clean.device)
    ce_o = [torch.zeros_like(ce_clean) for _ in others]
    kl_o = [torch.zeros_like(ce_clean) for _ in others]
    for a in range(0, B * S, chunk_tokens):
        rows = slice(a, a + chunk_tokens)
        t0 = time.perf_counter()
        logp_c = _log_softmax(logits_from_hidden(model, h_clean[rows]))
        p_c = logp_c.exp()
        ce_clean[rows] = -logp_c.gather(-1, target[rows, None])[:, 0]
        clean_time += time.perf_counter() - t0
        for i, h in enumerate(h_others):
            t1 = time.perf_counter()
            logp = _log_softmax(logits_from_hidden(model, h[rows]))
            ce_o[i][rows] = -logp.gather(-1, target[rows, None])[:, 0]
            # logp_c - logp written over logp: the same values without a [chunk, vocab] copy
            kl_o[i][rows] = torch.einsum("nv,nv->n", p_c, torch.sub(logp_c, logp, out=logp))
            del logp
            if timers is not None:
                timers[i].append(time.perf_counter() - t1)
        del logp_c, p_c

    def per_position(x_N: Tensor, ce: bool) -> Tensor:
        x_BS = x_N.view(B, S)
        if ce:
            x_BS[:, -1] = 0
        return x_BS

    if timers is not None:
        timers.append([clean_time])  # the clean share, last
    return (
        per_position(ce_clean, True),
        [per_position(c, True) for c in ce_o],
        [per_position(k, False) for k in kl_o],
    )


ABLATIONS = {
    "all": "zero at every position (SAEBench)",
    "non_special": "zero at non-special positions",
}


@torch.no_grad()
def build_splice_data(
    model,
    tokens_NS: Tensor,
    layer: int,
    special_ids: Iterable[int],
    cache_root: str | Path | None = None,
    fingerprint: str | None = None,
    batch_contexts: int = 8,
    progress: bool = True,
    massive_factor: float | None = None,
    ablation: str = "all",
    rebuild: bool = False,
) -> SpliceData:
    """Run the model once on the splice contexts: the layer output, the clean and zero-ablated
    per-token CE, and the ablation KL; stored in (or reused from) `cache_root`.

    Positions kept for the splice and the averages: `tokens.keep_mask` (not special, and not a
    massive activation above `massive_factor` x the batch median norm, as in the cache).
    `ablation`: "all" zeroes every position (SAELens / SAEBench), "non_special" only the kept.
    `rebuild`: recompute and overwrite the cached entry."""
    if ablation not in ABLATIONS:
        raise ValueError(f"ablation must be one of {sorted(ABLATIONS)}, got {ablation!r}.")
    tokens_NS = tokens_NS.long().cpu()
    special = torch.tensor(sorted(set(int(i) for i in special_ids)), dtype=torch.long)
    identity = {
        **model_identity(model, fingerprint),
        "hook": f"blocks.{layer}.hook_resid_post",
        "tokens_sha256": tensor_sha(tokens_NS),
        "special_ids": special.tolist(),
        "ablation": ABLATIONS[ablation],
        "massive_factor": massive_factor,
    }
    if cache_root is not None:
        hit = load_cached(cache_root, "splice", identity, rebuild=rebuild)
        if hit is not None:
            a = hit["arrays"]
            return SpliceData(
                torch.from_numpy(a["tokens"]).long(),
                torch.from_numpy(a["keep"]),
                torch.from_numpy(a["resid"]),
                torch.from_numpy(a["ce_clean"]),
                torch.from_numpy(a["ce_zero"]),
                torch.from_numpy(a["kl_zero"]),
                folder=hit["folder"],
                reused=True,
            )
    device = model_device(model)
    resid, keeps, ce_clean, ce_zero, kl_zero = [], [], [], [], []
    for i in tqdm(
        range(0, tokens_NS.shape[0], batch_contexts),
        disable=not progress,
        desc="splice set (model)",
    ):
        toks = tokens_NS[i : i + batch_contexts].to(device)
        r = layer_resid(model, toks, layer).float()
        keep = keep_mask(toks, r, special, massive_factor)
        keeps.append(keep.cpu())
        r_zero = (
            torch.zeros_like(r)
            if ablation == "all"
            else torch.where(keep[..., None], torch.zeros_like(r), r)
        )
        c_clean, (c_zero,), (k_zero,) = splice_losses(model, r, [r_zero], toks, layer)
        resid.append(r.cpu())
        ce_clean.append(c_clean.cpu())
        ce_zero.append(c_zero.cpu())
        kl_zero.append(k_zero.cpu())
    data = SpliceData(
        tokens_NS,
        torch.cat(keeps),
        torch.cat(resid),
        torch.cat(ce_clean),
        torch.cat(ce_zero),
        torch.cat(kl_zero),
    )
    if cache_root is not None:
        data.folder = save_cached(
            cache_root,
            "splice",
            identity,
            {
                "tokens": data.tokens_NS.numpy(),
                "keep": data.keep_NS.numpy(),
                "resid": data.resid_NSD.numpy(),
                "ce_clean": data.ce_clean_NS.numpy(),
                "ce_zero": data.ce_zero_NS.numpy(),
                "kl_zero": data.kl_zero_NS.numpy(),
            },
        )
    return data


@torch.no_grad()
def splice_metrics(
    model,
    data: SpliceData,
    adapters: Mapping[str, SAEAdapter],
    layer: int,
    batch_contexts: int = 8,
    timer: Timer | None = None,
    progress: bool = True,
) -> dict[str, dict[str, float]]:
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
        # every SAE's spliced residual of the batch at once: the clean logits of each chunk of
        # positions are then computed once and shared
        spliced = []
        timers: list[list[float]] = [[] for _ in adapters]
        for j, adapter in enumerate(adapters.values()):
            t0 = time.perf_counter()
            xhat, *_ = adapter.reconstruct(x.to(adapter.W_dec.device))
            spliced.append(torch.where(keep[..., None], xhat.to(device, x.dtype), x))
            timers[j].append(time.perf_counter() - t0)
        c_clean, ces, kls = splice_losses(model, x, spliced, toks, layer, timers=timers)
        clean_check += (c_clean * ce_mask).double().sum().item()
        for j, name in enumerate(adapters):
            sums[name]["kl"] += (kls[j] * keep).double().sum().item()
            sums[name]["ce"] += (ces[j] * ce_mask).double().sum().item()
        if timer is not None:
            key = "clean logits (recomputed once per session)"
            timer.model_side[key] = timer.model_side.get(key, 0.0) + sum(timers[-1])
            for j, name in enumerate(adapters):
                timer.add_sae(name, "splice KL/CE", sum(timers[j]))
        del spliced, ces, kls
    ce_clean = (data.ce_clean_NS * ce_mask_all).double().sum().item() / n_ce
    if not math.isclose(clean_check / n_ce, ce_clean, rel_tol=1e-4, abs_tol=1e-5):
        raise RuntimeError(
            f"Clean CE recomputed from the cached layer output ({clean_check / n_ce:.6f}) differs "
            f"from the cached clean CE ({ce_clean:.6f}): the model changed; delete {data.folder}."
        )
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
