"""Partial forward passes through a TransformerBridge.

Caching needs the residual stream at one layer and nothing after it; evaluation needs the logits
when that residual is replaced by an SAE reconstruction. Running the whole model for either wastes
work, so:
- `resid_at_layer` stops the bridge right after the hooked block (`stop_at_layer`);
- `layer_resid` gives the same tensor faster (2x on CPU for Llama, ~9x for the tiny Gemma-2) by
  calling the decoder layers the bridge wraps directly (checked against `resid_at_layer` once per model);
- `logits_from_layer` starts from a given residual and runs only the remaining blocks, the final
  norm, the unembedding and the architecture's output-logit transform (Gemma-2's final soft-cap,
  which `Gemma2ForCausalLM.forward` applies outside `lm_head`), calling the bridge's own block
  modules (TransformerBridge has no `start_at_layer`). Each block gets the attention mask the HF
  model itself would build for it (causal, or sliding-window causal on Gemma-2's local layers).
  Once per model, layer and length it is checked against the model's own full forward, so an
  architecture it does not reproduce fails loudly instead of giving wrong KL / CE numbers.

Dtypes: the residuals handed in may be fp32 (activation caches, SAE reconstructions) while the
model runs in bf16; they are cast to the model's dtype on the way in, and every function here
returns fp32, which is what the caches and metrics downstream expect.
"""

from __future__ import annotations

import torch


def model_dtype(model) -> torch.dtype:
    """The dtype the model's weights (and so its blocks' inputs) are in."""
    return next(model.original_model.parameters()).dtype


def resid_at_layer(model, tokens_BS: torch.Tensor, layer: int) -> torch.Tensor:
    """Residual stream after block `layer` (`blocks.{layer}.hook_resid_post`), [B, S, D], fp32."""
    hook = f"blocks.{layer}.hook_resid_post"
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens_BS, names_filter=hook, stop_at_layer=layer + 1)
    return cache[hook].float()


def causal_mask(seq_len: int, dtype: torch.dtype, device) -> torch.Tensor:
    """Additive [1, 1, S, S] causal mask: 0 where attention is allowed, -inf above the diagonal."""
    mask = torch.full((seq_len, seq_len), float("-inf"), dtype=dtype, device=device)
    return torch.triu(mask, diagonal=1)[None, None]


def layer_masks(hf_model, h_BSD: torch.Tensor, position_ids: torch.Tensor) -> list:
    """The attention mask of each decoder layer, built by transformers' own mask functions exactly
    as the HF model's forward builds them (per `config.layer_types`: full or sliding-window).

    Eager attention (Gemma-2's) applies no causal mask when given None, so a layer whose mask
    function returns None (SDPA's is_causal shortcut) gets an explicit causal mask."""
    from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

    cfg = hf_model.config
    types = list(getattr(cfg, "layer_types", None) or ["full_attention"] * len(hf_model.layers))
    makers = {
        "full_attention": create_causal_mask,
        "sliding_attention": create_sliding_window_causal_mask,
    }
    unknown = sorted(set(types) - set(makers))
    if unknown:
        raise NotImplementedError(
            f"Attention layer type(s) {unknown} of {cfg.model_type!r} are not supported by "
            "hsae_utils.data.forward: add their mask function to forward.layer_masks."
        )
    kw = dict(
        config=cfg,
        inputs_embeds=h_BSD,
        attention_mask=None,
        past_key_values=None,
        position_ids=position_ids,
    )
    masks = {t: makers[t](**kw) for t in set(types)}
    fallback = causal_mask(h_BSD.shape[1], h_BSD.dtype, h_BSD.device)
    return [fallback if masks[t] is None else masks[t] for t in types]


def _run_blocks(blocks, h_BSD, masks, position_embeddings, position_ids):
    for block, mask in zip(blocks, masks):
        out = block(
            h_BSD,
            position_embeddings=position_embeddings,
            attention_mask=mask,
            position_ids=position_ids,
        )
        h_BSD = out[0] if isinstance(out, tuple) else out
    return h_BSD


def _hidden_from_layer(model, resid_BSD: torch.Tensor, layer: int) -> torch.Tensor:
    """The input of the final norm [B, S, D] (the model's dtype) when
    `blocks.{layer}.hook_resid_post` is `resid_BSD`: blocks layer+1 .. n_layers-1."""
    B, S, _ = resid_BSD.shape
    hf = model.original_model.model  # the HF decoder stack the bridge wraps
    h = resid_BSD.to(model_dtype(model))
    position_ids = torch.arange(S, device=h.device)[None].expand(B, S)
    with torch.no_grad():
        masks = layer_masks(hf, h, position_ids)[layer + 1 :]
        return _run_blocks(
            model.blocks[layer + 1 :], h, masks, hf.rotary_emb(h, position_ids), position_ids
        )


