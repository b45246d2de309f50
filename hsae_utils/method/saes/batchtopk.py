"""BatchTopK SAE (Bussmann, Leask & Nanda, "BatchTopK Sparse Autoencoders", 2024)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from hsae_utils.method.saes.base import StepOutput
from hsae_utils.method.saes.sparse_decode import SparseCodes, mask_sparse
from hsae_utils.method.saes.topk import TopKSAE, TopKSAEConfig


@dataclass
class BatchTopKSAEConfig(TopKSAEConfig):
    """k: average latents per token; training keeps the k x B largest activations of the batch.

    threshold_lr: the inference threshold is an EMA of the smallest positive activation kept in
    each training batch, theta <- (1 - lr) theta + lr min_kept (Bussmann et al.'s code, lr 0.01).
    """

    threshold_lr: float = 0.01

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.threshold_lr <= 1:
            raise ValueError(
                f"BatchTopKSAEConfig: threshold_lr must be in (0, 1], got {self.threshold_lr}."
            )


def kth_largest(v_N: Tensor, m: int) -> Tensor:
    """The m-th largest value of a 1-d tensor, exactly.

    A full `topk` over the batch is most of BatchTopK's extra cost on CPU. A strided sample's
    quantile gives a lower bound t_lo that, by a wide margin, leaves at least m values above it;
    then the m largest values are all among those >= t_lo, and `topk` runs on that short list
    (2-3x faster at batch 2,048). If the bound ever leaves fewer than m, the full `topk` runs.
    """
    n = v_N.numel()
    if v_N.device.type == "cpu" and n >= 1 << 16 and m <= n // 2:
        sample = v_N[::61]  # a stride coprime with usual widths: every column is sampled
        q = 1 - m / n
        q_lo = max(0.0, q - 5 * math.sqrt(q * (1 - q) / sample.numel()) - 0.005)
        candidates = v_N[v_N >= sample.quantile(q_lo)]
        if candidates.numel() >= m:
            return candidates.topk(m, sorted=False).values.min()
    return v_N.topk(m, sorted=False).values.min()


def batch_topk_threshold(acts_BF: Tensor, k: int) -> Tensor | float:
    """The smallest kept value: the (k B)-th largest of the ReLU'd activations acts_BF (B = all
    leading dims), or 0 when k B covers them all."""
    m = k * (acts_BF.numel() // acts_BF.shape[-1])
    return 0.0 if m >= acts_BF.numel() else kth_largest(acts_BF.detach().flatten(), m)


def batch_topk_codes(pre_BF: Tensor, k: int) -> Tensor:
    """Keep the k * B largest ReLU'd activations over the whole batch (B = all leading dims).

    Kept = at least the (k B)-th largest value; a tie with it (probability zero for a positive
    value) keeps one more, and zeros kept change nothing."""
    acts_BF = pre_BF.relu()
    return acts_BF * (acts_BF >= batch_topk_threshold(acts_BF, k))


class BatchTopKSAE(TopKSAE):
    """Training: z = BatchTopK(ReLU(pre)) with AuxK as TopKSAE. Inference (`model.eval()`, or
    `encode(x, use_threshold=True)`): z = ReLU(pre) * (pre > theta), a JumpReLU with one global
    threshold theta, which is how SAELens exports it ("jumprelu")."""

    config_class = BatchTopKSAEConfig
    sae_lens_architecture = "jumprelu"
    cfg: BatchTopKSAEConfig

    def __init__(self, cfg: BatchTopKSAEConfig, seed: int = 0):
        super().__init__(cfg, seed)
        self.register_buffer("threshold", torch.zeros(()))

    def train_codes(self, pre_BF: Tensor) -> Tensor:
        return batch_topk_codes(pre_BF, self.cfg.k)

    def train_codes_sparse(self, pre_BF: Tensor) -> tuple[Tensor, SparseCodes]:
        acts_BF = pre_BF.relu()  # the kept positive values (kept zeros add nothing)
        return mask_sparse(
            pre_BF, (acts_BF >= batch_topk_threshold(acts_BF, self.cfg.k)) & (acts_BF > 0)
        )

    def activation(self, pre_BF: Tensor) -> Tensor:
        return self.threshold_codes(pre_BF) if not self.training else self.train_codes(pre_BF)

    def threshold_codes(self, pre_BF: Tensor) -> Tensor:
        return pre_BF.relu() * (pre_BF > self.threshold)

    def encode(self, x_BD: Tensor, use_threshold: bool | None = None) -> Tensor:
        pre_BF = self.pre_acts(x_BD)
        use_threshold = not self.training if use_threshold is None else use_threshold
        return self.threshold_codes(pre_BF) if use_threshold else self.train_codes(pre_BF)

    @torch.no_grad()
    def after_step(
        self,
        step: int,
        x_BD: Tensor,
        out: StepOutput,
        generator: torch.Generator | None = None,
        total_steps: int | None = None,
    ) -> list[dict]:
        # min over kept (positive) activations, without boolean indexing (no host sync)
        min_kept = torch.where(out.z_BF > 0, out.z_BF, float("inf")).amin()
        lr = self.cfg.threshold_lr
        self.threshold.copy_(
            torch.where(
                torch.isfinite(min_kept), (1 - lr) * self.threshold + lr * min_kept, self.threshold
            )
        )
        return super().after_step(step, x_BD, out, generator, total_steps)
