"""TopK SAE (Gao et al., "Scaling and evaluating sparse autoencoders", 2024) with the AuxK loss."""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral

import torch
import torch.nn.functional as F
from torch import Tensor

from hsae_utils.method.saes.base import BaseSAE, SAEConfig, StepOutput, squared_error
from hsae_utils.method.saes.sparse_decode import (
    SparseCodes,
    sparse_decode,
    sparse_encode,
    topk_sparse,
    use_sparse,
)


@dataclass
class TopKSAEConfig(SAEConfig):
    """k: latents kept per token (the paper's 320 at 2,304 latents; `profile.topk_k` scales it).

    auxk: add the AuxK loss (on by default): the top `aux_k` pre-activations among dead latents
        (not fired for `dead_after_tokens` tokens) reconstruct the detached residual e = x - xhat
        (Gao et al.: aux_k = 512, capped here at d_sae / 2 as SAELens does; coefficient 1/32).
        Gao et al.'s code (openai/sparse_autoencoder train.py) weighs
            mse(xhat, x) / var_x + 1/32 normalized_mse(ehat, e),
        normalized_mse(a, b) = mse(a, b) / mse(mean_batch(b), b): the batch MSE over the batch
        variance of the centred residual (not a per-token ratio), var_x the centred variance of x.
        Our main loss is the summed squared error, mse(xhat, x) x D, so the aux term is
        normalized_mse(ehat, e) x 1/32 x D var_x, which keeps their balance. The one difference:
        var_x is the batch's (detached), where their code fixes it once from a sample.
    """

    k: int = 320
    auxk: bool = True
    aux_k: int = 512
    aux_coefficient: float = 1 / 32

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.k, Integral) or not 0 < self.k <= self.d_sae:
            raise ValueError(
                f"{type(self).__name__}: k must be an integer in 1..d_sae (= "
                f"{self.d_sae}), got {self.k!r}; pass k=1..{self.d_sae} or a "
                "larger d_sae."
            )
        if self.auxk and self.aux_k <= 0:
            raise ValueError(f"{type(self).__name__}: aux_k must be positive, got {self.aux_k}.")


def topk_codes(pre_BF: Tensor, k: int) -> Tensor:
    """Keep the k largest pre-activations of each row, then ReLU (at most k non-zeros)."""
    vals_BK, idx_BK = pre_BF.topk(k, dim=-1, sorted=False)
    return torch.zeros_like(pre_BF).scatter_(-1, idx_BK, vals_BK.relu())


