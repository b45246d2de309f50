"""How far float rounding moves a trained SAE: the reproducibility tolerance across machines.

Two CPUs of the same kind can round a matmul differently in the last bit (another BLAS kernel or
instruction-set path, another split over threads). `nudge_ulp` makes such a difference on
purpose: every input element moved by one unit in the last place, up or down at random. Training
the same SAE on the nudged and the original data (same seed, same batches) shows what the
difference grows into: `divergence` compares the two runs' weights, their active latents on held-out
rows and their metrics.

A continuous map (ReLU SAEs, the HierarchicalSAE) carries the nudge along as a nudge; TopK's
selection is discontinuous: where the k-th and (k+1)-th pre-activations are within rounding of each
other, a nudge swaps which latent fires, the swapped latent's gradient goes elsewhere, and the
trajectories part. `NudgedStore` feeds the trainer the profile's own batches, nudged, so a
nudged run pairs with the profile's saved run of the same seed. `scripts/rounding_effect.py`
measures it at a profile's budget, `hsae_utils.analysis.tolerance` turns the measurement into the
tolerance per family and marks the verdicts it can flip; docs/reproducibility.md states it;
`tests/test_rounding.py` and `tests/test_tolerance.py` check them.
"""

from __future__ import annotations

import torch
from torch import Tensor


def nudge_ulp(x: Tensor, seed: int = 0) -> Tensor:
    """`x` with every element moved to the next representable float up or down (a fair coin per
    element, deterministic in `seed`): a difference of one unit in the last place."""
    g = torch.Generator().manual_seed(seed)
    up = torch.rand(x.shape, generator=g) < 0.5
    inf = torch.tensor(float("inf"), dtype=x.dtype)
    return torch.nextafter(x, torch.where(up, inf, -inf))


class NudgedStore:
    """A batch source that yields `store`'s batches (the same rows, order and normalization)
    each nudged by one ulp (`nudge_ulp`), the coin flips drawn per step: deterministic in
    (seed, step), so a resumed run sees the same nudged batches. Training on it pairs with a run
    trained on `store` itself: what another CPU's rounding of the normalization would feed it."""

    def __init__(self, store):
        self.store = store
        self.normalizer = getattr(store, "normalizer", None)  # recorded in the export
        self.n_tokens, self.d_model = store.n_tokens, store.d_model

    def iter_batches(self, batch_size: int, seed: int, start_step: int = 0, device="cpu"):
        batches = self.store.iter_batches(batch_size, seed, start_step=start_step, device="cpu")
        for step, x_BD in enumerate(batches, start=start_step):
            yield nudge_ulp(x_BD, seed=seed * 1_000_003 + step).to(device)

    def sample(self, n_tokens: int, seed: int) -> Tensor:
        return nudge_ulp(self.store.sample(n_tokens, seed), seed=seed)


@torch.no_grad()
def divergence(sae_a, sae_b, x_norm_ND: Tensor) -> dict[str, float]:
    """How far two SAEs of the same architecture ended apart: the largest weight difference
    relative to the weight's scale (encoder and decoder), and on rows `x_norm_ND` (normalized
    space) the fraction of (row, latent) firing decisions that differ and the change in the mean
    squared error relative to its value."""
    out = {}
    for name in ("W_enc", "W_dec"):
        a, b = getattr(sae_a, name), getattr(sae_b, name)
        out[f"{name}_rel_diff"] = float((a - b).abs().max() / a.abs().max())
    za, zb = sae_a.encode(x_norm_ND), sae_b.encode(x_norm_ND)
    out["firing_disagreement"] = float(((za > 0) != (zb > 0)).float().mean())
    mse_a = (sae_a.decode(za) - x_norm_ND).pow(2).sum(-1).mean()
    mse_b = (sae_b.decode(zb) - x_norm_ND).pow(2).sum(-1).mean()
    out["mse_rel_change"] = float((mse_b - mse_a) / mse_a)
    return out
