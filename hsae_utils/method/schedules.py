"""Sparsity-coefficient schedules of the HierarchicalSAE (paper section 4.2, Eqs. 3 and 5).

Plain functions of the step and of detached scalars, so they are testable alone and cost nothing.
"""

from __future__ import annotations

import math

import torch


def default_lambda0(d_sae: int) -> float:
    """lambda_0 = 1/sqrt(k) with k the dictionary size (section 4.2; section 5.4: 1/sqrt(2304))."""
    return 1.0 / math.sqrt(d_sae)


def linear_decay(lambda0: float, step: int, total_steps: int) -> float:
    """Eq. 3: lambda_t = lambda_0 (1 - t/T), for steps t = 0 .. T-1 (it would reach 0 at t = T)."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    return lambda0 * (1.0 - step / total_steps)


def adaptive_alpha(
    l_recon: torch.Tensor, l_target: float = 2.5, lo: float = 0.1, hi: float = 2.0
) -> torch.Tensor:
    """Eq. 5: alpha_t = clamp(L_target / L_recon, lo, hi), on the detached reconstruction loss.

    A poor reconstruction (L_recon > L_target) lowers the L1 weight, a good one raises it.
    Returned as a 0-d tensor so the training step never waits on a .item().
    """
    return (l_target / l_recon.detach()).clamp(lo, hi)
