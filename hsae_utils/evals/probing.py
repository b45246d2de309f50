"""Sparse probing (Gurnee et al. 2023), as SAEBench's `sparse_probing` eval runs it.

- Datasets (`probing_tasks`): `local` / `smoke` use the four labelled tasks of `load_probing_tasks`
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

Parity (tests/test_parity_probing.py): SAEBench's pooling, top-k selection and sklearn probe give
ours on the same activations. Differences on purpose: the negatives are a seeded numpy draw (SAEBench:
torch's global RNG); SAE latents are in the SAE's normalized space (SAEBench reading our export
sees them in raw units, z / scale, and the L2-regularised probe is not scale-invariant, so its
top-k accuracies can differ slightly; the top-k selection is the same).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from hsae_utils.config import Profile
from hsae_utils.data.activations import from_storage, to_storage
from hsae_utils.data.forward import layer_resid
from hsae_utils.data.tokens import bos_token_id, keep_mask, special_token_ids
from hsae_utils.evals import logreg
from hsae_utils.evals.cache import (
    cache_folder,
    load_cached,
    model_device,
    model_identity,
    save_cached,
)
from hsae_utils.evals.probing_tasks import ProbingTask, load_tasks, task_spec, tasks_sha
from hsae_utils.io import open_memmap_allocated
from hsae_utils.timing import single_thread

# ============================================================================================
# Activations (model side)
# ============================================================================================
# The per-token store: fp32 up to this size, bf16 above (stored as uint16, as the activation cache
# stores bf16). Not fp16: Gemma-2's residuals exceed its range (65,504), and a row that overflowed
# to inf would silently spoil its text's mean. Every batch is checked finite before it is written.
FP32_STORE_BYTES = 4 * 2**30


def store_dtype(n_rows: int, d_model: int) -> str:
    """The probing store's dtype for n_rows x d_model activations."""
    return "float32" if n_rows * d_model * 4 <= FP32_STORE_BYTES else "bfloat16"


class NonFiniteActivationsError(ValueError):
    """The model produced inf / NaN residuals on probing texts."""


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
def token_activations(
    model,
    token_lists: list[list[int]],
    layer: int,
    special_ids: Iterable[int],
    pad_id: int,
    batch_tokens: int = 4096,
    progress: bool = True,
    out: np.ndarray | None = None,
    massive_factor: float | None = None,
    dtype: str = "float32",
) -> tuple[np.ndarray, Tensor, np.ndarray]:
    """Residuals of the non-special tokens of every text, concatenated in text order [T, D]
    (written into `out`, e.g. a memory-mapped file, when given), offsets [n_texts + 1], and a
    mask [T] that is False for massive activations (`tokens.keep_mask`: norm above
    `massive_factor` x the batch median), which are left out of the mean pooling like BOS.
    Texts are batched by length and right-padded (causal model: padding after a text does not
    change its tokens' residuals). `dtype`: how rows are stored in `out` ("bfloat16": as uint16).
    A batch with a non-finite residual raises NonFiniteActivationsError before it is stored."""
    device = model_device(model)
    special = torch.tensor(sorted(set(special_ids)), dtype=torch.long)
    offsets = kept_offsets(token_lists, special_ids)
    if out is None:
        out = np.zeros(
            (int(offsets[-1]), model.cfg.d_model),
            dtype=np.uint16 if dtype == "bfloat16" else np.float32,
        )
    row_keep = np.ones(int(offsets[-1]), dtype=bool)
    order = sorted(range(len(token_lists)), key=lambda i: len(token_lists[i]))
    i = 0
    bar = tqdm(
        total=sum(map(len, token_lists)),
        disable=not progress,
        unit="tok",
        desc="probing texts (model)",
    )
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
        real_BS = torch.arange(S)[None] < torch.tensor([len(token_lists[j]) for j in idx])[:, None]
        if not torch.isfinite(resid[real_BS]).all():
            raise NonFiniteActivationsError(
                f"Non-finite residuals (inf / NaN) at layer {layer} on {len(idx)} probing texts "
                f"of up to {S} tokens: the model overflowed in its dtype "
                f"({next(model.parameters()).dtype}). Load it in float32 or bfloat16 (not "
                "float16) and re-run."
            )
        keep = keep_mask(toks, resid, special.tolist(), massive_factor)
        for r, j in enumerate(idx):
            t = torch.tensor(token_lists[j])
            rows = ~torch.isin(t, special)
            a, b = int(offsets[j]), int(offsets[j + 1])
            out[a:b] = to_storage(resid[r, : len(t)][rows], dtype)
            row_keep[a:b] = keep[r, : len(t)][rows].numpy()
        bar.update(sum(len(token_lists[j]) for j in idx))
        i += len(idx)
    bar.close()
    return out, offsets, row_keep


