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


def adapter_identity(adapter: SAEAdapter) -> str | None:
    """A key equal for two adapters that compute the same function: the same SAE class, the same
    config up to its `trajectory_neutral_fields` (switches of training mechanisms, which do not
    enter encode / decode), bit-identical tensors and the same normalization. None for an SAE
    that is not ours (no dict config): never deduplicated. At `local` the ablation stages whose
    mechanisms never acted end bit-identical (stage 2 = stage 1, stage 5 = stage 4): each is
    evaluated once (`evaluate_profile`)."""
    import hashlib
    import json

    sae = adapter.sae
    cfg = getattr(getattr(sae, "cfg", None), "to_dict", None)
    if cfg is None or not hasattr(sae, "state_dict"):
        return None
    neutral = set(getattr(type(sae), "trajectory_neutral_fields", ()))
    h = hashlib.sha256()
    h.update(type(sae).__name__.encode())
    fields = {k: v for k, v in cfg().items() if k not in neutral}
    h.update(json.dumps(fields, sort_keys=True, default=str).encode())
    for name, tensor in sorted(sae.state_dict().items()):
        h.update(name.encode())
        h.update(str(tensor.dtype).encode() + str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(repr((adapter.scale, adapter.center)).encode())
    if adapter._mean is not None:
        h.update(adapter._mean.numpy().tobytes())
    return h.hexdigest()
