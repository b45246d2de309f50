"""A tiny, randomly initialised Gemma-2 in the hub's file layout: the model of the `paper-tiny`
profile, standing in for google/gemma-2-2b where the hub cannot be reached.

It is built with the real `transformers` classes (Gemma2Config, Gemma2ForCausalLM, GemmaTokenizer)
and keeps every architecture feature of gemma-2-2b that changes what our code must do:
- final-logit soft-capping (tanh, outside lm_head) and attention-logit soft-capping;
- alternating sliding-window / global attention, with a window (32) shorter than the profile's
  context (128), so a forward that ignores the sliding mask gives different numbers;
- grouped-query attention (4 query heads, 2 key/value heads), head_dim * heads != d_model (as in
  gemma-2-2b: 8 x 256 = 2,048 != 2,304), query_pre_attn_scalar != head_dim (as in gemma-2-27b);
- pre- and post-norms around attention and MLP, (1 + w) RMSNorms, tied embeddings, the
  sqrt(d_model) embedding scale, gelu-tanh gated MLP;
- Gemma's tokenizer: BPE with byte fallback, "▁" for spaces, <pad>=0 <eos>=1 <bos>=2 <unk>=3
  <mask>=4, and <bos> prepended to every encoded text.

Caps: gemma-2-2b's 50 (attention) / 30 (final) never bind on a randomly initialised model, whose
logits are far smaller; a test of "the cap is applied" would then pass on code that forgets it.
So the replica uses a larger initialisation and caps that bind on it (final 3.0, attention 5.0):
uncapped logits differ from capped ones by several units (see tests/test_tiny_gemma.py).

The tokenizer is a 4,096-token BPE trained with `tokenizers` on the first documents of the embedded
corpus (outputs/corpus/train.jsonl); training and the seeded initialisation are deterministic, so
every build writes the same files.
"""

from __future__ import annotations

import json
from collections import Counter
from itertools import islice
from pathlib import Path

from hsae_utils.config import layer_at_paper_depth
from hsae_utils.data import hub
from hsae_utils.io import sha256_json

REPO_ID = "google/gemma-2-2b"  # the hub id this replica stands in for
VOCAB_SIZE = 4096
N_TRAIN_DOCS = 4000  # corpus documents the tokenizer is trained on (~1.8 MB of text, seconds)
SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]  # ids 0..4, as in Gemma
BYTE_TOKENS = [f"<0x{i:02X}>" for i in range(256)]  # byte fallback, as in Gemma
SEED = 0
ALPHABET_SIZE = 150  # most frequent characters of the training text

# Gemma-2 hyper-parameters, scaled down; every other Gemma2Config default is gemma-2-2b's.
CONFIG = dict(
    vocab_size=VOCAB_SIZE,
    hidden_size=64,
    intermediate_size=256,
    num_hidden_layers=10,  # hook at layer 7 (paper depth); blocks 8 (sliding) and 9 (global) follow
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=24,
    query_pre_attn_scalar=32,
    sliding_window=32,
    max_position_embeddings=256,
    attn_logit_softcapping=5.0,
    final_logit_softcapping=3.0,
    initializer_range=0.2,
    hidden_activation="gelu_pytorch_tanh",
    tie_word_embeddings=True,
    pad_token_id=0,
    eos_token_id=1,
    bos_token_id=2,
)
N_LAYERS, D_MODEL = CONFIG["num_hidden_layers"], CONFIG["hidden_size"]
LAYER = layer_at_paper_depth(N_LAYERS)


def recipe(texts: list[str]) -> dict:
    """Everything that determines the files; a replica built from another recipe is rebuilt."""
    import tokenizers
    import torch
    import transformers

    return {
        "config": CONFIG,
        "vocab_size": VOCAB_SIZE,
        "n_train_docs": N_TRAIN_DOCS,
        "texts_sha256": sha256_json(texts),
        "alphabet_size": ALPHABET_SIZE,
        "seed": SEED,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "torch": torch.__version__.split("+")[0],
    }


def corpus_texts(corpus_dir: Path, n_docs: int = N_TRAIN_DOCS) -> list[str]:
    """The first `n_docs` documents of the embedded corpus's train split."""
    path = Path(corpus_dir) / "train.jsonl"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: the tiny Gemma-2's tokenizer is trained on the embedded corpus. "
            f"Run {hub.PREPARE_HINT} (it builds the corpus first)."
        )
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in islice(f, n_docs)]


def train_tokenizer(texts: list[str], vocab_size: int = VOCAB_SIZE):
    """A Gemma tokenizer (transformers' GemmaTokenizer) with a BPE vocabulary trained on `texts`.
    Training splits at "▁" so that merges stay inside words, as in Gemma's vocabulary."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import GemmaTokenizer

    # The trainer cuts its alphabet at `limit_alphabet` with ties broken in hash order, which
    # changes the ids and every later merge between runs; an explicit alphabet (count, then
    # code point) makes training deterministic. Rarer characters go through byte fallback.
    counts = Counter(ch for t in texts for ch in t.replace(" ", "▁"))
    alphabet = sorted(counts, key=lambda ch: (-counts[ch], ch))[:ALPHABET_SIZE]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS + BYTE_TOKENS,
        initial_alphabet=alphabet,
        limit_alphabet=len(alphabet),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return GemmaTokenizer(
        vocab=model["vocab"], merges=merges, add_bos_token=True, add_eos_token=False
    )


def build_tiny_gemma(
    out_dir: Path, texts: list[str], vocab_size: int = VOCAB_SIZE, **config_overrides
) -> None:
    """Write config.json, generation_config.json, model.safetensors and the tokenizer files of
    a tiny Gemma-2 into `out_dir`, as `save_pretrained` writes them for the hub."""
    import torch
    from transformers import Gemma2Config, Gemma2ForCausalLM

    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(texts, vocab_size)
    torch.manual_seed(SEED)
    config = {**CONFIG, **config_overrides, "vocab_size": len(tokenizer)}
    Gemma2ForCausalLM(Gemma2Config(**config, dtype="float32")).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    if not (out_dir / "special_tokens_map.json").exists():  # the hub repo has one
        special = {
            "bos_token": "<bos>",
            "eos_token": "<eos>",
            "pad_token": "<pad>",
            "unk_token": "<unk>",
            "mask_token": "<mask>",
        }
        (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


def ensure_replica(corpus_dir: Path, force: bool = False) -> Path:
    """The replica of google/gemma-2-2b under hub.replica_root(), built (deterministically, in
    about 20 s) when missing, damaged or from another recipe."""
    texts = corpus_texts(corpus_dir)

    def build(tmp: Path) -> None:
        build_tiny_gemma(tmp, texts)
        n = len(json.loads((tmp / "tokenizer.json").read_text())["model"]["vocab"])
        if n != VOCAB_SIZE:
            raise RuntimeError(
                f"The tokenizer trained on {corpus_dir} has {n} tokens, expected "
                f"{VOCAB_SIZE}: the corpus is too small or damaged; rebuild it."
            )

    return hub.write_replica(REPO_ID, "model", build, recipe(texts), force=force)