def logits_from_hidden(model, h_BSD: torch.Tensor) -> torch.Tensor:
    """Logits (fp32) from the final norm's input: the final norm, the unembedding and the output
    transform, position by position (so callers may pass any slice of positions)."""
    with torch.no_grad():
        logits = model.unembed(model.ln_final(h_BSD))
        # Gemma-2's final soft-cap (and other architectures' output scaling), as the model applies
        # it after lm_head; the bridge's adapter knows the transform of every supported model.
        logits = model.adapter.apply_output_logits_transform(logits)
    return logits.float()


def _logits_from_layer(model, resid_BSD: torch.Tensor, layer: int) -> torch.Tensor:
    return logits_from_hidden(model, _hidden_from_layer(model, resid_BSD, layer))


def _check_logits_path(model, layer: int, seq_len: int, device) -> None:
    """Compare `_logits_from_layer` with the model's own forward on a random input, once per
    (layer, length): wrong masks, a missing soft-cap or an unsupported block layout fail here."""
    checked = model.__dict__.setdefault("_hsae_logits_checked", set())
    if (layer, seq_len) in checked:
        return
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, model.cfg.d_vocab, (1, seq_len), generator=gen).to(device)
    with torch.no_grad():
        full = model(tokens).float()
    ours = _logits_from_layer(model, resid_at_layer(model, tokens, layer), layer)
    tol = 1e-4 if model_dtype(model) == torch.float32 else 3e-2
    err = (ours - full).abs().max().item()
    if err > tol * max(1.0, full.abs().max().item()):
        raise RuntimeError(
            f"forward.logits_from_layer does not reproduce the forward of this "
            f"{model.original_model.config.model_type!r} model (max |logit difference| {err:.3g} "
            f"at layer {layer}, {seq_len} tokens): its evaluation would be wrong. Support for this "
            "architecture needs adding in hsae_utils/data/forward.py."
        )
    checked.add((layer, seq_len))


def hidden_from_layer(model, resid_BSD: torch.Tensor, layer: int) -> torch.Tensor:
    """The final norm's input [B, S, D] when `blocks.{layer}.hook_resid_post` is `resid_BSD`;
    `logits_from_hidden` of it, in chunks of positions, equals `logits_from_layer` (the splice
    bounds its [tokens, vocab] memory this way: Gemma-2's vocabulary has 256k entries)."""
    _check_logits_path(model, layer, resid_BSD.shape[1], resid_BSD.device)
    return _hidden_from_layer(model, resid_BSD, layer)


def logits_from_layer(model, resid_BSD: torch.Tensor, layer: int) -> torch.Tensor:
    """Logits [B, S, vocab] (fp32) of the model when `blocks.{layer}.hook_resid_post` is
    `resid_BSD`: blocks layer+1 .. n_layers-1, the final norm, the unembedding and the output
    soft-cap, equal to the model's own forward when `resid_BSD` is its own residual."""
    _check_logits_path(model, layer, resid_BSD.shape[1], resid_BSD.device)
    return _logits_from_layer(model, resid_BSD, layer)


def _manual_resid(model, tokens_BS: torch.Tensor, layer: int) -> torch.Tensor:
    """Embedding and blocks 0..layer of the HF decoder stack called directly (Llama-style and
    Gemma-2 models only); faster on CPU than the bridge's `run_with_cache(stop_at_layer=...)`."""
    B, S = tokens_BS.shape
    hf = model.original_model.model
    with torch.no_grad():
        h = hf.embed_tokens(tokens_BS)
        position_ids = torch.arange(S, device=h.device)[None].expand(B, S)
        masks = layer_masks(hf, h, position_ids)[: layer + 1]
        h = _run_blocks(
            hf.layers[: layer + 1], h, masks, hf.rotary_emb(h, position_ids), position_ids
        )
    return h.float()


def layer_resid(model, tokens_BS: torch.Tensor, layer: int) -> torch.Tensor:
    """`blocks.{layer}.hook_resid_post` for `tokens_BS`, [B, S, D], fp32.

    Uses the direct HF path when it reproduces `resid_at_layer` exactly on this model
    (checked once per model on a short input, e.g. Llama / SmolLM2), otherwise the bridge.
    """
    ok = getattr(model, "_hsae_manual_resid_ok", None)
    if ok is None:
        ok = False
        hf = getattr(getattr(model, "original_model", None), "model", None)
        if hf is not None and getattr(hf.config, "model_type", "") in (
            "llama",
            "mistral",
            "qwen2",
            "gemma2",
        ):
            # one whole context: longer than Gemma-2's sliding window, so its mask is checked too
            probe = tokens_BS[:1]
            try:
                ref = resid_at_layer(model, probe, layer)
                ok = bool(
                    torch.allclose(
                        _manual_resid(model, probe, layer),
                        ref,
                        rtol=1e-4,
                        atol=1e-4 * ref.abs().max().item(),
                    )
                )
            except Exception:  # any structural surprise: use the bridge
                ok = False
        model._hsae_manual_resid_ok = ok
    if ok:
        return _manual_resid(model, tokens_BS, layer)
    return resid_at_layer(model, tokens_BS, layer)
