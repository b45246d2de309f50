"""Sparse probing (Gurnee et al. 2023), as SAEBench's `sparse_probing` eval runs it.

- Datasets: `local` / `smoke` use the four labelled tasks of `corpus.load_probing_tasks`
  (sentiment, text source, language, programming language); `paper` uses SAEBench's Hugging Face
  datasets (bias in bios x 3 class sets, Amazon review category and sentiment, GitHub code, AG
  News, Europarl), which needs hub access.
- Per class: `probe_train_per_class` / `probe_test_per_class` texts, each cut to
  `probe_max_tokens` tokens ([BOS] + text). The layer's residual of every token is cached once;
  a text's features are the mean over its tokens of the residual (LLM) or of the SAE latents of
  each token (SAE), as SAEBench does, leaving out special tokens (BOS, pad, EOS) and, as in
  training, massive activations (`tokens.keep_mask`, `profile.massive_norm_factor`).
- One-vs-rest binary task per class: the class's texts against as many texts drawn evenly from
  the other classes (SAEBench's `prepare_probe_data`), the same draw for the LLM and every SAE.
- Top-k features by |mean(positive) - mean(negative)| on the train texts; a scikit-learn
  LogisticRegression (L2, C = 1, max_iter 1,000) on them; test accuracy.
- Reported: `llm_test_accuracy` (all residual dimensions), `llm_top_{k}_test_accuracy` and
  `sae_top_{k}_test_accuracy` for k in `profile.probe_k_values` (the paper's 1 / 5 / 20), averaged
  over classes, then over datasets.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .config import Profile
from .io import sha256_json

Example = tuple[str, str]


@dataclass
class ProbingTask:
    name: str
    classes: list[str]
    train: list[Example]
    test: list[Example]


# ============================================================================================
# Datasets
# ============================================================================================
def split_per_class(examples: Sequence[Example], n_train: int, n_test: int, seed: int,
                    name: str) -> ProbingTask:
    """Up to n_train + n_test examples per class, split in a seeded order."""
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[str]] = {}
    for text, label in examples:
        by_class.setdefault(str(label), []).append(text)
    train, test = [], []
    for label in sorted(by_class):
        texts = by_class[label]
        order = rng.permutation(len(texts))[: n_train + n_test]
        n_tr = min(n_train, max(1, round(len(order) * n_train / (n_train + n_test))))
        train += [(texts[i], label) for i in order[:n_tr]]
        test += [(texts[i], label) for i in order[n_tr:]]
    return ProbingTask(name, sorted(by_class), train, test)


def local_tasks(profile: Profile, download_dir: str | Path | None = None) -> dict[str, ProbingTask]:
    """The four labelled tasks of the embedded corpus."""
    from .corpus import load_probing_tasks

    n_tr, n_te = profile.probe_train_per_class, profile.probe_test_per_class
    raw = load_probing_tasks(download_dir, max_per_class=n_tr + n_te)
    return {name: split_per_class(ex, n_tr, n_te, profile.eval_seed, name)
            for name, ex in raw.items()}


# SAEBench's datasets and classes (sae_bench_utils/dataset_info.py).
SAEBENCH_DATASETS: dict[str, list[str]] = {
    "LabHC/bias_in_bios_class_set1": ["0", "1", "2", "6", "9"],
    "LabHC/bias_in_bios_class_set2": ["11", "13", "14", "18", "19"],
    "LabHC/bias_in_bios_class_set3": ["20", "21", "22", "25", "26"],
    "canrager/amazon_reviews_mcauley_1and5": ["1", "2", "3", "5", "6"],
    "canrager/amazon_reviews_mcauley_1and5_sentiment": ["1.0", "5.0"],
    "codeparrot/github-code": ["C", "Python", "HTML", "Java", "PHP"],
    "fancyzhx/ag_news": ["0", "1", "2", "3"],
    "Helsinki-NLP/europarl": ["en", "fr", "de", "es", "nl"],
}
EUROPARL_PAIRS = {"en": "en-fr", "fr": "fr-it", "de": "de-en", "es": "es-fr", "nl": "nl-pt"}

HUB_HELP = (
    "Sparse probing for the `paper` profile reads SAEBench's datasets from the Hugging Face hub "
    "({name}); that needs network access to huggingface.co (the datasets are public; no token "
    "is needed). Run where the hub is reachable, or use the offline profile: "
    "./run_all.sh --profile local. Original error: {err!r}"
)


def _balanced_frame(df, class_col: str, classes: list[str], n: int, seed: int,
                    balance_col: str | None = None) -> dict[str, list[str]]:
    """n texts per class; with balance_col, n/2 from each of its two values (SAEBench balances
    professions by gender and review categories by rating)."""
    out = {}
    for c in classes:
        sub = df[df[class_col].astype(str) == c]
        if balance_col is None:
            out[c] = sub.sample(n=min(n, len(sub)), random_state=seed)["text"].tolist()
        else:
            parts = [g.sample(n=min(n // 2, len(g)), random_state=seed)["text"].tolist()
                     for _, g in sub.groupby(balance_col)]
            out[c] = [t for p in parts for t in p]
    return out


def _saebench_dataset(name: str, classes: list[str], n_train: int, n_test: int, seed: int
                      ) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    import pandas as pd
    from datasets import load_dataset

    if name.startswith("LabHC/bias_in_bios"):
        ds = load_dataset("LabHC/bias_in_bios")
        frames = {s: pd.DataFrame(ds[s]).rename(columns={"hard_text": "text"})
                  for s in ("train", "test")}
        return tuple(_balanced_frame(frames[s], "profession", classes, n, seed, "gender")
                     for s, n in (("train", n_train), ("test", n_test)))  # type: ignore
    if name.startswith("canrager/amazon_reviews_mcauley_1and5"):
        ds = load_dataset("canrager/amazon_reviews_mcauley_1and5")
        frames = {s: pd.DataFrame(ds[s]) for s in ("train", "test")}
        if name.endswith("_sentiment"):
            return tuple(_balanced_frame(frames[s], "rating", classes, n, seed)
                         for s, n in (("train", n_train), ("test", n_test)))  # type: ignore
        return tuple(_balanced_frame(frames[s], "category", classes, n, seed, "rating")
                     for s, n in (("train", n_train), ("test", n_test)))  # type: ignore
    if name == "fancyzhx/ag_news":
        ds = load_dataset(name)
        return tuple(_balanced_frame(pd.DataFrame(ds[s]), "label", classes, n, seed)
                     for s, n in (("train", n_train), ("test", n_test)))  # type: ignore
    rng = np.random.default_rng(seed)
    samples: dict[str, list[str]] = {c: [] for c in classes}
    total = n_train + n_test
    if name == "Helsinki-NLP/europarl":
        for lang in classes:
            for row in load_dataset(name, EUROPARL_PAIRS[lang], split="train", streaming=True):
                samples[lang].append(row["translation"][lang])
                if len(samples[lang]) >= total:
                    break
    elif name == "codeparrot/github-code":
        # Gurnee et al. / SAEBench skip the first ~50 tokens (150 characters: licence headers).
        skip, need = 150, 128 * 3
        stream = load_dataset(name, split="train", streaming=True, languages=classes,
                              trust_remote_code=True)
        for row in stream:
            lang, code = row["language"], row["code"]
            if lang in samples and len(samples[lang]) < total and len(code) > need + skip:
                samples[lang].append(code[skip:])
            if all(len(v) >= total for v in samples.values()):
                break
    else:
        raise ValueError(f"Unknown SAEBench dataset {name!r}")
    train, test = {}, {}
    for c, texts in samples.items():
        order = rng.permutation(len(texts))
        train[c] = [texts[i] for i in order[:n_train]]
        test[c] = [texts[i] for i in order[n_train:total]]
    return train, test


def saebench_tasks(profile: Profile) -> dict[str, ProbingTask]:
    """SAEBench's probing datasets from the Hugging Face hub (the `paper` profile)."""
    tasks = {}
    for name, classes in SAEBENCH_DATASETS.items():
        try:
            train, test = _saebench_dataset(name, classes, profile.probe_train_per_class,
                                            profile.probe_test_per_class, profile.eval_seed)
        except Exception as err:  # noqa: BLE001 - any hub failure gets the same advice
            raise RuntimeError(HUB_HELP.format(name=name, err=err)) from err
        tasks[name] = ProbingTask(
            name, classes, [(t, c) for c in classes for t in train[c]],
            [(t, c) for c in classes for t in test[c]])
    return tasks


