"""Shared fixtures: a tiny randomly initialised Llama booted through TransformerBridge (unit tests
use it where the real model adds nothing; the notebooks always run the real model), its
activation caches, and `one_thread` for test modules of tiny matmuls."""

from __future__ import annotations

import string

import pytest
import torch

TINY_LAYERS, TINY_D = 4, 32


def _tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = (
        ["<|endoftext|>", "<unk>"]
        + list(string.ascii_lowercase)
        + [
            "the",
            "cat",
            "sat",
            "on",
            "mat",
            "dog",
            "ran",
            "and",
            "is",
            "of",
            "paris",
            "france",
            "capital",
            ".",
            ",",
        ]
    )
    vocab = {w: i for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )


@pytest.fixture(scope="module")
def one_thread():
    """Tiny matmuls: a second thread only adds synchronisation (and stalls on a busy machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny_llama")
    tokenizer = _tiny_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=TINY_D,
        intermediate_size=64,
        num_hidden_layers=TINY_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=0,
    )
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    from transformer_lens.model_bridge import TransformerBridge

    model = TransformerBridge.boot_transformers(str(tiny_model_dir), device="cpu")
    model.eval()
    return model


@pytest.fixture
def tiny_caches(tiny_model, tmp_path, monkeypatch):
    """A `smoke`-derived profile for the tiny model (layer 1, 16-token contexts) with its train and
    validation activation caches built under tmp_path. Returns (profile, normalizer)."""
    from hsae_utils.config import get_profile
    from hsae_utils.data import activations

    monkeypatch.setenv("HSAE_OUTPUT_ROOT", str(tmp_path))
    monkeypatch.setattr("hsae_utils.data.model.model_fingerprint", lambda profile: "tiny")
    P = get_profile(
        "smoke",
        model_name="tiny",
        n_layers=TINY_LAYERS,
        d_model=TINY_D,
        layer=1,
        context_size=16,
        n_train_tokens=16 * 12,
        n_valid_tokens=16 * 6,
        n_norm_tokens=64,
        shard_tokens=64,
        model_batch_size=4,
        n_eval_contexts=4,
    )
    words = "the cat sat on the mat and the dog ran . paris is the capital of france ,".split()
    texts = lambda: (" ".join(words[i:] + words[:i]) for i in range(10**6))  # noqa: E731
    train = activations.build_cache(P, "train", tiny_model, texts, "tiny", "c")
    norm = activations.ActivationStore(train).normalizer
    activations.build_cache(P, "validation", tiny_model, texts, "tiny", "c", normalizer=norm)
    return P, norm


def synthetic_texts(n_docs: int = 400, seed: int = 0) -> list[str]:
    """Deterministic English-like text (a Zipf-ish draw from random 2-9 letter words) for
    training tiny tokenizers."""
    import random

    rng = random.Random(seed)
    words = [
        "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 9)))
        for _ in range(600)
    ]
    weights = [1 / (i + 1) for i in range(len(words))]
    docs = []
    for _ in range(n_docs):
        sent = rng.choices(words, weights, k=rng.randint(8, 30))
        docs.append(" ".join(sent).capitalize() + ".")
    return docs


# A test-sized tiny Gemma-2 (hsae_utils.data.tiny_gemma with a 512-token vocabulary): sliding window 8,
# so 24-token inputs exercise the local layers' mask.
GEMMA_WINDOW, GEMMA_VOCAB = 8, 512


@pytest.fixture(scope="session")
def tiny_gemma_dir(tmp_path_factory):
    from hsae_utils.data.tiny_gemma import build_tiny_gemma

    folder = tmp_path_factory.mktemp("tiny_gemma")
    build_tiny_gemma(folder, synthetic_texts(), vocab_size=GEMMA_VOCAB, sliding_window=GEMMA_WINDOW)
    return folder


def boot(folder, dtype=torch.float32):
    from transformer_lens.model_bridge import TransformerBridge

    model = TransformerBridge.boot_transformers(str(folder), device="cpu", dtype=dtype)
    model.eval()
    return model


@pytest.fixture(scope="session")
def tiny_gemma(tiny_gemma_dir):
    return boot(tiny_gemma_dir)
