"""Latent bookkeeping and surgery: firing counters, the sliding window, resampling, merging.

Every piece is a small module or function that any SAE with parameters W_enc [D,F], b_enc [F],
W_dec [F,D] can use. Per-step work is O(F) on a firing count the forward pass already computed;
the O(F^2) similarity and the resampling run only every `merge_every` / `resample_every` steps.
Counters are registered buffers, so they travel with `state_dict()` into training checkpoints.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# ----------------------------------------------------------------------------- firing statistics


class FiringCounter(nn.Module):
    """Per-latent firing statistics, kept by every SAE.

    - `tokens_since_fired_F`: tokens since the latent last fired (dead-latent criteria, AuxK).
    - `fire_count_F`, `tokens_seen_F`: firing frequency since the latent was last (re)initialised,
      written to `sparsity.safetensors` on export.
    """

    def __init__(self, d_sae: int):
        super().__init__()
        for name in ("tokens_since_fired_F", "fire_count_F", "tokens_seen_F"):
            self.register_buffer(name, torch.zeros(d_sae, dtype=torch.long))

    @torch.no_grad()
    def update(self, fired_F: Tensor, n_tokens: int) -> None:
        """fired_F: number of tokens of this batch on which each latent was non-zero."""
        self.tokens_since_fired_F.add_(n_tokens).masked_fill_(fired_F > 0, 0)
        self.fire_count_F.add_(fired_F)
        self.tokens_seen_F.add_(n_tokens)

    def dead_mask(self, after_tokens: int) -> Tensor:
        """Latents that have not fired in the last `after_tokens` tokens (and are that old)."""
        return self.tokens_since_fired_F >= after_tokens

    def frequency(self) -> Tensor:
        return self.fire_count_F / self.tokens_seen_F.clamp(min=1)

    @torch.no_grad()
    def reset(self, latents_L: Tensor) -> None:
        for buf in (self.tokens_since_fired_F, self.fire_count_F, self.tokens_seen_F):
            buf[latents_L] = 0


class WindowTracker(nn.Module):
    """Sliding window of per-step firing rates (paper Eq. 4).

    A [window, F] ring buffer: step t writes row t % window with that step's rate of each latent,
    so p_i = mean over the rows is the firing rate over the last `window` steps. Eq. 4 sums
    j = t-w..t (w+1 terms) but divides by w; we average exactly the last w steps.

    `age_F` counts steps since a latent was (re)initialised, so a latent is only judged once its
    whole window postdates its reset.
    """

    def __init__(self, window: int, d_sae: int):
        super().__init__()
        self.window = window
        self.register_buffer("rates_WF", torch.zeros(window, d_sae))
        self.register_buffer("age_F", torch.zeros(d_sae, dtype=torch.long))

    @torch.no_grad()
    def update(self, step: int, rate_F: Tensor) -> None:
        self.rates_WF[step % self.window] = rate_F
        self.age_F.add_(1)

    def rates(self) -> Tensor:
        """p_i, the mean firing rate over the window (rows older than a latent's reset included)."""
        return self.rates_WF.mean(0)

    def full_mask(self) -> Tensor:
        return self.age_F >= self.window

    def dead_mask(self, min_rate: float) -> Tensor:
        """p_i < min_rate, only for latents whose window is full."""
        return (self.rates() < min_rate) & self.full_mask()

    @torch.no_grad()
    def reset(self, latents_L: Tensor) -> None:
        self.age_F[latents_L] = 0


def step_firing_rate(fired_F: Tensor, n_tokens: int, reading: str = "frequency") -> Tensor:
    """The per-step term 1[z_i^(j) > 0] of Eq. 4 for a batch of tokens.

    "frequency": the fraction of the step's tokens on which latent i fired (default);
    "any": 1 if latent i fired on at least one token of the step.
    """
    if reading == "frequency":
        return fired_F.float() / n_tokens
    if reading == "any":
        return (fired_F > 0).float()
    raise ValueError(f"firing reading must be 'frequency' or 'any', got {reading!r}")


# ----------------------------------------------------------------------------- resampling


@torch.no_grad()
def resample_latents(
    sae: nn.Module,
    latents_L: Tensor,
    x_BD: Tensor,
    sq_err_B: Tensor,
    generator: torch.Generator | None = None,
    enc_scale: float = 0.2,
) -> Tensor:
    """Re-initialise `latents_L` from high-loss inputs (Anthropic, "Towards Monosemanticity", 2023).

    Inputs are drawn with probability proportional to the square of their reconstruction loss
    `sq_err_B` (without replacement while there are enough candidates). For each latent:
    decoder row = the normalised input; encoder column = the same direction scaled to
    `enc_scale` x the mean encoder-column norm of the latents that stay; encoder bias = 0.
    Returns the indices of the chosen inputs. The caller resets the optimizer state.
    """
    n = latents_L.numel()
    if n == 0:
        return latents_L.new_zeros(0)
    # nan_to_num: a diverged step must not crash here; the trainer reports it by step.
    weights_B = torch.nan_to_num(sq_err_B.double().pow(2), nan=0.0, posinf=0.0)
    if not bool(weights_B.sum() > 0):
        weights_B = torch.ones_like(weights_B)
    replacement = n > int((weights_B > 0).sum())
    idx_L = torch.multinomial(weights_B, n, replacement=replacement, generator=generator)
    dirs_LD = F.normalize(x_BD[idx_L].float(), dim=-1)

    keep_F = torch.ones(sae.W_enc.shape[1], dtype=torch.bool, device=x_BD.device)
    keep_F[latents_L] = False
    enc_norm = sae.W_enc[:, keep_F].norm(dim=0).mean() if bool(keep_F.any()) else 1.0

    sae.W_dec[latents_L] = dirs_LD
    sae.W_enc[:, latents_L] = (dirs_LD * (enc_scale * enc_norm)).T
    sae.b_enc[latents_L] = 0.0
    return idx_L


def reset_adam_state(optimizer: torch.optim.Optimizer, sae: nn.Module, latents_L: Tensor) -> None:
    """Zero Adam's moments (exp_avg, exp_avg_sq) of exactly these latents' rows/columns.

    Covers W_enc[:, L], b_enc[L] and W_dec[L]; b_dec is shared and keeps its state. Adam's step
    counter is per parameter tensor, so bias correction is not restarted (as in Anthropic's recipe).
    """
    if latents_L.numel() == 0:
        return
    for param, dim in ((sae.W_enc, 1), (sae.b_enc, 0), (sae.W_dec, 0)):
        state = optimizer.state.get(param, {})
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            if key in state:
                state[key].index_fill_(dim, latents_L.to(state[key].device), 0.0)


# ----------------------------------------------------------------------------- merging


def cosine_similarity_matrix(vectors_FD: Tensor) -> Tensor:
    """[F, F] cosine similarities of the rows (one matmul). Zero rows get similarity 0."""
    unit_FD = F.normalize(vectors_FD.float(), dim=-1)
    return unit_FD @ unit_FD.T


def latent_similarity(sae: nn.Module, which: str = "decoder") -> Tensor:
    """Similarity used for merging: "decoder" rows (the feature directions), "encoder" columns,
    or "both" (the smaller of the two, i.e. a pair must be similar in both)."""
    if which == "decoder":
        return cosine_similarity_matrix(sae.W_dec)
    if which == "encoder":
        return cosine_similarity_matrix(sae.W_enc.T)
    if which == "both":
        return torch.minimum(
            cosine_similarity_matrix(sae.W_dec), cosine_similarity_matrix(sae.W_enc.T)
        )
    raise ValueError(f"merge similarity must be 'decoder', 'encoder' or 'both', got {which!r}")


@torch.no_grad()
def find_merge_pairs(sim_FF: Tensor, threshold: float = 0.9) -> Tensor:
    """Disjoint pairs (i, j), i < j, with similarity > threshold, chosen greedily (most similar
    first).

    Returns a [P, 2] long tensor. The Python loop runs over candidate pairs only (usually none).
    """
    upper_FF = torch.triu(sim_FF, diagonal=1)
    cand_C2 = (upper_FF > threshold).nonzero()
    if cand_C2.numel() == 0:
        return cand_C2.new_zeros(0, 2)
    order_C = upper_FF[cand_C2[:, 0], cand_C2[:, 1]].argsort(descending=True, stable=True)
    used: set[int] = set()
    pairs: list[tuple[int, int]] = []
    for i, j in cand_C2[order_C].tolist():
        if i not in used and j not in used:
            pairs.append((i, j))
            used.update((i, j))
    return torch.tensor(pairs, dtype=torch.long, device=sim_FF.device)


@torch.no_grad()
def merge_pairs(sae: nn.Module, pairs_P2: Tensor) -> Tensor:
    """Eq. 7: latent i of each pair becomes the average of i and j (encoder column, encoder bias,
    decoder row; the decoder row renormalised to unit norm). Returns the freed latents j,
    which the caller re-initialises."""
    i_P, j_P = pairs_P2[:, 0], pairs_P2[:, 1]
    sae.W_enc[:, i_P] = (sae.W_enc[:, i_P] + sae.W_enc[:, j_P]) / 2
    sae.b_enc[i_P] = (sae.b_enc[i_P] + sae.b_enc[j_P]) / 2
    sae.W_dec[i_P] = F.normalize((sae.W_dec[i_P] + sae.W_dec[j_P]) / 2, dim=-1)
    return j_P


@torch.no_grad()
def zero_latents(sae: nn.Module, latents_L: Tensor) -> None:
    """The "zero" re-initialisation of a freed latent (the paper's public code did this)."""
    sae.W_enc[:, latents_L] = 0.0
    sae.b_enc[latents_L] = 0.0
    sae.W_dec[latents_L] = 0.0