def load_tasks(profile: Profile, download_dir: str | Path | None = None) -> dict[str, ProbingTask]:
    if profile.is_embedded:
        return local_tasks(profile, download_dir)
    return saebench_tasks(profile)


def task_spec(profile: Profile, download_dir: str | Path | None = None) -> dict[str, Any]:
    """What determines the tasks `load_tasks` returns, without loading them."""
    spec: dict[str, Any] = {"per_class": [profile.probe_train_per_class,
                                          profile.probe_test_per_class],
                            "seed": profile.eval_seed}
    if not profile.is_embedded:
        return {**spec, "datasets": SAEBENCH_DATASETS}
    from importlib import metadata

    from . import corpus

    folder = Path(download_dir) if download_dir else corpus.DEFAULT_DOWNLOAD_DIR
    archives = sorted((f.name, f.stat().st_size) for f in folder.glob("*") if f.is_file())
    # the code task reads source files of the installed packages
    dists = sorted(f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions())
    return {**spec, "source": "corpus.load_probing_tasks",
            "corpus_version": corpus.CORPUS_VERSION, "archives": archives,
            "environment_sha256": sha256_json(dists)}


def tasks_sha(tasks: dict[str, ProbingTask]) -> str:
    return sha256_json({n: [t.classes, t.train, t.test] for n, t in tasks.items()})


