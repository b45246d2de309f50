"""Per-latent statistics of an SAE on the profile's validation tokens, as feature dashboards show
them (sae_vis / sae-dashboard, SAEBench's autointerp sampling), in the data dict that
`features.browser.write_browser` renders (the contract is in `feature_data`'s docstring).

A few passes over the validation rows, each encoding chunks of rows and keeping only summaries
(no [tokens, latents] matrix is stored):
1. firing counts, sums and maxima, the top-k activations (`torch.topk` merged chunk by chunk) and
   the co-firing of each latent with its nearest latents by decoder cosine;
2. a fine histogram (`FINE_BINS` bins from 0 to the latent's maximum) of the nonzero activations,
   from which the quantiles (to within max / `FINE_BINS`) and the coarse histogram come;
3. a seeded random sample of rows in each activation-quantile interval (streaming top-k of a
   random key among the rows in the interval);
4. the latent's activation on the tokens around each chosen row, for its context.
Density is the fraction of tokens on which the latent is nonzero, log10 as in SAEBench / Anthropic.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

FINE_BINS = 1024
HIST_BINS = 32  # FINE_BINS must be a multiple
# Latents of all rows are computed once and held when they take at most this (local: 16k tokens x
# 576 latents = 37 MB); larger (paper, wide public SAEs) they are encoded again in each pass.
MAX_CODE_BYTES = 1 << 30


@dataclass(frozen=True)
class StatsParams:
    n_top: int = 10  # max-activating contexts per latent
    intervals: tuple[float, ...] = (0.0, 0.5, 0.75, 0.9, 1.0)  # quantile bounds of the samples
    n_per_interval: int = 4
    left: int = 8  # context tokens shown before the highlighted one
    right: int = 3  # and after it
    n_neighbours: int = 5
    n_logits: int = 10
    chunk: int = 4096  # rows per step of a pass
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


class Codes:
    """The latents [rows, F] of raw rows `x_ND`, read by index: held in memory when they fit in
    `max_bytes`, else encoded on demand."""

    def __init__(
        self,
        encode: Callable[[Tensor], Tensor],
        x_ND: Tensor,
        chunk: int = 4096,
        max_bytes: int | None = None,
        progress: bool = False,
    ):
        max_bytes = MAX_CODE_BYTES if max_bytes is None else max_bytes
        self.encode, self.x_ND = encode, x_ND
        self.n_latents = int(encode(x_ND[:1]).shape[1])
        self.z_NF = None
        if x_ND.shape[0] * self.n_latents * 4 <= max_bytes:
            self.z_NF = torch.cat(
                [
                    encode(x_ND[a : a + chunk]).float().cpu()
                    for a in _chunks(x_ND.shape[0], chunk, "encoding", progress)
                ]
            )

    def __call__(self, idx) -> Tensor:
        if self.z_NF is not None:
            return self.z_NF[idx]
        return self.encode(self.x_ND[idx]).float().cpu()


def _chunks(n: int, size: int, desc: str, progress: bool):
    return tqdm(range(0, n, size), desc=desc, disable=not progress, leave=False)


@torch.no_grad()
def decoder_neighbours(dirs_FD: Tensor, k: int, chunk: int = 1024) -> tuple[Tensor, Tensor]:
    """The k latents with the largest decoder cosine to each latent (itself excluded):
    (ids [F, k], cos [F, k])."""
    unit_FD = torch.nn.functional.normalize(dirs_FD.float(), dim=-1)
    F = unit_FD.shape[0]
    k = min(k, F - 1)
    ids, cos = [], []
    for a in range(0, F, chunk):
        c_nF = unit_FD[a : a + chunk] @ unit_FD.T
        c_nF[torch.arange(c_nF.shape[0]), torch.arange(a, a + c_nF.shape[0])] = -float("inf")
        top = c_nF.topk(k, dim=1)
        ids.append(top.indices)
        cos.append(top.values)
    return torch.cat(ids), torch.cat(cos)


def _merge_topk(
    best_vals: Tensor, best_rows: Tensor, vals_nF: Tensor, rows_n: Tensor, k: int
) -> tuple[Tensor, Tensor]:
    """Running top-k per column: the previous best [k, F] and a chunk's values [n, F]."""
    vals_Fn = torch.cat([best_vals, vals_nF]).T.contiguous()  # top-k along rows: 3x faster
    rows = torch.cat([best_rows, rows_n[:, None].expand_as(vals_nF)])
    top = vals_Fn.topk(min(k, vals_Fn.shape[1]), dim=1)
    idx_KF = top.indices.T
    return top.values.T.contiguous(), rows.gather(0, idx_KF)


