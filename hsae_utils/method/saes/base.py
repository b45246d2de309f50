"""What every SAE here shares: parameters, init, the unit-norm decoder, firing statistics.

Conventions (all architectures):
- Inputs x_BD are already normalized by the activation store (x_norm = x * scale, optionally
  centred first). The SAE never normalizes; its config only records the normalization in
  `normalization` so that export can fold it into the weights (see `hsae_utils.method.checkpoint`).
- Parameters: W_enc [D, F], b_enc [F], W_dec [F, D], b_dec [D]. Pre-activations are
  x W_enc + b_enc (paper Eq. 1: b_dec is not subtracted before encoding); xhat = z W_dec + b_dec.
- Losses: squared error summed over the D dimensions, mean over the batch (SAELens 6's "mse"
  convention; SAEBench's "mse" also divides each token's error by its batch's token count).
- Decoder rows are kept unit-norm: the trainer removes the gradient component parallel to each
  row before the optimizer step (`remove_parallel_decoder_grad`) and renormalizes the rows after
  it (`normalize_decoder_`), as SAELens and dictionary_learning do. The second is needed because
  Adam's weight decay and the finite step both change the row norms.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from numbers import Integral
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from hsae_utils.method.mechanisms import FiringCounter


def default_normalization() -> dict[str, Any]:
    return {"scale": 1.0, "center": False, "mean": None}


@dataclass
class SAEConfig:
    """Fields common to all architectures.

    normalization: how the store normalized the inputs, {"scale": s, "center": bool, "mean": list
        or None}: x_norm = (x - mean if center) * s. Recorded, never applied by the SAE.
    dead_after_tokens: a latent is "dead" once it has not fired for this many tokens (AuxK and
        the logged dead count). Default 100 steps x 2,048 tokens, the paper's 200K-token window;
        Gao et al. used 10M tokens for much longer runs.
    """

    d_in: int
    d_sae: int
    hook_name: str = ""
    model_name: str = ""
    normalization: dict[str, Any] = field(default_factory=default_normalization)
    dead_after_tokens: int = 204_800

    def __post_init__(self):
        # Sizes are checked here, so a bad value fails when the config is made, not mid-training.
        for name in ("d_in", "d_sae", "dead_after_tokens"):
            value = getattr(self, name)
            if not isinstance(value, Integral) or value <= 0:
                raise ValueError(
                    f"{type(self).__name__}: {name} must be a positive integer, "
                    f"got {value!r}; pass {name}=<a positive int>."
                )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        return cls(**d)


class _SquaredError(torch.autograd.Function):
    """||xhat - x||^2 per row. Its backward is one pass over [B, D], 2 (xhat - x) grad, where
    autograd's pow backward takes three; the gradient is bit-identical (scaling by 2 is exact)."""

    @staticmethod
    def forward(ctx, xhat_BD: Tensor, x_BD: Tensor) -> Tensor:
        diff_BD = xhat_BD - x_BD
        ctx.save_for_backward(diff_BD)
        return diff_BD.pow(2).sum(-1)

    @staticmethod
    def backward(ctx, grad_B: Tensor):
        (diff_BD,) = ctx.saved_tensors
        grad_BD = diff_BD * (2 * grad_B).unsqueeze(-1)
        return grad_BD, (-grad_BD if ctx.needs_input_grad[1] else None)


def squared_error(xhat_BD: Tensor, x_BD: Tensor) -> Tensor:
    """Per-token squared error summed over dimensions, [B] (differentiable in both inputs)."""
    return _SquaredError.apply(xhat_BD, x_BD)


@dataclass
class StepOutput:
    """One training forward pass. Everything but `loss` is detached (read by the trainer and the
    mechanisms after the optimizer step, without another forward pass)."""

    loss: Tensor
    xhat_BD: Tensor
    z_BF: Tensor
    sq_err_B: Tensor  # per-token squared error, summed over dimensions
    fired_F: Tensor  # int: tokens of the batch on which each latent was non-zero
    metrics: dict[str, Tensor | float] = field(default_factory=dict)