class TopKSAE(BaseSAE):
    """z = ReLU(TopK(x W_enc + b_enc)); loss = sum_d (x - xhat)^2 (+ AuxK). No L1 term.

    decode_mode: how the training step computes, "dense" (z_BF @ W_dec and the dense backward),
    "sparse" (only the active latents in the decode and in every backward, sparse_decode.py:
    equal up to float rounding) or "auto" (sparse below a density of k / d_sae;
    `TrainConfig.decode` sets it). A compute choice, not part of the config.
    """

    config_class = TopKSAEConfig
    sae_lens_architecture = "topk"
    cfg: TopKSAEConfig
    decode_mode: str = "auto"

    def activation(self, pre_BF: Tensor) -> Tensor:
        return topk_codes(pre_BF, self.cfg.k)

    def train_codes(self, pre_BF: Tensor) -> Tensor:
        return self.activation(pre_BF)

    def train_codes_sparse(self, pre_BF: Tensor) -> tuple[Tensor, SparseCodes]:
        """The entries `train_codes` keeps: their pre-activations (before the ReLU), positions."""
        return topk_sparse(pre_BF, self.cfg.k)

    def loss(self, x_BD: Tensor, step: int, total_steps: int) -> StepOutput:
        sparse = x_BD.dim() == 2 and use_sparse(
            self.decode_mode, self.cfg.k, self.cfg.d_sae, x_BD.device.type
        )
        if sparse:  # the dense pre-activations select; gradients flow through the entries only
            with torch.no_grad():
                pre_BF = self.pre_acts(x_BD)
            pre_N, codes = self.train_codes_sparse(pre_BF)
            vals_N = sparse_encode(pre_N, x_BD, self.W_enc, self.b_enc, codes).relu()
            xhat_BD = sparse_decode(vals_N, self.W_dec, self.b_dec, codes)
            z_BF = codes.dense(vals_N)  # detached: statistics and the step's output
        else:
            pre_BF = self.pre_acts(x_BD)
            z_BF = self.train_codes(pre_BF)
            xhat_BD = self.decode(z_BF)
        sq_err_B = squared_error(xhat_BD, x_BD)
        l_recon = sq_err_B.mean()
        loss, aux = l_recon, torch.zeros((), device=x_BD.device)
        if self.cfg.auxk:
            dead_F = self.firing.dead_mask(self.cfg.dead_after_tokens)
            resid_BD = (x_BD - xhat_BD).detach()
            if x_BD.device.type == "cpu":  # a host sync costs nothing here; O(B x n_dead x D)
                aux = self.aux_nmse_gathered(x_BD, pre_BF, dead_F, resid_BD, sparse)
            else:  # no host sync: the step never waits for the device
                aux = self.aux_nmse_masked(x_BD, pre_BF, dead_F, resid_BD, sparse)
            if aux is not None:
                x_var = (x_BD - x_BD.mean(0)).pow(2).sum(-1).mean()  # D var_x, detached input
                loss = loss + (self.cfg.aux_coefficient * x_var) * aux
            else:
                aux = torch.zeros((), device=x_BD.device)
        return self._output(
            loss,
            xhat_BD,
            z_BF,
            sq_err_B,
            mse=l_recon.detach(),
            l1=z_BF.detach().sum() / x_BD.shape[0],
            aux=aux.detach(),
        )

    @property
    def aux_k_max(self) -> int:
        return min(self.cfg.aux_k, self.cfg.d_sae // 2)

    def aux_nmse_gathered(
        self, x_BD: Tensor, pre_BF: Tensor, dead_F: Tensor, resid_BD: Tensor, sparse: bool
    ) -> Tensor | None:
        """Gao et al.'s normalized_mse(ehat, e) (see `aux_nmse`) over the dead latents' columns
        only, found with `nonzero` (a host sync: the CPU path); None when no latent is dead."""
        dead_L = dead_F.nonzero().squeeze(1)
        if not len(dead_L):
            return None
        # The dead latents' pre-activations with their gradient: the sparse step recomputes
        # these columns (pre_BF has none there).
        pre_BL = (
            torch.addmm(self.b_enc[dead_L], x_BD, self.W_enc[:, dead_L])
            if sparse
            else pre_BF[:, dead_L]
        )
        # Only the dead latents' columns: the cost is O(B x n_dead x D), not O(B x F x D).
        z_aux_BL = topk_codes(pre_BL, min(self.aux_k_max, len(dead_L)))
        return aux_nmse(z_aux_BL @ self.W_dec[dead_L], resid_BD)

    def aux_nmse_masked(
        self, x_BD: Tensor, pre_BF: Tensor, dead_F: Tensor, resid_BD: Tensor, sparse: bool
    ) -> Tensor:
        """The same loss without a host sync (the GPU path): the top `aux_k_max` of the
        pre-activations with the live latents masked to -inf. When fewer latents are dead, the
        extra picks are -inf, 0 after the ReLU, so they add nothing; with none dead the loss is 0
        (`gathered` skips it). Equal to `aux_nmse_gathered` up to float summation order
        (tests/test_train.py)."""
        vals_BK, idx_BK = pre_BF.masked_fill(~dead_F, float("-inf")).topk(
            self.aux_k_max, dim=-1, sorted=False
        )
        if sparse:  # pre_BF has no gradient: recompute the picked entries' with theirs
            B, K = idx_BK.shape
            crow_B1 = torch.arange(0, (B + 1) * K, K, device=x_BD.device)
            codes = SparseCodes.build(crow_B1, idx_BK.flatten(), self.cfg.d_sae)
            vals_BK = sparse_encode(vals_BK.flatten(), x_BD, self.W_enc, self.b_enc, codes).view(
                B, K
            )
        # ehat = one weighted sum of K decoder rows per token (no [B, F] x [F, D] product)
        ehat_BD = F.embedding_bag(idx_BK, self.W_dec, mode="sum", per_sample_weights=vals_BK.relu())
        return torch.where(dead_F.any(), aux_nmse(ehat_BD, resid_BD), 0.0)


def aux_nmse(ehat_BD: Tensor, resid_BD: Tensor) -> Tensor:
    """Gao et al.'s normalized_mse(ehat, e) = sum ||ehat - e||^2 / sum ||e - mean(e)||^2 over the
    batch (0 when e is constant); ehat = TopK_aux(dead pre-acts) W_dec (no b_dec: e has it
    already, as their pre_bias cancels)."""
    # Per token, then over the batch: a sum over the whole [B, D] tensor is split among threads,
    # and its last bits (and so the step, and the run) would depend on their number.
    err = (ehat_BD - resid_BD).pow(2).sum(-1).sum()
    var = (resid_BD - resid_BD.mean(0)).pow(2).sum(-1).sum()
    return (err / var).nan_to_num(0.0)
