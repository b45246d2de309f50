"""The L1-regularised ReLU SAE (the paper's "L1-regularized SAE" baseline, lambda = 0.04)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from hsae_utils.method.saes.base import BaseSAE, SAEConfig, StepOutput, squared_error


@dataclass
class ReLUSAEConfig(SAEConfig):
    l1_coefficient: float = 0.04


class ReLUSAE(BaseSAE):
    """z = ReLU(x W_enc + b_enc) (Eq. 1), xhat = z W_dec + b_dec (Eq. 2).

    Loss = sum_d (x - xhat)^2 + lambda * sum_i |z_i|, both averaged over the batch. Decoder rows
    stay unit-norm (gradient projection before each step, renormalization after it; see base.py).
    Subclasses change the L1 weight through `l1_weight`.
    """

    config_class = ReLUSAEConfig
    sae_lens_architecture = "standard"
    cfg: ReLUSAEConfig

    def activation(self, pre_BF: Tensor) -> Tensor:
        return torch.relu(pre_BF)

    def l1_weight(
        self, step: int, total_steps: int, l_recon: Tensor
    ) -> tuple[float, Tensor | float]:
        """(lambda_t, alpha_t); the L1 term is weighted by their product."""
        return self.cfg.l1_coefficient, 1.0

    def loss(self, x_BD: Tensor, step: int, total_steps: int) -> StepOutput:
        z_BF = torch.relu(self.pre_acts(x_BD))
        xhat_BD = self.decode(z_BF)
        sq_err_B = squared_error(xhat_BD, x_BD)
        l_recon = sq_err_B.mean()
        l1 = z_BF.sum() / x_BD.shape[0]  # z >= 0, so the L1 norm is the plain sum
        lam, alpha = self.l1_weight(step, total_steps, l_recon)
        loss = l_recon + (lam * alpha) * l1
        return self._output(
            loss,
            xhat_BD,
            z_BF,
            sq_err_B,
            mse=l_recon.detach(),
            l1=l1.detach(),
            lambda_t=lam,
            alpha_t=alpha,
        )