def iter_rows(
    acts_TD: np.ndarray | Tensor, batch: int = 8192, dtype: str | None = None
) -> Iterable[tuple[int, Tensor]]:
    """(start, float32 tensor) chunks of a (possibly memory-mapped) array of rows; `dtype`
    "bfloat16" reads uint16 storage as bf16 (other numpy dtypes convert as they are)."""
    for i in range(0, acts_TD.shape[0], batch):
        chunk = acts_TD[i : i + batch]
        if not isinstance(chunk, Tensor):
            chunk = (
                from_storage(chunk, "bfloat16")
                if dtype == "bfloat16"
                else torch.from_numpy(np.array(chunk, dtype=np.float32))
            )
        yield i, chunk.float()


def mean_pool(
    acts_TF: np.ndarray | Tensor,
    offsets: Tensor,
    encode=None,
    batch: int = 8192,
    row_keep: np.ndarray | None = None,
    dtype: str | None = None,
) -> Tensor:
    """Mean of each text's rows [n_texts, F] over the rows with `row_keep` (all by default;
    texts without rows get zeros); `encode` maps a chunk of rows first (SAE latents: encode each
    token, then pool, as SAEBench does)."""
    (pooled,) = mean_pool_many(acts_TF, offsets, [encode], batch, row_keep, dtype)
    return pooled


def mean_pool_many(
    acts_TF: np.ndarray | Tensor,
    offsets: Tensor,
    encoders: Sequence,
    batch: int = 8192,
    row_keep: np.ndarray | None = None,
    dtype: str | None = None,
    reduce_on_device: bool | None = None,
) -> list[Tensor]:
    """`mean_pool` for several encoders (None: the rows themselves) in one pass over the rows:
    each chunk is read from disk and converted once, then encoded by every encoder (the SAEs of
    an evaluation). Equal to one `mean_pool` call per encoder.
    `reduce_on_device` (default: when an encoder's output is not on the CPU): sum each chunk's
    rows per text where they were encoded and move only those sums ([texts in the chunk, F]
    instead of [rows, F] in fp64: ~1/100 of the bytes at 128-token texts) to the host; the same
    sums in another order (equal to float64 rounding). On the CPU the default keeps the
    row-by-row sum (bit-identical to before)."""
    n = offsets.shape[0] - 1
    seg = torch.repeat_interleave(torch.arange(n), offsets[1:] - offsets[:-1])
    w = (
        torch.ones(seg.shape[0], dtype=torch.float64)
        if row_keep is None
        else torch.from_numpy(np.asarray(row_keep)).double()
    )
    counts = torch.zeros(n, dtype=torch.float64).index_add_(0, seg, w)
    outs: list[Tensor | None] = [None] * len(encoders)
    for i, rows in iter_rows(acts_TF, batch, dtype):
        j = slice(i, i + rows.shape[0])
        lo, hi = int(seg[i]), int(seg[j][-1]) + 1  # the texts this chunk touches (seg sorted)
        local: dict = {}  # the chunk's text index and weights, once per device
        for e, encode in enumerate(encoders):
            f = encode(rows) if encode is not None else rows
            if outs[e] is None:
                outs[e] = torch.zeros(n, f.shape[1], dtype=torch.float64)
            on_device = f.device.type != "cpu" if reduce_on_device is None else reduce_on_device
            if not on_device:
                outs[e].index_add_(0, seg[j], f.double().cpu() * w[j, None])
                continue
            if f.device not in local:
                local[f.device] = ((seg[j] - lo).to(f.device), w[j, None].to(f.device))
            idx, wj = local[f.device]
            part = torch.zeros(hi - lo, f.shape[1], dtype=torch.float64, device=f.device)
            outs[e][lo:hi] += part.index_add_(0, idx, f.double() * wj).cpu()
    return [
        torch.zeros(n, 0) if o is None else (o / counts.clamp_min(1)[:, None]).float() for o in outs
    ]