# ============================================================================================
# Activations (model side)
# ============================================================================================
def tokenize(texts: Sequence[str], tokenizer, max_tokens: int, bos: int) -> list[list[int]]:
    """[BOS] + the first max_tokens - 1 tokens of each text (at least one text token)."""
    enc = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return [[bos] + list(ids[: max_tokens - 1]) for ids in enc]


def kept_offsets(token_lists: list[list[int]], special_ids: Iterable[int]) -> Tensor:
    """Row offsets [n_texts + 1] of each text's non-special tokens in the concatenated array."""
    special = set(special_ids)
    lengths = torch.tensor([sum(t not in special for t in ids) for ids in token_lists])
    return torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])


@torch.no_grad()
def token_activations(model, token_lists: list[list[int]], layer: int, special_ids: Iterable[int],
                      pad_id: int, batch_tokens: int = 4096, progress: bool = True,
                      out: np.ndarray | None = None, massive_factor: float | None = None
                      ) -> tuple[np.ndarray, Tensor, np.ndarray]:
    """Residuals of the non-special tokens of every text, concatenated in text order [T, D]
    (written into `out`, e.g. a memory-mapped file, when given), offsets [n_texts + 1], and a
    mask [T] that is False for massive activations (`tokens.keep_mask`: norm above
    `massive_factor` x the batch median), which are left out of the mean pooling like BOS.
    Texts are batched by length and right-padded (causal model: padding after a text does not
    change its tokens' residuals)."""
    from .evaluate import model_device
    from .forward import layer_resid
    from .tokens import keep_mask

    device = model_device(model)
    special = torch.tensor(sorted(set(special_ids)), dtype=torch.long)
    offsets = kept_offsets(token_lists, special_ids)
    if out is None:
        out = np.zeros((int(offsets[-1]), model.cfg.d_model), dtype=np.float32)
    row_keep = np.ones(int(offsets[-1]), dtype=bool)
    order = sorted(range(len(token_lists)), key=lambda i: len(token_lists[i]))
    i = 0
    bar = tqdm(total=sum(map(len, token_lists)), disable=not progress, unit="tok",
               desc="probing texts (model)")
    while i < len(order):
        # texts sorted by length: grow the batch while (texts x longest) fits in batch_tokens
        n = 1
        while i + n < len(order) and (n + 1) * len(token_lists[order[i + n]]) <= batch_tokens:
            n += 1
        idx = order[i : i + n]
        S = len(token_lists[idx[-1]])
        toks = torch.full((len(idx), S), pad_id, dtype=torch.long)
        for r, j in enumerate(idx):
            toks[r, : len(token_lists[j])] = torch.tensor(token_lists[j])
        resid = layer_resid(model, toks.to(device), layer).float().cpu()
        keep = keep_mask(toks, resid, special.tolist(), massive_factor)
        for r, j in enumerate(idx):
            t = torch.tensor(token_lists[j])
            rows = ~torch.isin(t, special)
            a, b = int(offsets[j]), int(offsets[j + 1])
            out[a:b] = resid[r, : len(t)][rows].numpy()
            row_keep[a:b] = keep[r, : len(t)][rows].numpy()
        bar.update(sum(len(token_lists[j]) for j in idx))
        i += len(idx)
    bar.close()
    return out, offsets, row_keep