class BaseSAE(nn.Module):
    """Linear encoder / decoder with a unit-norm dictionary. Subclasses define `activation`
    (pre-activations -> codes) and `loss`."""

    config_class: ClassVar[type[SAEConfig]] = SAEConfig
    # Name of the SAELens inference architecture this SAE exports to.
    sae_lens_architecture: ClassVar[str] = "standard"

    def __init__(self, cfg: SAEConfig, seed: int = 0):
        super().__init__()
        self.cfg = cfg
        D, F = cfg.d_in, cfg.d_sae
        self.W_enc = nn.Parameter(torch.empty(D, F))
        self.b_enc = nn.Parameter(torch.zeros(F))
        self.W_dec = nn.Parameter(torch.empty(F, D))
        self.b_dec = nn.Parameter(torch.zeros(D))
        self.firing = FiringCounter(F)
        self.reset_parameters(seed)

    # ------------------------------------------------------------------ init
    @torch.no_grad()
    def reset_parameters(self, seed: int) -> None:
        """Random unit-norm decoder rows, tied encoder W_enc = W_dec.T, zero biases, zero state."""
        g = torch.Generator(device="cpu").manual_seed(seed)
        W_dec_FD = torch.randn(self.cfg.d_sae, self.cfg.d_in, generator=g)
        W_dec_FD /= W_dec_FD.norm(dim=-1, keepdim=True)
        self.W_dec.copy_(W_dec_FD)
        self.W_enc.copy_(W_dec_FD.T)
        self.b_enc.zero_()
        self.b_dec.zero_()
        for buf in self.buffers():
            buf.zero_()

    # ------------------------------------------------------------------ forward
    # addmm fuses the bias; inputs with extra leading dims ([batch, seq, d]) are flattened first.
    def pre_acts(self, x_BD: Tensor) -> Tensor:
        pre = torch.addmm(self.b_enc, x_BD.reshape(-1, self.cfg.d_in), self.W_enc)
        return pre.view(*x_BD.shape[:-1], self.cfg.d_sae)

    def activation(self, pre_BF: Tensor) -> Tensor:
        raise NotImplementedError

    def encode(self, x_BD: Tensor) -> Tensor:
        return self.activation(self.pre_acts(x_BD))

    def decode(self, z_BF: Tensor) -> Tensor:
        xhat = torch.addmm(self.b_dec, z_BF.reshape(-1, self.cfg.d_sae), self.W_dec)
        return xhat.view(*z_BF.shape[:-1], self.cfg.d_in)

    def forward(self, x_BD: Tensor) -> tuple[Tensor, Tensor]:
        z_BF = self.encode(x_BD)
        return self.decode(z_BF), z_BF

    def loss(self, x_BD: Tensor, step: int, total_steps: int) -> StepOutput:
        raise NotImplementedError

    def _output(
        self,
        loss: Tensor,
        xhat_BD: Tensor,
        z_BF: Tensor,
        sq_err_B: Tensor,
        **metrics: Tensor | float,
    ) -> StepOutput:
        z_BF = z_BF.detach()
        with torch.no_grad():
            # int32 accumulation is about 3x faster than the default int64 on CPU.
            fired_F = (z_BF > 0).sum(0, dtype=torch.int32)
        return StepOutput(loss, xhat_BD.detach(), z_BF, sq_err_B.detach(), fired_F, metrics)

    # ------------------------------------------------------------------ decoder constraint
    @torch.no_grad()
    def remove_parallel_decoder_grad(self) -> None:
        """Project each decoder row's gradient onto the tangent space of the unit sphere."""
        W, g = self.W_dec, self.W_dec.grad
        if g is not None:
            g.sub_((g * W).sum(-1, keepdim=True) * W)

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-8))

    # ------------------------------------------------------------------ after the optimizer step
    @torch.no_grad()
    def after_step(
        self,
        step: int,
        x_BD: Tensor,
        out: StepOutput,
        generator: torch.Generator | None = None,
        total_steps: int | None = None,
    ) -> list[dict[str, Any]]:
        """Update statistics (and, in subclasses, run mechanisms) after step `step` (0-based) of
        `total_steps` (None: unknown, never the last).

        Returns events, each a dict with "event", "step" (1-based, completed steps) and "reset":
        the latents re-initialised, whose optimizer state the trainer must reset.
        """
        self.firing.update(out.fired_F, x_BD.shape[0])
        return []

    def dead_mask(self) -> Tensor:
        """The dead latents as this architecture counts them (logged by the trainer)."""
        return self.firing.dead_mask(self.cfg.dead_after_tokens)

    def extra_repr(self) -> str:
        return f"d_in={self.cfg.d_in}, d_sae={self.cfg.d_sae}"