# ============================================================================================
# Probes
# ============================================================================================
def binary_task(
    labels: np.ndarray, positive: int, n_classes: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Indices and 0/1 labels of a balanced one-vs-rest task: all texts of `positive` against as
    many texts drawn evenly from the other classes (SAEBench's prepare_probe_data)."""
    pos = np.flatnonzero(labels == positive)
    others = [c for c in range(n_classes) if c != positive and (labels == c).any()]
    per = math.ceil(len(pos) / max(1, len(others)))
    neg = np.concatenate(
        [rng.permutation(np.flatnonzero(labels == c))[:per] for c in others]
        or [np.array([], dtype=int)]
    )
    neg = rng.permutation(neg)[: len(pos)]
    idx = np.concatenate([pos, neg])
    return idx, np.r_[np.ones(len(pos), int), np.zeros(len(neg), int)]


def top_k_mean_diff(X: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """The k features with the largest |mean(positive) - mean(negative)|."""
    diff = np.abs(X[y == 1].mean(0) - X[y == 0].mean(0))
    return np.argsort(-diff, kind="stable")[:k]


def probe_accuracy(
    X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, y_test: np.ndarray
) -> float:
    from sklearn.linear_model import LogisticRegression  # sklearn: slow to import

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
    acts_dtype: str = "float32"  # how acts_TD stores its rows ("bfloat16": as uint16)
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


def top_k_accuracies_torch(
    features_ND: np.ndarray, problems: list, k_values: Sequence[int], device
) -> dict[tuple[int, int], float]:
    """Test accuracy of the top-k probe of every (problem, k), the probes fitted with
    `evals.logreg` (sklearn's objective, C = 1) in one batched fit per k on `device`.
    `problems`: ((train indices, labels), (test indices, labels)) per binary task."""
    as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float64))  # noqa: E731
    per_k: dict[int, list[list]] = {k: [[], [], [], []] for k in k_values}
    for (i_tr, yt), (i_te, ye) in problems:
        X_tr = features_ND[i_tr]  # each problem's train rows gathered once for every k
        for k in k_values:
            feats = top_k_mean_diff(X_tr, yt, min(k, features_ND.shape[1]))
            for lst, a in zip(per_k[k], (X_tr[:, feats], features_ND[np.ix_(i_te, feats)], yt, ye)):
                lst.append(as_t(a))
    out = {}
    for k, (tr, te, y_tr, y_te) in per_k.items():
        (X_tr, m_tr), (X_te, m_te) = logreg.stack_padded(tr), logreg.stack_padded(te)
        Y_tr, Y_te = logreg.stack_padded(y_tr)[0], logreg.stack_padded(y_te)[0]
        fit = logreg.fit_logreg(X_tr.to(device), Y_tr.to(device), m_tr.to(device))
        pred = fit.decision_function(X_te.to(device)) > 0
        m_te = m_te.to(device)
        correct = ((pred == Y_te.to(device).bool()) & m_te).sum(-1).double()
        accs = (correct / m_te.sum(-1).double()).cpu().tolist()
        out.update({(j, k): a for j, a in enumerate(accs)})
    return out


def probe_features(
    features_ND: np.ndarray,
    data: ProbingData,
    k_values: Sequence[int],
    prefix: str,
    full: bool = False,
    probe_fit: str = "sklearn",
    device: str | torch.device = "cpu",
) -> dict[str, dict[str, float]]:
    """Mean test accuracy per task of top-k probes (and of a probe on all features if `full`)
    for features [n_texts, F]: {task: {f"{prefix}_top_{k}_test_accuracy": acc, ...}}.
    `probe_fit` "torch": the top-k probes fitted batched on `device` (`evals.logreg`, sklearn's
    objective); the probe on all features stays sklearn's (its Hessian would be F x F)."""
    problems = list(data.tasks())
    torch_accs = (
        top_k_accuracies_torch(
            features_ND, [(s["train"], s["test"]) for _, _, s in problems], k_values, device
        )
        if probe_fit == "torch" and problems
        else {}
    )
    per_task: dict[str, dict[str, list[float]]] = {}
    for j, (name, _cls, sets) in enumerate(problems):
        (i_tr, y_tr), (i_te, y_te) = sets["train"], sets["test"]
        if full or probe_fit != "torch":
            X_tr, X_te = features_ND[i_tr], features_ND[i_te]
        accs = per_task.setdefault(name, {})
        if full:
            accs.setdefault(f"{prefix}_test_accuracy", []).append(
                probe_accuracy(X_tr, y_tr, X_te, y_te)
            )
        for k in k_values:
            if probe_fit == "torch":
                acc = torch_accs[(j, k)]
            else:
                feats = top_k_mean_diff(X_tr, y_tr, min(k, features_ND.shape[1]))
                acc = probe_accuracy(X_tr[:, feats], y_tr, X_te[:, feats], y_te)
            accs.setdefault(f"{prefix}_top_{k}_test_accuracy", []).append(acc)
    return {t: {m: float(np.mean(v)) for m, v in accs.items()} for t, accs in per_task.items()}


def build_probing_data(
    model,
    profile: Profile,
    cache_root: str | Path | None = None,
    fingerprint: str | None = None,
    progress: bool = True,
    tasks: dict[str, ProbingTask] | None = None,
    download_dir: str | Path | None = None,
    rebuild: bool = False,
) -> ProbingData:
    """Tokenize the probing texts, cache the residual of every token, train the LLM probes
    (`rebuild`: recomputed and overwritten)."""
    tok = model.tokenizer
    # Key: the tasks' specification (cheap), or the hash of explicitly given tasks; the manifest
    # records the hash of the texts and labels actually used.
    spec = (
        {"tasks_sha256": tasks_sha(tasks)}
        if tasks is not None
        else task_spec(profile, download_dir)
    )
    identity = {
        **model_identity(model, fingerprint),
        "hook": profile.hook_name,
        **spec,
        "max_tokens": profile.probe_max_tokens,
        "massive_factor": profile.massive_norm_factor,
    }
    meta_k = list(profile.probe_k_values)
    if cache_root is not None:
        hit = load_cached(cache_root, "probing", identity, rebuild=rebuild)
        if hit is not None and hit["meta"].get("k_values") == meta_k:
            a, m = hit["arrays"], hit["meta"]
            return ProbingData(
                m["task_names"],
                m["classes"],
                a["acts"],
                torch.from_numpy(a["offsets"]),
                a["text_task"],
                a["text_split"],
                a["text_label"],
                row_keep=a["row_keep"],
                seed=m["seed"],
                acts_dtype=m["acts_dtype"],
                llm_results=m["llm_results"],
                folder=hit["folder"],
                reused=True,
            )
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
    # bf16 once fp32 would exceed 4 GiB (`store_dtype`).
    dtype = store_dtype(n_rows, profile.d_model)
    out, tmp = None, None
    if cache_root is not None:
        folder = cache_folder(cache_root, "probing", identity)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / ".acts.npy.partial"
        # Disk space reserved up front: a full disk is a DiskFullError here, not a SIGBUS later.
        out = open_memmap_allocated(
            tmp, np.uint16 if dtype == "bfloat16" else np.float32, (n_rows, profile.d_model)
        )
    acts, offsets, row_keep = token_activations(
        model,
        token_lists,
        profile.layer,
        special,
        pad_id=bos,
        progress=progress,
        out=out,
        massive_factor=profile.massive_norm_factor,
        dtype=dtype,
    )
    data = ProbingData(
        names,
        {n: tasks[n].classes for n in names},
        acts,
        offsets,
        np.array(t_task),
        np.array(t_split),
        np.array(t_label),
        row_keep=row_keep,
        seed=profile.eval_seed,
        acts_dtype=dtype,
    )
    llm_features = mean_pool(acts, offsets, row_keep=row_keep, dtype=dtype).numpy()
    data.llm_results = probe_features(llm_features, data, profile.probe_k_values, "llm", full=True)
    if cache_root is not None:
        acts.flush()
        data.folder = save_cached(
            cache_root,
            "probing",
            identity,
            {
                "acts": tmp,
                "offsets": offsets.numpy(),
                "text_task": data.text_task,
                "text_split": data.text_split,
                "text_label": data.text_label,
                "row_keep": row_keep,
            },
            {
                "task_names": names,
                "classes": data.classes,
                "seed": data.seed,
                "llm_results": data.llm_results,
                "k_values": meta_k,
                "tasks_sha256": tasks_sha(tasks),
                "acts_dtype": dtype,
                "n_texts": len(texts),
                "n_tokens": n_rows,
                "n_massive_dropped": int((~row_keep).sum()),
            },
        )
        data.acts_TD = np.load(data.folder / "acts.npy", mmap_mode="r")
    return data


@torch.no_grad()
def sae_features(adapter, data: ProbingData, batch_tokens: int = 8192) -> np.ndarray:
    """Mean over each text's tokens of the SAE latents [n_texts, F] (encode, then pool)."""
    (features,) = sae_features_many([adapter], data, batch_tokens)
    return features


def _encoder(adapter):
    device = adapter.W_dec.device
    return lambda rows: adapter.encode(rows.to(device))


@torch.no_grad()
def sae_features_many(
    adapters: Sequence, data: ProbingData, batch_tokens: int = 8192
) -> list[np.ndarray]:
    """`sae_features` of several SAEs in one pass over the stored rows (each chunk read from
    disk and converted to fp32 once for all of them)."""
    pooled = mean_pool_many(
        data.acts_TD,
        data.offsets,
        [_encoder(a) for a in adapters],
        batch_tokens,
        row_keep=data.row_keep,
        dtype=data.acts_dtype,
    )
    return [p.numpy() for p in pooled]


def evaluate_sparse_probing(
    adapter,
    data: ProbingData,
    k_values: Sequence[int] = (1, 5, 20),
    full_sae_probe: bool = False,
    features: np.ndarray | None = None,
    probe_fit: str = "auto",
) -> tuple[dict[str, float], list[dict]]:
    """Sparse-probing metrics of one SAE. Returns (summary averaged over datasets, per-dataset
    rows with the LLM and SAE accuracies). `features`: its pooled latents if already computed
    (`sae_features_many`). `probe_fit`: "sklearn", "torch" (batched on the SAE's device) or
    "auto" (torch on CUDA, else sklearn: CPU results stay bit-identical)."""
    device = adapter.W_dec.device
    features = sae_features(adapter, data) if features is None else features
    sae_results = probe_features(
        features,
        data,
        k_values,
        "sae",
        full=full_sae_probe,
        probe_fit=logreg.resolve_probe_fit(probe_fit, device),
        device=device,
    )
    rows = []
    for name in data.task_names:
        if name in sae_results:
            rows.append({"dataset": name, **data.llm_results.get(name, {}), **sae_results[name]})
    keys = [k for k in rows[0] if k.endswith("accuracy")] if rows else []
    summary = {k: float(np.mean([r[k] for r in rows if k in r])) for k in keys}
    summary["probing_n_datasets"] = len(rows)
    return summary, rows
