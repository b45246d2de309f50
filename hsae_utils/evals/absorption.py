"""Feature absorption on the first-letter task (Chanin et al. 2024), as SAEBench measures it.

(One file over ~450 lines on purpose: like SAEBench's `evals/absorption/`, the vocabulary, the
prompts, the ground-truth probe, k-sparse probing and the absorption rules are one eval, read
top to bottom.)

Data (model side, computed once and cached; `build_absorption_data`):
- Vocabulary: tokens made only of ASCII letters, optionally with one leading space, that decode
  and re-encode to themselves. `profile.absorption_vocab_size` of them are drawn letter-balanced
  (0 = all of them, SAEBench's choice); each letter's words are split 80 / 20 into train / test.
- Prompt (SAEBench's template): "\\n" + ten in-context examples "{ex} has the first letter: X",
  joined by "\\n", then "\\n{word} has the first letter:", after the BOS token. ICL examples come
  from the same split and never include the word. The residual stream
  (`blocks.{layer}.hook_resid_post`) is read at the word token (SAEBench's position -6).
- Cost: the model is causal, so the tokens after the word do not change its residual. Words are
  processed in groups that share one random set of ICL examples: the shared prefix runs once and
  its key/value cache is reused for the words of the group (checked against a full-prompt run of
  the same words on every build; on a mismatch all prompts run in full). SAEBench draws the ICL
  examples per word; here they are drawn per group of `GROUP_SIZE` words.
- Ground-truth probe: 26 one-vs-rest logistic regressions (scikit-learn, balanced class weights)
  on the train words' residuals; per-letter F1 on the test words (score > 0).

Per SAE (`evaluate_absorption`):
- k-sparse probing: an L1-regularised 26-way probe on the SAE latents of the train words ranks the
  latents per letter (SAEBench: BCE with pos_weight, L1 0.01, Adam lr 0.01 decayed to 1e-5 over
  50 epochs); for k = 1..10, a logistic regression on the top-k latents is scored by test F1; k
  grows while F1 improves by more than 0.03 (`f1_jump_threshold`); the last accepted set are the
  letter's main latents.
- For every test word of letter L whose ground-truth probe score is positive: the projection of
  latent i on the probe is activation_i x cos(probe_L, decoder_i), SAEBench's formula, with the
  decoder norms first folded into the activations (as SAEBench folds them for pretrained SAEs),
  so it is right for rows of any norm; the word's residual projection is x . probe_L / ||probe_L||
  (both in the SAE's normalized space). Absorption fraction and full
  absorption follow SAEBench's rules (`absorption_for_letter`).
- `mean_absorption_fraction_score` and `mean_full_absorption_score` are means over the letters
  whose probe F1 exceeds 0.6; SAEBench requires at least 20 such letters, and so do we for
  `absorption_valid` (the scores are reported either way, with the per-letter probe F1).
"""

from __future__ import annotations

import math
import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from hsae_utils.config import Profile
from hsae_utils.data.forward import layer_resid
from hsae_utils.data.tokens import bos_token_id, special_token_ids
from hsae_utils.evals import logreg
from hsae_utils.evals.cache import load_cached, model_identity, save_cached, tensor_sha
from hsae_utils.io import sha256_json
from hsae_utils.timing import single_thread

LETTERS = "abcdefghijklmnopqrstuvwxyz"
PROMPT_TEMPLATE = "{word} has the first letter:"
ICL_SEPARATOR = "\n"
TRAIN_FRACTION = 0.8
GROUP_SIZE = 64  # words sharing one set of in-context examples (one prefix pass)

# SAEBench's thresholds (evals/absorption/feature_absorption.py and eval_config.py)
MAX_K = 10
F1_JUMP_THRESHOLD = 0.03
MIN_PROBE_F1 = 0.6
FULL_ABSORPTION_PROBE_COS = 0.025
ABSORPTION_FRACTION_PROBE_COS = 0.1
PROBE_PROJECTION_PROPORTION = 0.4
MAX_ABSORBING_LATENTS = 3
EPS = 1e-8


