"""Notebook 12's choices, made by rule: which latents to show (the absorption eval's main latents,
the sparse-probing eval's top latents, random alive ones), their text rendering, and the
first-letter intervention."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from hsae_utils.evals import absorption as ab
from hsae_utils.evals.probing import sae_features, top_k_mean_diff


def main_latents(letters_csv: str | Path, run: str) -> dict[str, list[int]]:
    """letter -> the absorption eval's main latents of `run` (notebook 08's
    `absorption_per_letter.csv`), for the letters it included (probe F1 above SAEBench's 0.6)."""
    import pandas as pd

    df = pd.read_csv(letters_csv, keep_default_na=False)
    df = df[(df["run"] == run) & (df["included"].astype(str) == "True")]
    return {
        r.letter: [int(i) for i in str(r.main_latents).split()]
        for r in df.itertuples()
        if str(r.main_latents).strip()
    }


def shared_letters(letters_csv: str | Path, runs: list[str], n: int = 2) -> list[str]:
    """The n letters with main latents in every run, highest ground-truth probe F1 first (the probe
    is the model's, the same for every SAE)."""
    import pandas as pd

    df = pd.read_csv(letters_csv, keep_default_na=False)
    have = [set(main_latents(letters_csv, r)) for r in runs]
    common = set.intersection(*have) if have else set()
    f1 = df.groupby("letter")["probe_f1"].first()
    return sorted(common, key=lambda L: (-f1[L], L))[:n]


def probing_top_latents(adapter, data, n_tasks: int = 2) -> list[tuple[str, str, int]]:
    """(task, class, latent): for the first class of each of the first `n_tasks` tasks, the
    latent the sparse-probing eval ranks first (largest |mean difference| on the train texts,
    SAEBench's top-k selection)."""
    feats = sae_features(adapter, data)
    out, seen = [], set()
    for task, cls, sets in data.tasks():
        if task in seen:
            continue
        seen.add(task)
        i_tr, y_tr = sets["train"]
        out.append((task, cls, int(top_k_mean_diff(feats[i_tr], y_tr, 1)[0])))
        if len(out) == n_tasks:
            break
    return out


def random_alive(data: dict, n: int, seed: int, exclude=()) -> list[int]:
    alive = [r["id"] for r in data["latents"] if r["density"] > 0 and r["id"] not in set(exclude)]
    return sorted(random.Random(seed).sample(alive, min(n, len(alive))))


def _context_text(c: dict) -> str:
    toks = [t.replace("\n", "↵") for t in c["tokens"]]
    toks[c["center"]] = f"[[{toks[c['center']]}]]"
    return "".join(toks)


def latent_text(rec: dict, why: str, n_top: int = 3, n_samples: int = 2) -> str:
    """A latent as plain text: its numbers, logit effects and a few contexts, the highlighted
    token in [[ ]] (readable in a notebook's saved output)."""
    dens = rec["density"]
    lines = [
        f"latent {rec['id']} ({why}): density {100 * dens:.2f} %, max {rec['max_act']:.3g}, "
        f"median {rec['quantiles'].get('0.5', 0):.3g}"
    ]
    if rec["top_logits"]:
        up = ", ".join(repr(t) for t, _ in rec["top_logits"][:5])
        down = ", ".join(repr(t) for t, _ in rec["bottom_logits"][:5])
        lines.append(f"  promotes {up}; suppresses {down}")
    tops = [c for c in rec["contexts"] if c["group"] == "top"][:n_top]
    rest = [c for c in rec["contexts"] if c["group"] != "top"][-n_samples:]
    for c in tops + rest:
        lines.append(f"  {c['group']:>12} {c['act']:7.3f}  {_context_text(c)}")
    if not rec["contexts"]:
        lines.append("  (never fires on the validation tokens)")
    return "\n".join(lines)


_VOCAB: dict[int, list] = {}  # tokenizer id -> its alphabetic vocabulary (seconds to build)


def letter_prompt(
    tokenizer, bos: int, letter: str, word: str | None, n_icl: int, seed: int
) -> tuple[torch.Tensor, int, int, str]:
    """The absorption eval's prompt (`evals.absorption.PromptPieces`) for one word of `letter`:
    (tokens [1, S], the word's position, the answer token " L", the word). `word`: a token text
    starting with the letter (None: the first such vocabulary word in a seeded order)."""
    if id(tokenizer) not in _VOCAB:
        _VOCAB[id(tokenizer)] = ab.alphabetic_vocab(tokenizer)
    vocab = _VOCAB[id(tokenizer)]
    pieces = ab.PromptPieces.from_tokenizer(tokenizer, bos)
    rng = random.Random(seed)
    others = [w for w in vocab if ab.first_letter(w[1]) != letter]
    examples = rng.sample(others, min(n_icl, len(others)))
    ids = {t: i for i, t in vocab}
    if word is None or word not in ids:
        mine = sorted(w for w in vocab if ab.first_letter(w[1]) == letter)
        word = rng.choice(mine)[1]
    prefix = pieces.prefix(examples)
    tokens = prefix + [ids[word]] + pieces.suffix
    return (torch.tensor([tokens]), len(prefix), pieces.answers[letter][0], word)


def word_from_contexts(rec: dict, letter: str) -> str | None:
    """The highlighted token of the latent's strongest context that is a word of `letter`."""
    for c in rec["contexts"]:
        t = c["tokens"][c["center"]]
        if ab.is_alphabetic(t) and ab.first_letter(t) == letter:
            return t
    return None


def probability(logp_BSV: torch.Tensor, token: int) -> float:
    return float(np.exp(float(logp_BSV[0, -1, token])))
