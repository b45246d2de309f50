"""First-letter absorption (hsae_utils.absorption): SAEBench's rules on hand-made cases."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hsae_utils.evals import absorption as ab
from hsae_utils.evals.adapter import SAEAdapter

from .conftest import TINY_D


# ----------------------------------------------------------------------------- the rules
def test_full_absorption_main_latent_silent_aligned_latent_carries_the_probe():
    # latent 0: the letter's main latent (silent here); latent 1: aligned with the probe
    cos = torch.tensor([0.9, 0.8, 0.0, -0.5])
    z = torch.tensor([[0.0, 2.0, 0.0, 0.0]])
    act = torch.tensor([1.8])  # the residual's projection on the probe
    frac, full = ab.absorption_for_letter(z, act, cos, main_ids=[0])
    assert bool(full[0]) and frac[0] == pytest.approx(1.0)


def test_no_absorption_when_the_main_latent_fires():
    cos = torch.tensor([0.9, 0.8, 0.0, -0.5])
    z = torch.tensor([[2.0, 0.0, 1.0, 0.0]])
    frac, full = ab.absorption_for_letter(z, torch.tensor([1.8]), cos, main_ids=[0])
    assert not bool(full[0]) and frac[0] == 0.0


def test_partial_absorption_fraction():
    # main projection 0.5, absorber projection 1.0, residual 2.0 -> 1.0 / (1.0 + 0.5)
    cos = torch.tensor([0.5, 0.5, 0.05])
    z = torch.tensor([[1.0, 2.0, 3.0]])  # latent 2: cos < 0.1, not a potential absorber
    frac, full = ab.absorption_for_letter(z, torch.tensor([2.0]), cos, main_ids=[0])
    assert frac[0] == pytest.approx(1.0 / 1.5)
    assert not bool(full[0])  # the main latent fired


def test_weakly_aligned_or_small_latents_do_not_count():
    cos = torch.tensor([0.9, 0.02, 0.3])
    # top projecting latent has cos 0.02 < 0.025: not full absorption; absorber share < 40 %
    z = torch.tensor([[0.0, 50.0, 0.5]])
    frac, full = ab.absorption_for_letter(z, torch.tensor([2.0]), cos, main_ids=[0])
    assert not bool(full[0]) and frac[0] == 0.0
    # a negative residual projection is never absorption
    frac, full = ab.absorption_for_letter(
        torch.tensor([[0.0, 0.0, 3.0]]), torch.tensor([-1.0]), cos, main_ids=[0]
    )
    assert not bool(full[0]) and frac[0] == 0.0


def test_k_sparse_finds_the_planted_main_latent():
    rng = np.random.default_rng(0)
    n, F = 400, 30
    y = rng.integers(0, 2, n).astype(bool)
    z = np.abs(rng.normal(size=(n, F))) * 0.3
    z[:, 7] = np.where(y, 3.0 + rng.random(n), 0.0)  # the letter's latent
    ranking = torch.from_numpy(z[y].mean(0) - z[~y].mean(0)).float()
    main, f1s = ab.k_sparse_main_latents(z[:300], y[:300], z[300:], y[300:], ranking)
    assert main == [7] and f1s[0] == pytest.approx(1.0)
    assert len(f1s) == 2  # k = 2 brings no F1 jump: stop


def test_l1_probe_ranks_the_informative_latent_first():
    rng = np.random.default_rng(1)
    n, F = 260, 40
    y = torch.from_numpy(rng.integers(0, 26, n))
    z = torch.from_numpy(np.abs(rng.normal(size=(n, F))) * 0.2).float()
    z[:, 11] += (y == 3).float() * 4  # letter "d"
    W = ab.train_l1_probe(z, y, seed=0)
    assert W.shape == (26, F) and W[3].argmax().item() == 11


# ----------------------------------------------------------------------------- end to end
class MarkerSAE(torch.nn.Module):
    """Latent L (< 26) reads letter direction e_L. Latent 26 absorbs letter "b" on tokens that
    carry a marker (dimension 30): there latent 1 ("b") is silent and latent 26, whose decoder is
    e_b, fires instead."""

    def __init__(self, d=32):
        super().__init__()
        W = torch.zeros(27, d)
        W[:26, :26] = torch.eye(26)
        W[26, 1] = 1.0
        self.W_dec = torch.nn.Parameter(W)
        self.cfg = SimpleNamespace(normalization={"scale": 1.0, "center": False, "mean": None})

    def encode(self, x):
        z = torch.relu(x[:, :26] - 1.0)
        marked = x[:, 30] > 0.5
        z = torch.cat([z, torch.zeros(len(x), 1)], 1)
        z[marked, 26] = z[marked, 1] + 1.0
        z[marked, 1] = 0.0
        return z

    def decode(self, z):
        return z @ self.W_dec


def synthetic_letters(n_per_letter, rng, marked_b=0):
    x, y = [], []
    for c in range(26):
        for i in range(n_per_letter):
            v = rng.normal(scale=0.3, size=32)
            v[c] += 4.0
            v[30] = 1.0 if (c == 1 and i < marked_b) else 0.0
            x.append(v)
            y.append(c)
    return np.array(x, np.float32), np.array(y)


def test_hand_made_sae_scores_full_absorption_for_the_absorbed_letter():
    rng = np.random.default_rng(0)
    x_tr, y_tr = synthetic_letters(20, rng)
    x_te, y_te = synthetic_letters(10, rng, marked_b=4)  # 4 of the 10 test "b" words absorbed
    data = ab.AbsorptionData.from_arrays(x_tr, y_tr, x_te, y_te, min_letters=20)
    assert data.n_good_letters == 26
    summary, rows = ab.evaluate_absorption(SAEAdapter(MarkerSAE()), data, seed=0)
    by = {r["letter"]: r for r in rows}
    assert by["b"]["main_latents"] == "1"
    assert by["b"]["num_probe_true_positives"] == 10
    assert by["b"]["full_absorption_rate"] == pytest.approx(0.4)
    assert by["b"]["mean_absorption_fraction"] == pytest.approx(0.4)
    for letter in "acdz":
        assert by[letter]["full_absorption_rate"] == 0.0
    assert summary["mean_full_absorption_score"] == pytest.approx(0.4 / 26)
    assert summary["absorption_valid"] == 1.0 and summary["absorption_n_letters"] == 26


def test_weak_probe_letters_are_excluded_and_flagged():
    rng = np.random.default_rng(0)
    x_tr, y_tr = synthetic_letters(12, rng)
    x_te, y_te = synthetic_letters(6, rng)
    x_tr[:, :26] = rng.normal(size=(len(x_tr), 26))  # no letter information at all
    x_te[:, :26] = rng.normal(size=(len(x_te), 26))
    data = ab.AbsorptionData.from_arrays(x_tr, y_tr, x_te, y_te, min_letters=20)
    assert data.n_good_letters < 20
    assert any("SAEBench needs" in n for n in ab._notes(data))
    summary, rows = ab.evaluate_absorption(SAEAdapter(MarkerSAE()), data, seed=0)
    assert summary["absorption_valid"] == 0.0
    assert summary["absorption_n_letters"] == sum(r["included"] for r in rows)


# ----------------------------------------------------------------------------- vocabulary
def test_vocabulary_split_and_groups(tiny_model):
    tok = tiny_model.tokenizer
    vocab = ab.alphabetic_vocab(tok, [0, 1])
    words = {w for _, w in vocab}
    assert {"a", "cat", "paris"} <= words and "." not in words and "<unk>" not in words
    assert ab.is_alphabetic(" Cat") and not ab.is_alphabetic("  cat") and not ab.is_alphabetic("é")
    sample = ab.sample_vocab(vocab, 26, seed=0)
    assert len({ab.first_letter(w) for _, w in sample}) == 26
    train, test = ab.split_vocab(vocab, seed=0)
    assert not set(train) & set(test) and len(train) + len(test) == len(vocab)
    groups = ab.make_groups(train, 3, seed=0, group_size=5)
    assert sorted(w for _, q in groups for w in q) == sorted(train)
    for icl, query in groups:
        assert len(icl) == 3 and not set(icl) & set(query)


def test_shared_prefix_kv_path_matches_full_prompts(tiny_model):
    pieces = ab.PromptPieces(
        bos=0,
        separator=[38],
        suffix=[28, 39, 40],
        answers={L: [2 + i] for i, L in enumerate(ab.LETTERS)},
    )
    vocab = ab.alphabetic_vocab(tiny_model.tokenizer, [0, 1])
    groups = ab.make_groups(vocab, 4, seed=0, group_size=6)
    prefix = pieces.prefix(groups[0][0])
    ids = [t for t, _ in groups[0][1]]
    full = ab._word_resid_full(tiny_model, prefix, ids, layer=1)
    kv = ab._word_resid_kv(tiny_model, prefix, ids, layer=1)
    torch.testing.assert_close(kv, full, rtol=1e-4, atol=1e-5)
    acts, words, method = ab.word_activations(tiny_model, groups[:2], pieces, 1, progress=False)
    assert method == "kv" and acts.shape == (len(words), TINY_D)


# ----------------------------------------------------------------------------- SAEBench's vocabulary
def _bpe_tokenizer():
    """A byte-level BPE tokenizer (SmolLM2's / GPT-2's kind: leading spaces as 'Ġ') trained on
    text with capitals, digits, punctuation and accents, so every branch of the rule is hit."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    text = (
        "The cat sat on the mat. Paris is the capital of France, année 2024! "
        "Über café naïve x86 don't e-mail CamelCase the THE The cats catalogue "
    ) * 20
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        [text],
        trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>"
    )