# ============================================================================================
# Vocabulary and prompts
# ============================================================================================
def is_alphabetic(word: str) -> bool:
    """ASCII letters only, with at most one leading space (SAEBench's `get_alpha_tokens`)."""
    w = word[1:] if word.startswith(" ") else word
    return len(w) > 0 and w.isascii() and w.isalpha()


def first_letter(word: str) -> str:
    return word.strip()[0].lower()


def alphabetic_vocab(tokenizer, special_ids: Sequence[int] = ()) -> list[tuple[int, str]]:
    """(token id, text) of every alphabetic token that re-encodes to itself."""
    special = set(special_ids) | set(tokenizer.all_special_ids)
    ids = [i for i in range(len(tokenizer)) if i not in special]
    texts = tokenizer.batch_decode([[i] for i in ids])
    cands = [(i, t) for i, t in zip(ids, texts) if is_alphabetic(t)]
    enc = tokenizer([t for _, t in cands], add_special_tokens=False)["input_ids"]
    return [(i, t) for (i, t), e in zip(cands, enc) if list(e) == [i]]


def sample_vocab(vocab: list[tuple[int, str]], n: int, seed: int) -> list[tuple[int, str]]:
    """Up to ceil(n / 26) words per first letter (all words if n <= 0), in a seeded order."""
    rng = random.Random(seed)
    by_letter: dict[str, list[tuple[int, str]]] = {}
    for item in sorted(vocab):
        by_letter.setdefault(first_letter(item[1]), []).append(item)
    out = []
    quota = math.ceil(n / len(LETTERS)) if n > 0 else None
    for letter in sorted(by_letter):
        words = by_letter[letter]
        out.extend(rng.sample(words, min(len(words), quota)) if quota else words)
    return out


def split_vocab(
    words: list[tuple[int, str]], seed: int, train_fraction: float = TRAIN_FRACTION
) -> tuple[list, list]:
    """80 / 20 split within each letter (every letter with >= 2 words gets a test word)."""
    rng = random.Random(seed + 1)
    train, test = [], []
    by_letter: dict[str, list] = {}
    for item in words:
        by_letter.setdefault(first_letter(item[1]), []).append(item)
    for letter in sorted(by_letter):
        ws = by_letter[letter][:]
        rng.shuffle(ws)
        n_train = (
            len(ws) if len(ws) < 2 else min(len(ws) - 1, max(1, round(train_fraction * len(ws))))
        )
        train += ws[:n_train]
        test += ws[n_train:]
    return train, test


@dataclass(frozen=True)
class PromptPieces:
    """Token ids of the template's fixed parts."""

    bos: int
    separator: list[int]  # "\n"
    suffix: list[int]  # " has the first letter:"
    answers: dict[str, list[int]]  # letter -> " X"

    @classmethod
    def from_tokenizer(cls, tokenizer, bos: int) -> "PromptPieces":
        enc = lambda s: list(tokenizer(s, add_special_tokens=False)["input_ids"])  # noqa: E731
        before, after = PROMPT_TEMPLATE.split("{word}")
        assert before == "", "the template must start with the word"
        return cls(
            bos=bos,
            separator=enc(ICL_SEPARATOR),
            suffix=enc(after),
            answers={L: enc(" " + L.upper()) for L in LETTERS},
        )

    def example(self, token_id: int, word: str) -> list[int]:
        return [token_id] + self.suffix + self.answers[first_letter(word)]

    def prefix(self, examples: Sequence[tuple[int, str]]) -> list[int]:
        """[BOS] "\\n" ex_1 "\\n" ... ex_n "\\n": everything before the query word."""
        ids = [self.bos] + self.separator
        for tid, w in examples:
            ids += self.example(tid, w) + self.separator
        return ids


def make_groups(
    words: list[tuple[int, str]], n_icl: int, seed: int, group_size: int = GROUP_SIZE
) -> list[tuple[list[tuple[int, str]], list]]:
    """(ICL examples, query words) groups over one split; examples never include the group's
    words."""
    rng = random.Random(seed + 2)
    order = words[:]
    rng.shuffle(order)
    n_icl = min(n_icl, max(0, len(order) - 1))
    size = max(1, min(group_size, len(order) - n_icl))
    groups = []
    for i in range(0, len(order), size):
        query = order[i : i + size]
        qset = set(query)
        pool = [w for w in order if w not in qset]
        groups.append((rng.sample(pool, min(n_icl, len(pool))), query))
    return groups


