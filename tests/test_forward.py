import pytest
import torch
from transformers import AutoModelForCausalLM

from hsae_utils.data.forward import (
    causal_mask,
    layer_resid,
    logits_from_layer,
    model_dtype,
    resid_at_layer,
)

from .conftest import GEMMA_WINDOW, TINY_D, TINY_LAYERS, boot

# Stated tolerance of a bf16 model against the same model in fp32 (bf16 keeps 8 mantissa bits).
# Measured on the paper-tiny Gemma-2 (8 x 128 tokens): mean |logit difference| 0.023 (max 0.42),
# KL(fp32 || bf16) 3e-4 per token on average (max 3e-3). Asserted with a margin of 2-3x:
BF16_MEAN_ABS_LOGIT, BF16_MAX_TOKEN_KL = 0.05, 1e-2


def _kl_per_token(ref_BSV, other_BSV):
    lp, lq = ref_BSV.log_softmax(-1), other_BSV.log_softmax(-1)
    return (lp.exp() * (lp - lq)).sum(-1)


def test_causal_mask_blocks_the_future():
    m = causal_mask(3, torch.float32, "cpu")[0, 0]
    assert m.shape == (3, 3)
    assert torch.isinf(m[0, 1]) and m[1, 0] == 0 and m[2, 2] == 0


def test_resid_at_layer_matches_full_run(tiny_model):
    tokens = torch.randint(2, 40, (2, 16))
    _, cache = tiny_model.run_with_cache(tokens)
    for layer in (0, TINY_LAYERS - 2):
        resid = resid_at_layer(tiny_model, tokens, layer)
        assert resid.shape == (2, 16, TINY_D)
        torch.testing.assert_close(resid, cache[f"blocks.{layer}.hook_resid_post"])


def test_logits_from_layer_reproduces_clean_logits(tiny_model):
    tokens = torch.randint(2, 40, (2, 16))
    with torch.no_grad():
        clean = tiny_model(tokens)
    for layer in (0, 1, TINY_LAYERS - 1):
        resid = resid_at_layer(tiny_model, tokens, layer)
        torch.testing.assert_close(logits_from_layer(tiny_model, resid, layer), clean)


def test_logits_from_layer_is_causal(tiny_model):
    """Changing the residual at the last position must not change earlier logits."""
    tokens = torch.randint(2, 40, (1, 8))
    resid = resid_at_layer(tiny_model, tokens, 1)
    edited = resid.clone()
    edited[:, -1] += 5.0
    a, b = logits_from_layer(tiny_model, resid, 1), logits_from_layer(tiny_model, edited, 1)
    torch.testing.assert_close(a[:, :-1], b[:, :-1])
    assert not torch.allclose(a[:, -1], b[:, -1])


# ------------------------------------------------- every architecture, fp32 and bf16


@pytest.fixture(scope="module", params=["llama", "gemma2"])
def arch(request, tiny_model_dir, tiny_gemma_dir):
    """(folder, vocab ids to draw from, sequence length, layers to splice at): the tiny
    Llama (SmolLM2's architecture) and the tiny Gemma-2 with inputs 3x its sliding window."""
    if request.param == "llama":
        return tiny_model_dir, (2, 40), 16, (0, 1, TINY_LAYERS - 1)
    return tiny_gemma_dir, (5, 500), 3 * GEMMA_WINDOW, (0, 7, 8)


def _reference_logits(folder, tokens, dtype):
    """The plain transformers forward (no bridge), fp32."""
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).eval()
    with torch.no_grad():
        return hf(tokens).logits.float()


def test_logits_from_layer_equal_the_full_forward_fp32(arch):
    """Soft-cap, sliding-window masks, GQA, post-norms included: exactly the bridge's own forward
    and transformers' forward (to 1e-5)."""
    folder, (lo, hi), S, layers = arch
    model = boot(folder)
    tokens = torch.randint(lo, hi, (2, S), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        bridge = model(tokens).float()
    plain = _reference_logits(folder, tokens, torch.float32)
    torch.testing.assert_close(bridge, plain, rtol=0, atol=1e-5)
    for layer in layers:
        for resid in (layer_resid(model, tokens, layer), resid_at_layer(model, tokens, layer)):
            logits = logits_from_layer(model, resid, layer)
            torch.testing.assert_close(logits, bridge, rtol=0, atol=1e-5)
            torch.testing.assert_close(logits, plain, rtol=0, atol=1e-5)


def test_bf16_model_takes_fp32_inputs_and_gives_fp32(arch):
    """A bf16 model through layer_resid and logits_from_layer with fp32 residuals (a cache, an SAE
    reconstruction): no dtype crash, fp32 out, equal to the bf16 model's own forward (the same
    bf16 operations) and within the stated tolerance of the fp32 model."""
    folder, (lo, hi), S, layers = arch
    model = boot(folder, torch.bfloat16)
    assert model_dtype(model) == torch.bfloat16
    tokens = torch.randint(lo, hi, (2, S), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        own = model(tokens).float()
    fp32 = _reference_logits(folder, tokens, torch.float32)
    for layer in layers:
        resid = layer_resid(model, tokens, layer)
        assert resid.dtype == torch.float32
        logits = logits_from_layer(model, resid, layer)
        assert logits.dtype == torch.float32
        torch.testing.assert_close(logits, own, rtol=0, atol=1e-2)
        assert (logits - fp32).abs().mean() < BF16_MEAN_ABS_LOGIT
        assert _kl_per_token(fp32, logits).max() < BF16_MAX_TOKEN_KL


def test_an_unreproduced_forward_is_refused(tiny_gemma_dir):
    """If the splice path misses a transform of the model's forward (here: the adapter's
    final soft-cap made a no-op, as the old code had it), logits_from_layer refuses to run."""
    model = boot(tiny_gemma_dir)
    model.adapter.apply_output_logits_transform = lambda logits: logits
    tokens = torch.randint(5, 500, (1, 16))
    with pytest.raises(RuntimeError, match="does not reproduce the forward of this 'gemma2'"):
        logits_from_layer(model, resid_at_layer(model, tokens, 3), 3)