@torch.no_grad()
def latent_stats(
    encode: Callable[[Tensor], Tensor],
    x_ND: Tensor,
    neighbour_ids_FK: Tensor,
    params: StatsParams = StatsParams(),
    progress: bool = True,
) -> dict[str, Tensor]:
    """Passes 1-3 over the rows `x_ND` (raw activations; `encode` gives latents [n, F]).

    Returns tensors: count_F, sum_F, max_F, cofire_FK (rows where latent and neighbour both fire),
    top_vals_KF / top_rows_KF (top activations, -inf / -1 where fewer fired), fine_hist_FB,
    quantile_levels, quantiles_FQ, sample_rows_IJF (interval I, sample J; -1 where none); and
    "codes" (`Codes`, for the contexts' pass)."""
    N = x_ND.shape[0]
    codes = Codes(encode, x_ND, params.chunk, progress=progress)
    # held codes are read in steps of ~16M values (one step at `local`), else encoded per chunk
    step = (
        max(params.chunk, (1 << 24) // codes.n_latents) if codes.z_NF is not None else params.chunk
    )
    p = params
    K = p.n_top
    count = sum_ = max_ = cofire = None
    top_vals = top_rows = None
    for a in _chunks(N, step, "latent stats (1/3)", progress):
        z_nF = codes(slice(a, a + step))
        fired_nF = z_nF > 0
        if count is None:
            F = z_nF.shape[1]
            count, sum_ = torch.zeros(F, dtype=torch.long), torch.zeros(F, dtype=torch.float64)
            max_ = torch.zeros(F)
            cofire = torch.zeros(neighbour_ids_FK.shape, dtype=torch.long)
            top_vals, top_rows = torch.empty(0, F), torch.empty(0, F, dtype=torch.long)
        count += fired_nF.sum(0)
        sum_ += z_nF.double().sum(0)
        max_ = torch.maximum(max_, z_nF.max(0).values)
        on_nF = fired_nF.float()
        for k in range(neighbour_ids_FK.shape[1]):  # float products: BLAS-speed, exact counts
            cofire[:, k] += (on_nF * on_nF[:, neighbour_ids_FK[:, k]]).sum(0).long()
        masked = torch.where(fired_nF, z_nF, torch.full_like(z_nF, -float("inf")))
        top_vals, top_rows = _merge_topk(
            top_vals, top_rows, masked, torch.arange(a, a + z_nF.shape[0]), K
        )
    top_rows = torch.where(torch.isfinite(top_vals), top_rows, torch.full_like(top_rows, -1))
    F = count.shape[0]

    # pass 2: fine histogram of the nonzero activations, bins of width max / FINE_BINS
    hist = torch.zeros(F * FINE_BINS, dtype=torch.long)
    width_F = (max_ / FINE_BINS).clamp_min(1e-30)
    for a in _chunks(N, step, "latent stats (2/3)", progress):
        z_nF = codes(slice(a, a + step))
        n_idx, f_idx = torch.nonzero(z_nF > 0, as_tuple=True)
        b = (z_nF[n_idx, f_idx] / width_F[f_idx]).long().clamp(0, FINE_BINS - 1)
        hist += torch.bincount(f_idx * FINE_BINS + b, minlength=F * FINE_BINS)
    hist = hist.view(F, FINE_BINS)
    levels = torch.tensor(sorted(set(p.intervals[1:-1]) | {0.5, 0.9, 0.99}))
    quantiles = hist_quantiles(hist, max_, levels)

    # pass 3: a seeded sample of rows in each quantile interval (lower bound inclusive)
    bounds_FQ = hist_quantiles(hist, max_, torch.tensor(p.intervals[1:-1]))
    n_int, J = len(p.intervals) - 1, p.n_per_interval
    gen = torch.Generator().manual_seed(p.seed)
    best = [(torch.empty(0, F), torch.empty(0, F, dtype=torch.long)) for _ in range(n_int)]
    for a in _chunks(N, step, "latent stats (3/3)", progress):
        z_nF = codes(slice(a, a + step))
        key_nF = torch.rand(z_nF.shape, generator=gen)
        interval_nF = torch.zeros(z_nF.shape, dtype=torch.uint8)  # 0 .. n_int - 1
        for q in range(bounds_FQ.shape[1]):
            interval_nF += z_nF >= bounds_FQ[:, q]
        rows_n = torch.arange(a, a + z_nF.shape[0])
        for i in range(n_int):
            score = torch.where(
                (z_nF > 0) & (interval_nF == i), key_nF, torch.full_like(key_nF, -1.0)
            )
            best[i] = _merge_topk(*best[i], score, rows_n, J)
    sample_rows = torch.full((n_int, J, F), -1, dtype=torch.long)
    for i, (vals, rows) in enumerate(best):
        sample_rows[i, : vals.shape[0]] = torch.where(vals >= 0, rows, torch.full_like(rows, -1))
    return {
        "count_F": count,
        "sum_F": sum_,
        "max_F": max_,
        "cofire_FK": cofire,
        "top_vals_KF": top_vals,
        "top_rows_KF": top_rows,
        "fine_hist_FB": hist,
        "quantile_levels": levels,
        "quantiles_FQ": quantiles,
        "sample_rows_IJF": sample_rows,
        "n_tokens": N,
        "codes": codes,
    }


def hist_quantiles(hist_FB: Tensor, max_F: Tensor, levels: Tensor) -> Tensor:
    """Quantiles [F, Q] of each latent's nonzero activations from its fine histogram (bins of
    width max / B from 0), linear within the bin: exact to within one bin width."""
    F, B = hist_FB.shape
    cum_FB = hist_FB.cumsum(1).double()
    total_F = cum_FB[:, -1:]
    target_FQ = levels.double()[None] * total_F
    b_FQ = torch.searchsorted(cum_FB.contiguous(), target_FQ.contiguous()).clamp(max=B - 1)
    below_FQ = torch.where(
        b_FQ > 0, cum_FB.gather(1, (b_FQ - 1).clamp_min(0)), torch.zeros_like(target_FQ)
    )
    in_bin_FQ = hist_FB.double().gather(1, b_FQ).clamp_min(1)
    frac_FQ = ((target_FQ - below_FQ) / in_bin_FQ).clamp(0, 1)
    width_F = max_F.double()[:, None] / B
    q = (b_FQ.double() + frac_FQ) * width_F
    return torch.where(total_F > 0, q, torch.zeros_like(q)).float()


@torch.no_grad()
def window_acts(codes: Codes, rows_P: Tensor, latents_P: Tensor, chunk: int = 4096) -> Tensor:
    """Activation of latent latents_P[p] on row rows_P[p] (rows < 0: 0), each needed row's
    latents computed once."""
    out = torch.zeros(rows_P.shape[0])
    valid = rows_P >= 0
    if codes.z_NF is not None:
        out[valid] = codes.z_NF[rows_P[valid], latents_P[valid]]
        return out
    uniq, inverse = torch.unique(rows_P[valid], return_inverse=True)
    order = inverse.argsort()
    inv_sorted, lat_sorted = inverse[order], latents_P[valid][order]
    vals = torch.zeros(inv_sorted.shape[0])
    for a in range(0, uniq.shape[0], chunk):
        lo, hi = torch.searchsorted(inv_sorted, torch.tensor([a, a + chunk])).tolist()
        z_nF = codes(uniq[a : a + chunk])
        vals[lo:hi] = z_nF[inv_sorted[lo:hi] - a, lat_sorted[lo:hi]]
    out_valid = torch.zeros_like(vals)
    out_valid[order] = vals
    out[valid] = out_valid
    return out


def _group_name(lo: float, hi: float) -> str:
    return f"q {100 * lo:g}-{100 * hi:g} %"


def contexts(
    stats: dict[str, Tensor],
    encode,
    x_ND: Tensor,
    positions_R2: np.ndarray,
    tokens_SC: Tensor,
    token_str: Callable[[int], str],
    params: StatsParams = StatsParams(),
) -> list[list[dict]]:
    """Pass 4: per latent, its top contexts (strongest first) then its interval samples, as the
    contract's dicts. The highlighted token is the row's own token; `acts` holds the latent on
    every shown token, 0 on tokens without a cache row (special tokens, massive activations)."""
    p = params
    codes = stats.get("codes") or Codes(encode, x_ND, p.chunk)
    S, C = tokens_SC.shape
    pos = torch.from_numpy(np.asarray(positions_R2)).long()
    row_of_SC = torch.full((S, C), -1, dtype=torch.long)
    row_of_SC[pos[:, 0], pos[:, 1]] = torch.arange(pos.shape[0])
    F = stats["count_F"].shape[0]
    n_int = len(p.intervals) - 1
    names = ["top"] + [_group_name(p.intervals[i], p.intervals[i + 1]) for i in range(n_int)]
    # every (group, rank, latent) with a row, as flat tensors; group 0 = top
    cand_GJF = torch.full((1 + n_int, max(p.n_top, p.n_per_interval), F), -1, dtype=torch.long)
    cand_GJF[0, : stats["top_rows_KF"].shape[0]] = stats["top_rows_KF"]
    cand_GJF[1:, : p.n_per_interval] = stats["sample_rows_IJF"]
    g, j, lat = torch.nonzero(cand_GJF >= 0, as_tuple=True)
    order = torch.argsort(lat * cand_GJF.shape[0] * cand_GJF.shape[1] + g * cand_GJF.shape[1] + j)
    g, j, lat = g[order], j[order], lat[order]
    rows = cand_GJF[g, j, lat]
    out: list[list[dict]] = [[] for _ in range(F)]
    if rows.numel() == 0:
        return out
    seq, ctr = pos[rows, 0], pos[rows, 1]
    offsets = torch.arange(-p.left, p.right + 1)
    win_PW = ctr[:, None] + offsets[None]
    inside_PW = (win_PW >= 0) & (win_PW < C)
    clamped = win_PW.clamp(0, C - 1)
    win_rows_PW = torch.where(inside_PW, row_of_SC[seq[:, None], clamped], -1)
    acts_PW = window_acts(
        codes, win_rows_PW.reshape(-1), lat[:, None].expand_as(win_PW).reshape(-1)
    ).view(win_PW.shape)
    toks_PW = tokens_SC[seq[:, None], clamped]
    items = zip(
        lat.tolist(),
        g.tolist(),
        rows.tolist(),
        seq.tolist(),
        ctr.tolist(),
        toks_PW.tolist(),
        acts_PW.tolist(),
        inside_PW.tolist(),
    )
    for f, grp, r, s_, c_, toks, acts, inside in items:
        keep = [k for k, ok in enumerate(inside) if ok]
        center = sum(1 for k in keep if k < p.left)
        shown = [round(acts[k], 5) for k in keep]
        out[f].append(
            {
                "group": names[grp],
                "tokens": [token_str(toks[k]) for k in keep],
                "acts": shown,
                "center": center,
                "act": shown[center],
                "row": r,
                "seq": s_,
                "pos": c_,
            }
        )
    return out


@torch.no_grad()
def logit_effects(model, dirs_FD: Tensor, k: int, chunk: int = 256) -> tuple[Tensor, ...]:
    """Top and bottom k tokens (values, ids) of each decoder direction's direct effect on the
    logits: through the model's final norm when it has one (each row normalized as a residual
    would be, the norm's weight applied), then the unembedding; no output soft-cap."""
    has_norm = hasattr(model, "ln_final")
    tv, ti, bv, bi = [], [], [], []
    W_dtype = next(model.parameters()).dtype
    device = next(model.parameters()).device
    for a in range(0, dirs_FD.shape[0], chunk):
        d = dirs_FD[a : a + chunk].to(device, W_dtype)[None]
        h = model.ln_final(d) if has_norm else d
        logits = model.unembed(h)[0].float().cpu()
        top, bot = logits.topk(k, dim=1), (-logits).topk(k, dim=1)
        tv.append(top.values), ti.append(top.indices), bv.append(-bot.values)
        bi.append(bot.indices)
    return torch.cat(tv), torch.cat(ti), torch.cat(bv), torch.cat(bi)


def logit_note(model) -> str:
    if not hasattr(model, "ln_final"):
        return "W_dec·W_U (the model has no final norm)"
    norm = type(getattr(model.ln_final, "original_component", model.ln_final)).__name__
    return (
        f"ln_final(W_dec[i])·W_U: each decoder row through the model's final norm ({norm}: "
        "rescaled as a residual would be, its weight applied), then the unembedding; "
        "the output soft-cap, if any, is left out"
    )


def latent_records(
    stats: dict[str, Tensor],
    neighbour_ids: Tensor,
    neighbour_cos: Tensor,
    logits: tuple[Tensor, ...] | None,
    token_str: Callable[[int], str],
    ctx: list[list[dict]],
) -> list[dict]:
    """The contract's per-latent dicts."""
    N = stats["n_tokens"]
    count, max_ = stats["count_F"], stats["max_F"]
    edges_FE = torch.linspace(0, 1, HIST_BINS + 1)[None] * max_[:, None]
    coarse = stats["fine_hist_FB"].view(-1, HIST_BINS, FINE_BINS // HIST_BINS).sum(-1)
    levels = [f"{q:g}" for q in stats["quantile_levels"].tolist()]
    out = []
    for f in range(count.shape[0]):
        c = int(count[f])
        density = c / N
        rec = {
            "id": f,
            "density": density,
            "log10_density": math.log10(density) if c else None,
            "max_act": float(max_[f]),
            "mean_act": float(stats["sum_F"][f] / c) if c else 0.0,
            "quantiles": dict(
                zip(levels, [round(v, 6) for v in stats["quantiles_FQ"][f].tolist()])
            ),
            "hist": {
                "edges": [round(e, 6) for e in edges_FE[f].tolist()],
                "counts": coarse[f].tolist(),
            },
            "top_logits": [],
            "bottom_logits": [],
            "neighbours": [
                {
                    "id": int(j),
                    "cos": round(float(cs), 5),
                    "cofire": round(float(stats["cofire_FK"][f, n]) / c, 5) if c else 0.0,
                }
                for n, (j, cs) in enumerate(zip(neighbour_ids[f], neighbour_cos[f]))
            ],
            "contexts": ctx[f],
        }
        if logits is not None:
            tv, ti, bv, bi = logits
            rec["top_logits"] = [
                [token_str(int(t)), round(float(v), 4)] for t, v in zip(ti[f], tv[f])
            ]
            rec["bottom_logits"] = [
                [token_str(int(t)), round(float(v), 4)] for t, v in zip(bi[f], bv[f])
            ]
        out.append(rec)
    return out


def feature_data(
    adapter,
    x_ND: Tensor,
    positions_R2: np.ndarray,
    tokens_SC: Tensor,
    token_str: Callable[[int], str],
    sae_info: dict,
    model=None,
    params: StatsParams = StatsParams(),
    progress: bool = True,
) -> dict:
    """The browser's data dict for an SAE (`evals.adapter.SAEAdapter`) on raw rows `x_ND`, whose
    row r is token `tokens_SC[positions_R2[r]]`:

        {"sae": {name, arch, d_in, d_sae, model, hook, n_tokens, logit_note},
         "latents": [{id, density, log10_density (None when dead), max_act, mean_act (over
                      firing tokens), quantiles {"0.5", "0.9", "0.99", ...}, hist {edges, counts}
                      (nonzero activations), top_logits / bottom_logits [[token, value], ...],
                      neighbours [{id, cos (decoder), cofire (P(neighbour fires | this fires))}],
                      contexts [{group ("top" or "q lo-hi %"), tokens, acts, center, act, row,
                                 seq, pos}]}]}

    `model` gives the logit effects (None: left empty)."""
    dirs_FD = adapter.decoder_rows()  # normalized space; directions equal the raw space's
    nb_ids, nb_cos = decoder_neighbours(dirs_FD, params.n_neighbours)
    stats = latent_stats(adapter.encode, x_ND, nb_ids, params, progress)
    ctx = contexts(stats, adapter.encode, x_ND, positions_R2, tokens_SC, token_str, params)
    logits = logit_effects(model, dirs_FD, params.n_logits) if model is not None else None
    sae = {
        **sae_info,
        "d_sae": int(dirs_FD.shape[0]),
        "d_in": int(dirs_FD.shape[1]),
        "n_tokens": int(x_ND.shape[0]),
        "logit_note": logit_note(model) if model is not None else "not computed (no model)",
    }
    return {"sae": sae, "latents": latent_records(stats, nb_ids, nb_cos, logits, token_str, ctx)}
