"""The splice on the tiny Gemma-2 of `paper-tiny` (soft-caps, sliding windows, a vocabulary
larger than a chunk): chunked logits equal unchunked ones, and the KL / CE numbers of the
evaluation equal an independent computation with plain transformers (Gemma2ForCausalLM's own
forward, with a forward hook putting the SAE reconstruction into layer L's output)."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hsae_utils import evals as ev
from hsae_utils.data.tiny_gemma import LAYER
from hsae_utils.evals.core import splice_losses

from .conftest import synthetic_texts
from .test_evaluate import FnSAE

D, S = 64, 24  # tiny Gemma-2's d_model; contexts longer than its sliding window (8)


def noisy_sae(seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.eye(D) + 0.3 * torch.randn(D, D, generator=g)
    return FnSAE(D, lambda x: torch.relu(x @ W), lambda z: z @ W.T)


@pytest.fixture(scope="module")
def tokens(tiny_gemma_dir):
    tok = AutoTokenizer.from_pretrained(tiny_gemma_dir)
    text = " ".join(synthetic_texts(40, seed=3))
    ids = tok(text)["input_ids"]  # Gemma's tokenizer prepends <bos>
    assert ids[0] == tok.bos_token_id
    body = ids[1:]
    rows = [[tok.bos_token_id] + body[i * (S - 1) : (i + 1) * (S - 1)] for i in range(5)]
    return torch.tensor(rows)


def test_layer_resid_takes_the_direct_path_on_gemma_2(tiny_gemma_dir, tokens):
    from hsae_utils.data.forward import layer_resid, resid_at_layer

    from .conftest import boot

    model = boot(tiny_gemma_dir)  # a fresh bridge: the path is chosen on the first call
    got = layer_resid(model, tokens, LAYER)  # 24 tokens: past the sliding window (8)
    assert model._hsae_manual_resid_ok
    torch.testing.assert_close(got, resid_at_layer(model, tokens, LAYER))


def test_chunked_logits_equal_unchunked(tiny_gemma, tokens):
    r = ev.core.layer_resid(tiny_gemma, tokens, LAYER)
    other = r + 0.5 * torch.randn_like(r)
    whole = splice_losses(tiny_gemma, r, [other], tokens, LAYER, chunk_tokens=10**6)
    for chunk in (7, 32):  # chunks that cut contexts mid-way
        got = splice_losses(tiny_gemma, r, [other], tokens, LAYER, chunk_tokens=chunk)
        torch.testing.assert_close(got[0], whole[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got[1][0], whole[1][0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got[2][0], whole[2][0], rtol=1e-5, atol=1e-6)
    assert whole[2][0][:, :-1].min() > 0 and (whole[0][:, -1] == 0).all()


def _reference(hf, tokens, keep, replace):
    """Per-position log-probs of Gemma2ForCausalLM with layer LAYER's output replaced by
    `replace(h)` at the positions `keep` (no replacement when replace is None)."""

    def hook(_module, _inputs, output):
        h = output[0] if isinstance(output, tuple) else output
        new = torch.where(keep[..., None], replace(h), h)
        return (new, *output[1:]) if isinstance(output, tuple) else new

    handle = hf.model.layers[LAYER].register_forward_hook(hook) if replace else None
    try:
        with torch.no_grad():
            return torch.log_softmax(hf(tokens).logits.double(), -1)
    finally:
        if handle:
            handle.remove()


def test_kl_ce_equal_an_independent_full_forward(tiny_gemma, tiny_gemma_dir, tokens):
    hf = AutoModelForCausalLM.from_pretrained(tiny_gemma_dir, dtype=torch.float32).eval()
    assert hf.config.final_logit_softcapping  # the cap binds on this model (test_tiny_gemma)
    adapter = ev.SAEAdapter(noisy_sae())
    bos = int(tokens[0, 0])
    data = ev.build_splice_data(
        tiny_gemma, tokens, LAYER, [0, 1, bos], batch_contexts=2, progress=False
    )
    got = ev.splice_metrics(
        tiny_gemma, data, {"sae": adapter}, LAYER, batch_contexts=2, progress=False
    )["sae"]
    keep, ce_mask = data.keep_NS, data.ce_mask_NS
    assert keep.sum() > 0.9 * keep.numel() - tokens.shape[0]  # BOS out, few massive tokens
    lp_clean = _reference(hf, tokens, keep, None)
    lp_sae = _reference(hf, tokens, keep, lambda h: adapter.reconstruct(h.float())[0])
    # the ablation baseline zeroes every position, BOS included (SAEBench; ablation="all")
    lp_zero = _reference(hf, tokens, torch.ones_like(keep), torch.zeros_like)
    nxt = tokens[:, 1:, None]

    def ce(lp):
        return (-lp[:, :-1].gather(-1, nxt)[..., 0])[ce_mask[:, :-1]].mean().item()

    def kl(lp):
        return (lp_clean.exp() * (lp_clean - lp)).sum(-1)[keep].mean().item()

    want = {
        "ce_loss_without_sae": ce(lp_clean),
        "ce_loss_with_sae": ce(lp_sae),
        "ce_loss_with_ablation": ce(lp_zero),
        "kl_div_with_sae": kl(lp_sae),
        "kl_div_with_ablation": kl(lp_zero),
    }
    for k, v in want.items():
        assert got[k] == pytest.approx(v, abs=1e-5, rel=1e-5), k
    assert want["kl_div_with_sae"] > 1e-3  # a real difference was measured
