"""The tiny Gemma-2 of `paper-tiny`: real transformers classes with gemma-2-2b's architecture
features, a Gemma tokenizer, deterministic builds."""

import hashlib

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from hsae_utils.config import get_profile
from hsae_utils.data.tiny_gemma import build_tiny_gemma

from .conftest import GEMMA_WINDOW, synthetic_texts


def test_architecture_features_of_gemma_2(tiny_gemma_dir):
    cfg = AutoConfig.from_pretrained(tiny_gemma_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_gemma_dir)
    assert type(model).__name__ == "Gemma2ForCausalLM" and cfg.model_type == "gemma2"
    assert cfg.final_logit_softcapping and cfg.attn_logit_softcapping
    assert cfg.num_key_value_heads < cfg.num_attention_heads  # grouped-query attention
    assert cfg.query_pre_attn_scalar != cfg.head_dim
    assert cfg.layer_types[:4] == ["sliding_attention", "full_attention"] * 2
    assert cfg.sliding_window == GEMMA_WINDOW < get_profile("paper-tiny").context_size
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied
    layer = model.model.layers[0]
    assert hasattr(layer, "post_attention_layernorm") and hasattr(
        layer, "post_feedforward_layernorm"
    )
    ids = torch.tensor([[5, 6, 7]])
    emb = model.model.embed_tokens(ids)  # scaled by sqrt(d_model)
    torch.testing.assert_close(emb, model.model.embed_tokens.weight[ids] * cfg.hidden_size**0.5)


def test_gemma_tokenizer_prepends_bos(tiny_gemma_dir):
    tok = AutoTokenizer.from_pretrained(tiny_gemma_dir)
    assert type(tok).__name__ == "GemmaTokenizer"
    assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    with_bos = tok("Hello world")["input_ids"]
    assert (
        with_bos[0] == 2
        and tok("Hello world", add_special_tokens=False)["input_ids"] == with_bos[1:]
    )
    assert tok.decode(with_bos, skip_special_tokens=True) == "Hello world"
    assert "<0xE6>" in tok.convert_ids_to_tokens(tok("漢")["input_ids"])  # byte fallback


@pytest.mark.parametrize(
    "field", ["final_logit_softcapping", "attn_logit_softcapping", "sliding_window"]
)
def test_each_feature_changes_the_logits(tiny_gemma_dir, field):
    """The caps bind and the window is shorter than the input, so a forward that forgets one of
    them gives visibly different logits (what the forward tests rely on)."""
    tokens = torch.randint(
        5, 500, (1, 3 * GEMMA_WINDOW), generator=torch.Generator().manual_seed(0)
    )

    def logits(**over):
        cfg = AutoConfig.from_pretrained(tiny_gemma_dir, **over)
        with torch.no_grad():
            return AutoModelForCausalLM.from_pretrained(tiny_gemma_dir, config=cfg)(tokens).logits

    off = {"sliding_window": 4096}.get(field)
    assert (logits() - logits(**{field: off})).abs().max() > 0.5


def test_build_is_deterministic(tmp_path):
    texts = synthetic_texts(100)

    def digest(folder):
        build_tiny_gemma(folder, texts, vocab_size=400)
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}

    a, b = digest(tmp_path / "a"), digest(tmp_path / "b")
    assert a == b and {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "generation_config.json",
    } <= set(a)