def iter_rows(acts_TD: np.ndarray | Tensor, batch: int = 8192) -> Iterable[tuple[int, Tensor]]:
    """(start, float32 tensor) chunks of a (possibly memory-mapped, fp16) array of rows."""
    for i in range(0, acts_TD.shape[0], batch):
        chunk = acts_TD[i : i + batch]
        if not isinstance(chunk, Tensor):
            chunk = torch.from_numpy(np.array(chunk, dtype=np.float32))
        yield i, chunk.float()


def mean_pool(acts_TF: np.ndarray | Tensor, offsets: Tensor, encode=None,
              batch: int = 8192, row_keep: np.ndarray | None = None) -> Tensor:
    """Mean of each text's rows [n_texts, F] over the rows with `row_keep` (all by default;
    texts without rows get zeros); `encode` maps a chunk of rows first (SAE latents: encode each
    token, then pool, as SAEBench does)."""
    n = offsets.shape[0] - 1
    seg = torch.repeat_interleave(torch.arange(n), offsets[1:] - offsets[:-1])
    w = (torch.ones(seg.shape[0], dtype=torch.float64) if row_keep is None
         else torch.from_numpy(np.asarray(row_keep)).double())
    counts = torch.zeros(n, dtype=torch.float64).index_add_(0, seg, w)
    out = None
    for i, rows in iter_rows(acts_TF, batch):
        f = encode(rows) if encode is not None else rows
        if out is None:
            out = torch.zeros(n, f.shape[1], dtype=torch.float64)
        j = slice(i, i + rows.shape[0])
        out.index_add_(0, seg[j], f.double().cpu() * w[j, None])
    if out is None:
        return torch.zeros(n, 0)
    return (out / counts.clamp_min(1)[:, None]).float()


# ============================================================================================
# Probes
# ============================================================================================
def binary_task(labels: np.ndarray, positive: int, n_classes: int, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray]:
    """Indices and 0/1 labels of a balanced one-vs-rest task: all texts of `positive` against as
    many texts drawn evenly from the other classes (SAEBench's prepare_probe_data)."""
    pos = np.flatnonzero(labels == positive)
    others = [c for c in range(n_classes) if c != positive and (labels == c).any()]
    per = math.ceil(len(pos) / max(1, len(others)))
    neg = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per] for c in others]
                         or [np.array([], dtype=int)])
    neg = rng.permutation(neg)[: len(pos)]
    idx = np.concatenate([pos, neg])
    return idx, np.r_[np.ones(len(pos), int), np.zeros(len(neg), int)]


