"""Interventions on one latent during a forward pass, at the SAE's hook
(`blocks.{layer}.hook_resid_post`), and the change they make to next-token log-probabilities.

- ablate: subtract the latent's contribution z_i(x) d_i from the residual at each chosen position
  (the rest of the residual, the SAE's error included, is left as it was: SAELens'
  `use_error_term=True` splice with latent i zeroed is the same edit);
- steer: add c d_i at each chosen position.
d_i is the latent's decoder row in raw activation units (`SAEAdapter.decoder_rows` / scale).

Why our own forward hook and not SAELens' `SAETransformerBridge` (sae-lens 6.54): attached to our
bridge (SAELens' own `boot_transformers` converts a booted `TransformerBridge` the same way, by
setting `__class__`) with one of our exports loaded by `sae_lens.SAE.load_from_disk`, a splice
with `use_error_term=True` and no edit at all should reproduce the clean forward, but on the tiny
Llama of the tests it changed next-token log-probabilities by up to 0.73 (the SAE's latents there
equal ours exactly; we did not trace the cause inside the wrapper, which replaces the hook module
at `blocks.L.hook_out`). A forward hook at `blocks.L.hook_resid_post` changes nothing but the edit
(tested against the rest of the model run by hand), works for every `SAEAdapter` (ours and
external SAEs alike) and leaves the shared model as it was.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class InterventionResult:
    """Log-probabilities [B, S, V] (fp32) of the clean and the edited forward pass."""

    logp_clean_BSV: Tensor
    logp_edit_BSV: Tensor

    @property
    def delta_BSV(self) -> Tensor:
        return self.logp_edit_BSV - self.logp_clean_BSV

    def change(self, token_ids, pos: int = -1, batch: int = 0) -> Tensor:
        """Change of the log-probability of `token_ids` as the next token after position `pos`."""
        return self.delta_BSV[batch, pos, torch.as_tensor(token_ids)]

    def top_changes(
        self, tokenizer, pos: int = -1, k: int = 5, batch: int = 0
    ) -> dict[str, list[tuple[str, float]]]:
        """The k next tokens whose log-probability rose / fell most."""
        d = self.delta_BSV[batch, pos]
        up, down = d.topk(k), (-d).topk(k)
        name = lambda i: tokenizer.decode([int(i)])  # noqa: E731
        return {
            "up": [(name(i), float(v)) for v, i in zip(up.values, up.indices)],
            "down": [(name(i), float(-v)) for v, i in zip(down.values, down.indices)],
        }


def raw_direction(adapter, latent: int) -> Tensor:
    """Decoder row of `latent` in raw activation units: a normalized-space change v is v / scale
    in the raw space (centering shifts points, not directions)."""
    return adapter.decoder_rows()[latent] / adapter.scale


def _positions(tokens_BS: Tensor, positions: Tensor | None) -> Tensor:
    """Default: every position but the first (BOS, an attention sink no SAE was trained on)."""
    if positions is not None:
        return positions.bool().to(tokens_BS.device)
    mask = torch.ones(tokens_BS.shape, dtype=torch.bool, device=tokens_BS.device)
    mask[:, 0] = False
    return mask


def _log_probs(model, tokens_BS: Tensor, hook_name: str | None = None, fn=None) -> Tensor:
    with torch.no_grad():
        if fn is None:
            logits = model(tokens_BS)
        else:
            logits = model.run_with_hooks(tokens_BS, fwd_hooks=[(hook_name, fn)])
    return logits.float().log_softmax(-1)


def intervene(
    model,
    adapter,
    tokens_BS: Tensor,
    latent: int,
    hook_name: str,
    mode: str = "ablate",
    coef: float = 0.0,
    positions: Tensor | None = None,
) -> InterventionResult:
    """Run the model clean and with `latent` ablated (`mode="ablate"`) or its decoder direction
    added `coef` times (`mode="steer"`) at `positions` (bool [B, S]; default all but BOS)."""
    if mode not in ("ablate", "steer"):
        raise ValueError(f"mode must be 'ablate' or 'steer', got {mode!r}.")
    d_D = raw_direction(adapter, latent)
    mask_BS = _positions(tokens_BS, positions)

    def edit(resid_BSD, hook):
        x = resid_BSD.float()
        if mode == "ablate":
            z_BS = adapter.encode(x.to(adapter.W_dec.device))[..., latent].float().to(x.device)
            delta_BSD = -z_BS[..., None] * d_D.to(x.device)
        else:
            delta_BSD = coef * d_D.to(x.device).expand_as(x)
        x = x + torch.where(mask_BS[..., None], delta_BSD, torch.zeros_like(delta_BSD))
        return x.to(resid_BSD.dtype)

    return InterventionResult(
        _log_probs(model, tokens_BS), _log_probs(model, tokens_BS, hook_name, edit)
    )
