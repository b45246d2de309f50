"""Which token each row of the validation activation cache is: (context, position), exactly.

The cache keeps a position when it is not a special token and not a massive activation
(`tokens.keep_mask`: norm above `massive_norm_factor` x the median norm of its model batch), rows in
row-major order of (context, position). Special tokens follow from `tokens.npy` alone; massive
activations do not (their norms are not stored), so a shard whose row count says some were dropped
is recomputed batch by batch as notebook 01 cached it (the model batch each shard records, else
the profile's; same rule), and the recomputed rows are checked against the cached ones. The map is
stored in the evaluation cache (`evals.cache`), keyed by the cache's tokens and shard checksums
(not by a batch size: the card sizes the batches, `resources.sized_for_device`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hsae_utils.config import Profile
from hsae_utils.data.activations import ActivationStore, CacheError, from_storage
from hsae_utils.data.forward import layer_resid
from hsae_utils.data.tokens import keep_mask
from hsae_utils.evals.cache import load_cached, model_device, save_cached


def _kept_by_model(
    model,
    tokens_SC: torch.Tensor,
    special: torch.Tensor,
    layer: int,
    batch: int,
    factor: float | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """keep mask [S, C] and the kept rows (fp32) of some contexts, in the cache's model batches."""
    device = model_device(model)
    keeps, rows = [], []
    for i in range(0, tokens_SC.shape[0], batch):
        toks_BS = tokens_SC[i : i + batch].to(device)
        resid_BSD = layer_resid(model, toks_BS, layer)
        keep_BS = keep_mask(toks_BS, resid_BSD, special.to(device), factor)
        keeps.append(keep_BS.cpu())
        rows.append(resid_BSD[keep_BS].float().cpu())
    return torch.cat(keeps), torch.cat(rows)


def row_positions(profile: Profile, model=None, cache_root: str | Path | None = None) -> np.ndarray:
    """[n_rows, 2] int64 (context, position) of every row of the profile's validation cache.

    `model` is needed only when the cache dropped massive activations (their positions are
    recomputed); `cache_root` (e.g. `outputs/<profile>/eval_cache`) stores the map."""
    store = ActivationStore(profile.cache_dir / "validation", cache_dtype=profile.cache_dtype)
    m = store.manifest
    identity = {
        "tokens_sha256": m["tokens_sha256"],
        "shards": [s["sha256"] for s in m["shards"]],
        "special_ids": m["special_token_ids"],
        "massive_factor": m["massive_norm_factor"],
    }
    if cache_root is not None:
        hit = load_cached(cache_root, "rowmap", identity)
        if hit is not None:
            return np.asarray(hit["arrays"]["positions"]).astype(np.int64)
    tokens_SC = store.tokens()
    special = torch.tensor(m["special_token_ids"], dtype=torch.long)
    keep_SC = ~torch.isin(tokens_SC, special)
    per_shard = m["contexts_per_shard"]
    for s, shard in enumerate(m["shards"]):
        ctx = slice(s * per_shard, (s + 1) * per_shard)
        if int(keep_SC[ctx].sum()) == shard["rows"]:
            continue  # nothing massive dropped in this shard: special tokens decide alone
        if model is None:
            raise ValueError(
                f"The validation cache dropped massive activations in shard {s}: mapping its rows "
                "to tokens needs the model (pass model=load_model(profile))."
            )
        keep, rows_ND = _kept_by_model(
            model,
            tokens_SC[ctx],
            special,
            profile.layer,
            shard.get("model_batch_size", profile.model_batch_size),  # older caches: the profile's
            m["massive_norm_factor"],
        )
        cached_ND = from_storage(store._open(s), store.cache_dtype).float()
        tol = 1e-3 if store.cache_dtype == "float32" else 2e-2
        if rows_ND.shape != cached_ND.shape or not torch.allclose(
            rows_ND, cached_ND, rtol=tol, atol=tol * cached_ND.abs().max().item()
        ):
            raise CacheError(
                f"Recomputing shard {s} of {store.folder} does not give its cached rows "
                f"({rows_ND.shape[0]} vs {cached_ND.shape[0]} rows): the cache was built with "
                "another model or model_batch_size. Rebuild it (notebook 01, rebuild_cache=True)."
            )
        keep_SC[ctx] = keep
    positions = torch.nonzero(keep_SC).numpy().astype(np.int64)  # row-major, as cached
    if positions.shape[0] != store.n_tokens:
        raise CacheError(
            f"{store.folder}: {positions.shape[0]} kept positions for "
            f"{store.n_tokens} cached rows. Rebuild the cache (notebook 01)."
        )
    if cache_root is not None:
        save_cached(cache_root, "rowmap", identity, {"positions": positions})
    return positions


class ValidationRows:
    """The validation split as the feature statistics read it: raw rows (fp32), their
    (context, position), the tokens, and what identifies them (for the statistics' manifest)."""

    def __init__(self, profile: Profile, model=None, cache_root: str | Path | None = None):
        store = ActivationStore(profile.cache_dir / "validation", cache_dtype=profile.cache_dtype)
        self.x_ND = store.read_all()
        self.normalization = store.manifest["normalization"]
        self.positions_R2 = row_positions(profile, model, cache_root)
        self.tokens_SC = store.tokens()
        self.identity = {
            "tokens_sha256": store.manifest["tokens_sha256"],
            "shards": [s["sha256"] for s in store.manifest["shards"]],
            "model_sha256": store.manifest.get("model_sha256", ""),
            "hook": store.manifest["hook"],
        }