# ============================================================================================
# Activations at the word token
# ============================================================================================
@torch.no_grad()
def _word_resid_kv(model, prefix: list[int], word_ids: list[int], layer: int) -> Tensor:
    """Residual at each query word after a shared prefix, reusing the prefix's KV cache."""
    hf = model.original_model.model
    device = next(model.parameters()).device
    G, P = len(word_ids), len(prefix)
    out = hf(input_ids=torch.tensor([prefix], device=device), use_cache=True)
    cache = out.past_key_values
    cache.batch_repeat_interleave(G)
    out = hf(
        input_ids=torch.tensor(word_ids, device=device)[:, None],
        past_key_values=cache,
        use_cache=True,
        output_hidden_states=True,
        attention_mask=torch.ones(G, P + 1, dtype=torch.long, device=device),
        position_ids=torch.full((G, 1), P, dtype=torch.long, device=device),
    )
    return out.hidden_states[layer + 1][:, -1].float()


@torch.no_grad()
def _word_resid_full(
    model, prefix: list[int], word_ids: list[int], layer: int, batch: int = 32
) -> Tensor:
    """The same from full prompts (prefix + word), read at the last position."""

    device = next(model.parameters()).device
    rows = []
    for i in range(0, len(word_ids), batch):
        toks = torch.tensor([prefix + [w] for w in word_ids[i : i + batch]], device=device)
        rows.append(layer_resid(model, toks, layer)[:, -1].float())
    return torch.cat(rows)


@torch.no_grad()
def word_activations(
    model, groups, pieces: PromptPieces, layer: int, progress: bool = True, method: str = "auto"
) -> tuple[Tensor, list[tuple[int, str]], str]:
    """Residuals [n, D] of every query word of `groups`, the words in that order, and the method
    used ("kv" or "full"). "auto" uses the KV path if it matches the full path on the first
    group's first words (relative error < 1e-3), else the full path."""
    if method == "auto":
        method = "full"
        prefix, query = groups[0]
        ids = [t for t, _ in query[:4]]
        try:
            full = _word_resid_full(model, pieces.prefix(prefix), ids, layer)
            kv = _word_resid_kv(model, pieces.prefix(prefix), ids, layer)
            if (kv - full).norm() <= 1e-3 * full.norm():
                method = "kv"
        except Exception:  # noqa: BLE001 - any incompatibility means: use full prompts
            pass
    fn = _word_resid_kv if method == "kv" else _word_resid_full
    acts, words = [], []
    for prefix, query in tqdm(groups, disable=not progress, desc=f"absorption prompts ({method})"):
        acts.append(fn(model, pieces.prefix(prefix), [t for t, _ in query], layer).cpu())
        words += query
    return torch.cat(acts), words, method


# ============================================================================================
# Ground-truth probe
# ============================================================================================
def _logistic(**kw):
    from sklearn.linear_model import LogisticRegression  # heavy import, only for probe fits

    return LogisticRegression(**kw)


def fit_ground_truth_probe(
    x_train_ND: np.ndarray, y_train_N: np.ndarray, max_iter: int = 1000
) -> tuple[np.ndarray, np.ndarray, float]:
    """One-vs-rest logistic probes for the 26 letters on activations scaled by one scalar
    (mean squared norm = D). Returns (W [26, D] and b [26] acting on raw activations, scale)."""
    D = x_train_ND.shape[1]
    scale = float(np.sqrt(D / np.mean(np.sum(x_train_ND.astype(np.float64) ** 2, axis=1))))
    xs = x_train_ND * scale
    W = np.zeros((len(LETTERS), D))
    b = np.full(len(LETTERS), -1e3)  # letters without training words never fire

    with warnings.catch_warnings(), single_thread():
        warnings.simplefilter("ignore")
        for c in range(len(LETTERS)):
            y = (y_train_N == c).astype(int)
            if 0 < y.sum() < len(y):
                clf = _logistic(class_weight="balanced", max_iter=max_iter).fit(xs, y)
                W[c], b[c] = clf.coef_[0] * scale, clf.intercept_[0]
    return W.astype(np.float32), b.astype(np.float32), scale


