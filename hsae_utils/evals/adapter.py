"""`SAEAdapter`: an SAE trained on normalized activations, applied to raw ones (every eval's view
of an SAE: ours, or a SAELens SAE through `external.NormalizedSpaceSAE`)."""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor


class SAEAdapter:
    """An SAE trained on normalized activations, applied to raw ones:
    x_raw -> x_norm = (x_raw - mean if center) * scale -> SAE -> inverse."""

    def __init__(self, sae, normalization: Mapping[str, Any] | None = None):
        self.sae = sae.eval() if hasattr(sae, "eval") else sae
        norm = dict(
            normalization
            if normalization is not None
            else getattr(getattr(sae, "cfg", None), "normalization", None) or {}
        )
        self.scale = float(norm.get("scale", 1.0) or 1.0)
        self.center = bool(norm.get("center", False)) and norm.get("mean") is not None
        self._mean = torch.tensor(norm["mean"], dtype=torch.float32) if self.center else None

    @property
    def d_sae(self) -> int:
        return int(self.sae.W_dec.shape[0])

    @property
    def W_dec(self) -> Tensor:
        return self.sae.W_dec

    @torch.no_grad()
    def decoder_rows(self, chunk: int = 512) -> Tensor:
        """Each latent's decoder row in the normalized space, [F, D] on the CPU, measured
        through `decode` (decode(e_i) - decode(0)), so it holds for any SAE: ours (unit rows) or
        a SAELens SAE seen through `external.NormalizedSpaceSAE` (rows of norm `scale` x its
        raw-space norm)."""
        F, device = self.d_sae, self.W_dec.device
        zero_D = self.sae.decode(torch.zeros(1, F, device=device)).float()
        rows = [
            (self.sae.decode(torch.eye(F, device=device)[i : i + chunk]).float() - zero_D).cpu()
            for i in range(0, F, chunk)
        ]
        return torch.cat(rows)

    def normalize(self, x_raw: Tensor) -> Tensor:
        if self.center:
            x_raw = x_raw - self._mean.to(x_raw.device, x_raw.dtype)
        return x_raw * self.scale

    def denormalize(self, x_norm: Tensor) -> Tensor:
        x = x_norm / self.scale
        if self.center:
            x = x + self._mean.to(x.device, x.dtype)
        return x

    @torch.no_grad()
    def encode(self, x_raw: Tensor) -> Tensor:
        return self.sae.encode(self.normalize(x_raw))

    @torch.no_grad()
    def reconstruct(self, x_raw: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(xhat_raw, z, x_norm, xhat_norm) for rows x_raw [..., D]."""
        shape = x_raw.shape
        x_norm = self.normalize(x_raw.reshape(-1, shape[-1]))
        z = self.sae.encode(x_norm)
        xhat_norm = self.sae.decode(z)
        return (
            self.denormalize(xhat_norm).reshape(shape),
            z.reshape(*shape[:-1], -1),
            x_norm.reshape(shape),
            xhat_norm.reshape(shape),
        )