def top_k_mean_diff(X: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """The k features with the largest |mean(positive) - mean(negative)|."""
    diff = np.abs(X[y == 1].mean(0) - X[y == 0].mean(0))
    return np.argsort(-diff, kind="stable")[:k]


def probe_accuracy(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray,
                   y_test: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression

    from .evaluate import single_thread

    with warnings.catch_warnings(), single_thread():
        warnings.simplefilter("ignore")
        clf = LogisticRegression(max_iter=1000).fit(X_train, y_train)
    return float((clf.predict(X_test) == y_test).mean())


@dataclass
class ProbingData:
    """Cached per-token residuals of every probing text, and the binary task splits."""

    task_names: list[str]
    classes: dict[str, list[str]]
    acts_TD: np.ndarray | Tensor  # non-special token residuals of all texts, in text order
    # (a memory-mapped array when read from the cache)
    offsets: Tensor  # [n_texts + 1]
    text_task: np.ndarray  # task index of each text
    text_split: np.ndarray  # 0 train, 1 test
    text_label: np.ndarray  # class index within its task
    row_keep: np.ndarray | None = None  # False: a massive activation, left out of the pooling
    seed: int = 42
    llm_results: dict[str, dict[str, float]] = field(default_factory=dict)  # task -> metric
    folder: Path | None = None
    reused: bool = False

    def tasks(self) -> Iterable[tuple[str, str, dict]]:
        """(task, class, {"train": (idx, y), "test": (idx, y)}) with the same draw every time."""
        for t, name in enumerate(self.task_names):
            for c, cls in enumerate(self.classes[name]):
                rng = np.random.default_rng([self.seed, t, c])
                sets = {}
                for s, split in enumerate(("train", "test")):
                    mask = (self.text_task == t) & (self.text_split == s)
                    texts = np.flatnonzero(mask)
                    idx, y = binary_task(self.text_label[texts], c, len(self.classes[name]), rng)
                    sets[split] = (texts[idx], y)
                if len(sets["train"][1]) and len(sets["test"][1]) and sets["train"][1].min() == 0:
                    yield name, cls, sets


def probe_features(features_ND: np.ndarray, data: ProbingData, k_values: Sequence[int],
                   prefix: str, full: bool = False) -> dict[str, dict[str, float]]:
    """Mean test accuracy per task of top-k probes (and of a probe on all features if `full`)
    for features [n_texts, F]: {task: {f"{prefix}_top_{k}_test_accuracy": acc, ...}}."""
    per_task: dict[str, dict[str, list[float]]] = {}
    for name, _cls, sets in data.tasks():
        (i_tr, y_tr), (i_te, y_te) = sets["train"], sets["test"]
        X_tr, X_te = features_ND[i_tr], features_ND[i_te]
        accs = per_task.setdefault(name, {})
        if full:
            accs.setdefault(f"{prefix}_test_accuracy", []).append(
                probe_accuracy(X_tr, y_tr, X_te, y_te))
        for k in k_values:
            feats = top_k_mean_diff(X_tr, y_tr, min(k, features_ND.shape[1]))
            accs.setdefault(f"{prefix}_top_{k}_test_accuracy", []).append(
                probe_accuracy(X_tr[:, feats], y_tr, X_te[:, feats], y_te))
    return {t: {m: float(np.mean(v)) for m, v in accs.items()} for t, accs in per_task.items()}


def build_probing_data(model, profile: Profile, cache_root: str | Path | None = None,
                       fingerprint: str | None = None, progress: bool = True,
                       tasks: dict[str, ProbingTask] | None = None,
                       download_dir: str | Path | None = None) -> ProbingData:
    """Tokenize the probing texts, cache the residual of every token, train the LLM probes."""
    from .evaluate import cache_folder, load_cached, model_identity, save_cached
    from .tokens import bos_token_id, special_token_ids

    tok = model.tokenizer
    # Key: the tasks' specification (cheap), or the hash of explicitly given tasks; the manifest
    # records the hash of the texts and labels actually used.
    spec = ({"tasks_sha256": tasks_sha(tasks)} if tasks is not None
            else task_spec(profile, download_dir))
    identity = {**model_identity(model, fingerprint), "hook": profile.hook_name, **spec,
                "max_tokens": profile.probe_max_tokens,
                "massive_factor": profile.massive_norm_factor}
    meta_k = list(profile.probe_k_values)
    if cache_root is not None:
        hit = load_cached(cache_root, "probing", identity)
        if hit is not None and hit["meta"].get("k_values") == meta_k:
            a, m = hit["arrays"], hit["meta"]
            return ProbingData(m["task_names"], m["classes"], a["acts"],
                               torch.from_numpy(a["offsets"]), a["text_task"], a["text_split"],
                               a["text_label"], row_keep=a["row_keep"], seed=m["seed"],
                               llm_results=m["llm_results"], folder=hit["folder"], reused=True)
    tasks = tasks if tasks is not None else load_tasks(profile, download_dir)
    names = list(tasks)
    texts, t_task, t_split, t_label = [], [], [], []
    for t, name in enumerate(names):
        task = tasks[name]
        for s, exs in enumerate((task.train, task.test)):
            for text, label in exs:
                texts.append(text)
                t_task.append(t)
                t_split.append(s)
                t_label.append(task.classes.index(str(label)))
    bos = bos_token_id(tok)
    special = special_token_ids(tok)
    token_lists = tokenize(texts, tok, profile.probe_max_tokens, bos)
    n_rows = int(kept_offsets(token_lists, special)[-1])
    # Rows go straight into a memory-mapped file when caching (SAEBench's scale is ~10^7 tokens);
    # fp16 once fp32 would exceed 4 GB.
    dtype = np.float16 if n_rows * profile.d_model * 4 > 4 * 2**30 else np.float32
    out, tmp = None, None
    if cache_root is not None:
        folder = cache_folder(cache_root, "probing", identity)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / ".acts.npy.partial"
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype,
                                        shape=(n_rows, profile.d_model))
    acts, offsets, row_keep = token_activations(
        model, token_lists, profile.layer, special, pad_id=bos, progress=progress, out=out,
        massive_factor=profile.massive_norm_factor)
    data = ProbingData(names, {n: tasks[n].classes for n in names}, acts, offsets,
                       np.array(t_task), np.array(t_split), np.array(t_label), row_keep=row_keep,
                       seed=profile.eval_seed)
    llm_features = mean_pool(acts, offsets, row_keep=row_keep).numpy()
    data.llm_results = probe_features(llm_features, data, profile.probe_k_values, "llm", full=True)
    if cache_root is not None:
        acts.flush()
        data.folder = save_cached(cache_root, "probing", identity, {
            "acts": tmp, "offsets": offsets.numpy(), "text_task": data.text_task,
            "text_split": data.text_split, "text_label": data.text_label, "row_keep": row_keep},
            {"task_names": names, "classes": data.classes, "seed": data.seed,
             "llm_results": data.llm_results, "k_values": meta_k, "tasks_sha256": tasks_sha(tasks),
             "n_texts": len(texts), "n_tokens": n_rows,
             "n_massive_dropped": int((~row_keep).sum())})
        data.acts_TD = np.load(data.folder / "acts.npy", mmap_mode="r")
    return data


@torch.no_grad()
def sae_features(adapter, data: ProbingData, batch_tokens: int = 8192) -> np.ndarray:
    """Mean over each text's tokens of the SAE latents [n_texts, F] (encode, then pool)."""
    device = adapter.W_dec.device
    return mean_pool(data.acts_TD, data.offsets, lambda rows: adapter.encode(rows.to(device)),
                     batch_tokens, row_keep=data.row_keep).numpy()


def evaluate_sparse_probing(adapter, data: ProbingData, k_values: Sequence[int] = (1, 5, 20),
                            full_sae_probe: bool = False) -> tuple[dict[str, float], list[dict]]:
    """Sparse-probing metrics of one SAE. Returns (summary averaged over datasets, per-dataset
    rows with the LLM and SAE accuracies)."""
    sae_results = probe_features(sae_features(adapter, data), data, k_values, "sae",
                                 full=full_sae_probe)
    rows = []
    for name in data.task_names:
        if name in sae_results:
            rows.append({"dataset": name, **data.llm_results.get(name, {}), **sae_results[name]})
    keys = [k for k in rows[0] if k.endswith("accuracy")] if rows else []
    summary = {k: float(np.mean([r[k] for r in rows if k in r])) for k in keys}
    summary["probing_n_datasets"] = len(rows)
    return summary, rows