def f1_binary(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    from sklearn.metrics import f1_score  # heavy import, only for probe fits

    return float(f1_score(y_true, y_pred, zero_division=0))


@dataclass
class AbsorptionData:
    """Model-side data of the absorption eval (raw activations; see the module docstring)."""

    x_train_ND: Tensor
    y_train_N: Tensor  # letter index
    x_test_ND: Tensor
    y_test_N: Tensor
    words_train: list[str]
    words_test: list[str]
    probe_W_LD: Tensor  # acts on raw activations
    probe_b_L: Tensor
    probe_f1_L: Tensor  # test F1 of each letter's probe (score > 0)
    min_letters: int = 20
    method: str = ""
    folder: Path | None = None
    reused: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def probe_scores_test(self) -> Tensor:
        return self.x_test_ND @ self.probe_W_LD.T + self.probe_b_L

    @classmethod
    def from_arrays(
        cls, x_train, y_train, x_test, y_test, words_train=None, words_test=None, **kw
    ) -> "AbsorptionData":
        """Fit the ground-truth probe on the train arrays and score it on the test arrays."""
        x_train, x_test = np.asarray(x_train, np.float32), np.asarray(x_test, np.float32)
        y_train, y_test = np.asarray(y_train), np.asarray(y_test)
        W, b, _ = fit_ground_truth_probe(x_train, y_train)
        scores = x_test @ W.T + b
        f1 = np.array([f1_binary(y_test == c, scores[:, c] > 0) for c in range(len(LETTERS))])
        return cls(
            torch.from_numpy(x_train),
            torch.from_numpy(y_train).long(),
            torch.from_numpy(x_test),
            torch.from_numpy(y_test).long(),
            list(words_train or []),
            list(words_test or []),
            torch.from_numpy(W),
            torch.from_numpy(b),
            torch.from_numpy(f1).float(),
            **kw,
        )

    def probe_report(self):
        """Per-letter probe F1 and word counts (a pandas DataFrame)."""
        import pandas as pd  # heavy import, only for tables

        return pd.DataFrame(
            {
                "letter": list(LETTERS),
                "probe_f1": self.probe_f1_L.numpy(),
                "n_train": np.bincount(self.y_train_N.numpy(), minlength=26),
                "n_test": np.bincount(self.y_test_N.numpy(), minlength=26),
            }
        )

    @property
    def n_good_letters(self) -> int:
        return int((self.probe_f1_L > MIN_PROBE_F1).sum())


def tokenizer_sha(tokenizer) -> str:
    """Hash of the tokenizer's vocabulary and special tokens."""

    return sha256_json([sorted(tokenizer.get_vocab().items()), tokenizer.all_special_ids])


def build_absorption_data(
    model,
    profile: Profile,
    cache_root: str | Path | None = None,
    fingerprint: str | None = None,
    progress: bool = True,
    method: str = "auto",
    rebuild: bool = False,
) -> AbsorptionData:
    """Vocabulary, prompts, word activations and the ground-truth probe; cached on disk
    (`rebuild`: recomputed and overwritten)."""

    tok = model.tokenizer
    seed = profile.eval_seed
    # The prompts are a deterministic function of the tokenizer and these settings, so the key
    # uses them (cheap) and the manifest records the hash of the prompts actually built.
    identity = {
        **model_identity(model, fingerprint),
        "hook": profile.hook_name,
        "tokenizer_sha256": tokenizer_sha(tok),
        "template": PROMPT_TEMPLATE,
        "separator": ICL_SEPARATOR,
        "vocab_size": profile.absorption_vocab_size,
        "n_icl": profile.absorption_icl_examples,
        "group_size": GROUP_SIZE,
        "seed": seed,
        "method": method,
    }
    if cache_root is not None:
        hit = load_cached(cache_root, "absorption", identity, rebuild=rebuild)
        if hit is not None:
            a, m = hit["arrays"], hit["meta"]
            data = AbsorptionData(
                *(torch.from_numpy(a[k]) for k in ("x_train", "y_train", "x_test", "y_test")),
                m["words_train"],
                m["words_test"],
                *(torch.from_numpy(a[k]) for k in ("probe_W", "probe_b", "probe_f1")),
                min_letters=profile.absorption_min_letters,
                method=m["method"],
                folder=hit["folder"],
                reused=True,
            )
            data.notes = _notes(data)
            return data

    alpha = alphabetic_vocab(tok, special_token_ids(tok))
    vocab = sample_vocab(alpha, profile.absorption_vocab_size, seed)
    train, test = split_vocab(vocab, seed)
    pieces = PromptPieces.from_tokenizer(tok, bos_token_id(tok))
    groups_train = make_groups(train, profile.absorption_icl_examples, seed)
    groups_test = make_groups(test, profile.absorption_icl_examples, seed + 10)
    prompts_sha = tensor_sha(
        np.array(
            [
                t
                for g in groups_train + groups_test
                for t in pieces.prefix(g[0]) + [w for w, _ in g[1]]
            ]
        )
    )
    x_tr, w_tr, method = word_activations(
        model, groups_train, pieces, profile.layer, progress, method
    )
    x_te, w_te, _ = word_activations(model, groups_test, pieces, profile.layer, progress, method)
    y_tr = np.array([LETTERS.index(first_letter(w)) for _, w in w_tr])
    y_te = np.array([LETTERS.index(first_letter(w)) for _, w in w_te])
    data = AbsorptionData.from_arrays(
        x_tr.numpy(),
        y_tr,
        x_te.numpy(),
        y_te,
        [w for _, w in w_tr],
        [w for _, w in w_te],
        min_letters=profile.absorption_min_letters,
        method=method,
    )
    if cache_root is not None:
        data.folder = save_cached(
            cache_root,
            "absorption",
            identity,
            {
                "x_train": data.x_train_ND.numpy(),
                "y_train": data.y_train_N.numpy(),
                "x_test": data.x_test_ND.numpy(),
                "y_test": data.y_test_N.numpy(),
                "probe_W": data.probe_W_LD.numpy(),
                "probe_b": data.probe_b_L.numpy(),
                "probe_f1": data.probe_f1_L.numpy(),
            },
            {
                "words_train": data.words_train,
                "words_test": data.words_test,
                "method": method,
                "n_vocab_alphabetic": len(alpha),
                "prompts_sha256": prompts_sha,
                "example_prompt": tok.decode(
                    pieces.prefix(groups_test[0][0]) + [groups_test[0][1][0][0]] + pieces.suffix
                ),
            },
        )
    data.notes = _notes(data)
    return data


def _notes(data: AbsorptionData) -> list[str]:
    n = data.n_good_letters
    note = (
        f"absorption: {len(data.words_train)} train / {len(data.words_test)} test words; "
        f"ground-truth probe F1 > {MIN_PROBE_F1} on {n} of 26 letters "
        f"(mean F1 {data.probe_f1_L.mean():.2f}); activations via the {data.method!r} path"
    )
    notes = [note]
    if n < data.min_letters:
        notes.append(
            f"absorption: only {n} letters reach probe F1 > {MIN_PROBE_F1}; SAEBench needs "
            f"{data.min_letters} and would not report a score for this model. Scores below "
            "average the letters that pass and are flagged absorption_valid = 0."
        )
    return notes


# ============================================================================================
# Per-SAE: k-sparse probing and absorption
# ============================================================================================
def train_l1_probe(
    z_NF: Tensor,
    y_N: Tensor,
    n_classes: int = len(LETTERS),
    l1: float = 0.01,
    epochs: int = 50,
    lr: float = 0.01,
    end_lr: float = 1e-5,
    weight_decay: float = 1e-6,
    steps_per_epoch: int = 20,
    seed: int = 0,
) -> Tensor:
    """SAEBench's L1-regularised multi-probe over SAE latents; returns weights [classes, F].

    SAEBench trains with batch 4,096 on ~10^5 vocabulary words (~20 steps per epoch); with a
    smaller vocabulary we keep ~20 steps per epoch so the probe trains as far.
    Runs on `z_NF`'s device (a GPU for the `paper` profile: ~10^5 words x 16k latents x 26 classes
    per step is minutes per SAE on a CPU), fp32; the initialisation and the batch order come from
    a CPU generator, so the CPU and GPU paths draw the same ones.
    """
    g = torch.Generator().manual_seed(seed)
    N, F = z_NF.shape
    device = z_NF.device
    z_NF = z_NF.float()
    Y = torch.nn.functional.one_hot(y_N.long().to(device), n_classes).float()
    n_pos = Y.sum(0)
    pos_weight = (N - n_pos) / n_pos.clamp_min(1)
    with torch.enable_grad():
        probe = torch.nn.Linear(F, n_classes)
        with torch.no_grad():
            bound = 1 / math.sqrt(F)
            probe.weight.uniform_(-bound, bound, generator=g)
            probe.bias.uniform_(-bound, bound, generator=g)
        probe = probe.to(device)
        loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
        opt = torch.optim.Adam(probe.parameters(), lr=lr, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.ExponentialLR(
            opt, gamma=math.exp(math.log(end_lr / lr) / epochs)
        )
        batch = max(1, min(4096, math.ceil(N / steps_per_epoch)))
        for _ in range(epochs):
            perm = torch.randperm(N, generator=g).to(device)
            for i in range(0, N, batch):
                idx = perm[i : i + batch]
                loss = loss_fn(probe(z_NF[idx]), Y[idx]) + l1 * probe.weight.abs().sum(-1).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            sched.step()
    return probe.weight.detach().cpu()


def k_sparse_main_latents(
    z_train: np.ndarray,
    is_pos_train: np.ndarray,
    z_test: np.ndarray,
    is_pos_test: np.ndarray,
    ranking_F: Tensor,
    max_k: int = MAX_K,
    f1_jump: float = F1_JUMP_THRESHOLD,
) -> tuple[list[int], list[float]]:
    """Main latents of one letter by SAEBench's F1-jump rule: k grows from 1 while the test F1 of
    a logistic regression on the top-k latents (by L1-probe weight) improves by > f1_jump.
    Returns (main latents, F1 for each k tried)."""
    prev, main, f1s = -100.0, [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in range(1, max_k + 1):
            feats = ranking_F.topk(k).indices.tolist()
            clf = _logistic(max_iter=500, class_weight="balanced").fit(
                z_train[:, feats], is_pos_train
            )
            f1 = f1_binary(is_pos_test, clf.decision_function(z_test[:, feats]) > 0)
            f1s.append(f1)
            if f1 > prev + f1_jump:
                prev, main = f1, feats
            else:
                break
    return main, f1s


def k_sparse_main_latents_many(
    z_train_NF: Tensor,
    y_train_N: Tensor,
    z_test_NF: Tensor,
    y_test_N: Tensor,
    ranking_LF: Tensor,
    letters: Sequence[int],
    max_k: int = MAX_K,
    f1_jump: float = F1_JUMP_THRESHOLD,
) -> dict[int, tuple[list[int], list[float]]]:
    """`k_sparse_main_latents` of several letters with the torch fit (`evals.logreg`, same
    objective as the sklearn probe) on the latents' device: each k's probes of every letter in
    one batched fit (every k up to max_k is fitted; the F1-jump rule then reads them in order,
    so the result is the sequential rule's). Returns {letter index: (main latents, F1s)}."""
    if not letters:
        return {}
    device = z_train_NF.device
    y_tr, y_te = y_train_N.to(device), y_test_N.to(device)
    Y_tr = torch.stack([y_tr == c for c in letters])  # [L, N]
    Y_te = torch.stack([y_te == c for c in letters])
    feats_k, f1_k = [], []
    for k in range(1, max_k + 1):
        feats = [ranking_LF[c].topk(k).indices for c in letters]  # as the sequential rule picks
        idx = torch.stack(feats).to(device)  # [L, k]
        fit = logreg.fit_logreg(z_train_NF[:, idx].transpose(0, 1), Y_tr, balanced=True)
        pred = fit.decision_function(z_test_NF[:, idx].transpose(0, 1)) > 0
        feats_k.append([f.tolist() for f in feats])
        f1_k.append(logreg.f1_scores(pred, Y_te))
    f1_LK = torch.stack(f1_k, 1).cpu().tolist()  # one transfer for every letter and k
    out = {}
    for i, c in enumerate(letters):
        prev, main, f1s = -100.0, [], []
        for k in range(max_k):
            f1s.append(f1_LK[i][k])
            if f1_LK[i][k] > prev + f1_jump:
                prev, main = f1_LK[i][k], feats_k[k][i]
            else:
                break
        out[c] = (main, f1s)
    return out


def absorption_for_letter(
    z_NF: Tensor, act_proj_N: Tensor, cos_F: Tensor, main_ids: Sequence[int]
) -> tuple[Tensor, Tensor]:
    """Absorption fraction and full-absorption flag per token (SAEBench's rules).

    z_NF: latent activations of the letter's probe-positive test tokens; act_proj_N: their
    residual's projection on the unit probe direction; cos_F: cosine of each decoder row with the
    probe; main_ids: the letter's main latents.
    - fraction: 0 if the main latents' projection already covers the residual's, or if the (up to
      3) non-main latents with cos >= 0.1 and positive projection carry < 40 % of it; 1 if the
      main latents' projection is <= 0; else absorbed / (absorbed + main), absorbed = min(those
      latents' projection, residual - main).
    - full: every main latent silent (< 1e-8), the top-projecting latent has cos >= 0.025 and
      carries >= 40 % of the residual's (positive) projection.
    """
    z_NF, act, cos_F = z_NF.double(), act_proj_N.double(), cos_F.double()
    N, F = z_NF.shape
    proj_NF = z_NF * cos_F
    main = torch.zeros(F, dtype=torch.bool)
    main[list(main_ids)] = True
    main_proj = proj_NF[:, main].sum(1)
    cand = (~main) & (cos_F >= ABSORPTION_FRACTION_PROBE_COS) & (proj_NF > 0)
    absorbers = torch.where(cand, proj_NF, torch.zeros_like(proj_NF))
    top_abs = absorbers.topk(min(MAX_ABSORBING_LATENTS, F), dim=1).values.sum(1)
    positive = act > 0
    safe_act = torch.where(positive, act, torch.ones_like(act))
    proportion = torch.where(positive, top_abs / safe_act, torch.zeros_like(act))
    absorbed = torch.minimum(top_abs, act - main_proj)
    partial = (absorbed / (absorbed + main_proj)).clamp(0, 1)
    fraction = torch.where(main_proj <= 0, torch.ones_like(act), partial)
    fraction = torch.where(
        (main_proj >= act) | (proportion < PROBE_PROJECTION_PROPORTION),
        torch.zeros_like(act),
        fraction,
    )

    silent = (z_NF[:, main] < EPS).all(1) if main.any() else torch.ones(N, dtype=torch.bool)
    top_proj, top_idx = proj_NF.max(1)
    full = (
        silent
        & (cos_F[top_idx] >= FULL_ABSORPTION_PROBE_COS)
        & positive
        & (top_proj / safe_act >= PROBE_PROJECTION_PROPORTION)
    )
    return fraction.float(), full


def _as_numpy(t: Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def evaluate_absorption(
    adapter,
    data: AbsorptionData,
    seed: int = 42,
    max_k: int = MAX_K,
    f1_jump: float = F1_JUMP_THRESHOLD,
    min_probe_f1: float = MIN_PROBE_F1,
    probe_fit: str = "auto",
) -> tuple[dict[str, Any], list[dict]]:
    """Absorption metrics of one SAE (an `adapter.SAEAdapter`). Returns (summary, per-letter
    rows). `probe_fit`: how the k-sparse probes are fitted: "sklearn" (one by one on the CPU),
    "torch" (`evals.logreg`, batched on the SAE's device), "auto": torch on CUDA, else sklearn
    (CPU results stay bit-identical to SAEBench's way)."""

    with single_thread(), torch.no_grad():
        return _evaluate_absorption(adapter, data, seed, max_k, f1_jump, min_probe_f1, probe_fit)


def _evaluate_absorption(adapter, data, seed, max_k, f1_jump, min_probe_f1, probe_fit="auto"):
    device = adapter.W_dec.device
    probe_fit = logreg.resolve_probe_fit(probe_fit, device)
    # Fold the decoder norms into the latents (SAEBench: `fold_W_dec_norm`), so that latent i's
    # probe projection z_i ||d_i|| cos(probe, d_i) is right for rows of any norm (an external
    # SAE's rows have norm `scale` in our space) and every number is invariant to rescaling a
    # latent by c and its row by 1 / c. For our SAEs (unit rows) this changes nothing.
    norms_F = adapter.decoder_rows().norm(dim=-1)
    z_tr_dev = adapter.encode(data.x_train_ND.to(device)).float() * norms_F.to(device)
    z_tr = z_tr_dev.cpu()
    z_te = adapter.encode(data.x_test_ND.to(device)).float().cpu() * norms_F.cpu()
    ranking = train_l1_probe(z_tr_dev, data.y_train_N, seed=seed)  # on the SAE's device
    probe_dir = torch.nn.functional.normalize(data.probe_W_LD.float(), dim=-1)  # [26, D]
    dec = torch.nn.functional.normalize(adapter.W_dec.detach().float().cpu(), dim=-1)
    cos_LF = probe_dir @ dec.T
    act_proj_NL = adapter.normalize(data.x_test_ND.to(device)).float().cpu() @ probe_dir.T
    scores = data.probe_scores_test
    y_tr, y_te = data.y_train_N.numpy(), data.y_test_N.numpy()
    letters = [
        c
        for c in range(len(LETTERS))
        if 0 < (y_tr == c).sum() < len(y_tr) and (y_te == c).sum() > 0
    ]
    if probe_fit == "torch":  # every letter and k in batched fits on the SAE's device
        z_te_dev = z_te.to(device)
        k_sparse = k_sparse_main_latents_many(
            z_tr_dev, data.y_train_N, z_te_dev, data.y_test_N, ranking, letters, max_k, f1_jump
        )
    else:
        ztr_np, zte_np = _as_numpy(z_tr), _as_numpy(z_te)
    rows = []
    for c in letters:
        letter = LETTERS[c]
        pos_te = y_te == c
        if probe_fit == "torch":
            main, f1s = k_sparse[c]
        else:
            main, f1s = k_sparse_main_latents(
                ztr_np, y_tr == c, zte_np, pos_te, ranking[c], max_k, f1_jump
            )
        tp = torch.from_numpy(pos_te) & (scores[:, c] > 0)
        n_tp = int(tp.sum())
        frac = full = None
        if n_tp:
            frac, full = absorption_for_letter(z_te[tp], act_proj_NL[tp, c], cos_LF[c], main)
        probe_f1 = float(data.probe_f1_L[c])
        rows.append(
            {
                "letter": letter,
                "probe_f1": probe_f1,
                "included": bool(probe_f1 > min_probe_f1 and n_tp > 0),
                "num_probe_true_positives": n_tp,
                "main_latents": " ".join(map(str, main)),
                "num_split_features": len(main),
                "k_sparse_f1": f1s[len(main) - 1] if main else float("nan"),
                "mean_absorption_fraction": float(frac.sum() / n_tp) if n_tp else float("nan"),
                "num_full_absorption": int(full.sum()) if n_tp else 0,
                "full_absorption_rate": float(full.sum() / n_tp) if n_tp else float("nan"),
            }
        )
    used = [r for r in rows if r["included"]]
    mean = lambda k: float(np.mean([r[k] for r in used])) if used else float("nan")  # noqa: E731
    std = lambda k: float(np.std([r[k] for r in used], ddof=1)) if len(used) > 1 else float("nan")  # noqa: E731
    summary = {
        "mean_absorption_fraction_score": mean("mean_absorption_fraction"),
        "mean_full_absorption_score": mean("full_absorption_rate"),
        "mean_num_split_features": mean("num_split_features"),
        "std_dev_absorption_fraction_score": std("mean_absorption_fraction"),
        "std_dev_full_absorption_score": std("full_absorption_rate"),
        "absorption_n_letters": len(used),
        "absorption_valid": float(len(used) >= data.min_letters),
        "absorption_mean_probe_f1": float(data.probe_f1_L.mean()),
    }
    return summary, rows