def _tokenizers():
    """The BPE tokenizer above, and the embedded SmolLM2's (49k tokens, ~9 s) where set-up has
    cached it (Gemma's 256k-token vocabulary would take a minute)."""
    from transformers import AutoTokenizer

    from hsae_utils.config import EMBEDDED_MODEL, cache_root

    out = [("bpe", _bpe_tokenizer())]
    folder = cache_root() / "models" / f"{EMBEDDED_MODEL}-fp32"
    if (folder / "tokenizer.json").exists():
        out.append(("smollm2", AutoTokenizer.from_pretrained(folder)))
    return out


@pytest.mark.parametrize("name,tok", _tokenizers(), ids=lambda v: v if isinstance(v, str) else "")
def test_alphabetic_vocab_is_saebenchs_get_alpha_tokens(name, tok):
    """Our vocabulary (every alphabetic token that re-encodes to itself) is the word list of
    SAEBench's own `get_alpha_tokens` on the same tokenizer; `absorption_vocab_size = 0` (the
    paper profile's) takes all of it, letter by letter."""
    from sae_bench.evals.absorption.vocab import get_alpha_tokens

    vocab = ab.alphabetic_vocab(tok, tok.all_special_ids)
    ours = [w for _, w in vocab]
    assert len(ours) == len(set(ours)) > 20
    assert set(ours) == set(get_alpha_tokens(tok))
    everything = ab.sample_vocab(vocab, 0, seed=0)
    assert sorted(w for _, w in everything) == sorted(ours)
