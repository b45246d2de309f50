"""Local replicas of the hub datasets the paper profile reads, for `paper-tiny`.

Each replica has the hub repository's file layout and column names, as SAEBench and our readers
(hsae_utils.data.hub_data) read them, and is filled with documents of the embedded corpus
(outputs/corpus/train.jsonl, in file order): small (a few MB in all) and deterministic. Labels are
assigned round-robin over the documents, so every class (and every profession x gender, category x
rating) holds the same number of rows; on a randomly initialised model no label carries meaning
anyway.

    datasets/Skylion007/openwebtext/plain_text/train/0000.parquet        text    (the hub's parquet
                                                                          conversion, refs/convert/parquet)
    datasets/LabHC/bias_in_bios/data/{train,test,dev}-00000-of-00001.parquet   hard_text, profession, gender
    datasets/canrager/amazon_reviews_mcauley_1and5/data/{train,test}-...       text, rating, category
    datasets/fancyzhx/ag_news/data/{train,test}-...                          text, label
    datasets/Helsinki-NLP/europarl/<l1>-<l2>/train-00000-of-00001.parquet    translation {l1, l2}
                                                                          (+ README.md with the configs)
    datasets/codeparrot/github-code/data/train-00000-of-00001.parquet        code, repo_name, path,
                                                                          language, license, size
                                                                          (+ the loading script's name,
                                                                          as on the hub)
"""

from __future__ import annotations

import json
from itertools import cycle
from pathlib import Path
from typing import Callable

from hsae_utils.data import hub

REPLICA_VERSION = 1
ROWS_PER_CLASS = {"train": 24, "test": 12}  # per class (per class x group where balanced)
N_PROFESSIONS, N_CATEGORIES = 28, 8  # bias_in_bios professions 0..27; amazon categories 0..7
AG_NEWS_LABELS = 4
EUROPARL_PAIRS = ("en-fr", "fr-it", "de-en", "es-fr", "nl-pt")  # SAEBench's language pairs
CODE_LANGUAGES = ("C", "Python", "HTML", "Java", "PHP", "JavaScript")
CODE_EXTENSION = {
    "C": "c",
    "Python": "py",
    "HTML": "html",
    "Java": "java",
    "PHP": "php",
    "JavaScript": "js",
}
MIN_CODE_CHARS = 700  # SAEBench keeps code longer than 128 x 3 + 150 characters


def corpus_documents(corpus_dir: Path) -> list[str]:
    path = Path(corpus_dir) / "train.jsonl"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: the dataset replicas are built from the "
            f"embedded corpus. Run `{hub.PREPARE_HINT}` (it builds it first)."
        )
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


def _write(rows: list[dict], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def _labelled(docs, groups: list[tuple], n: int) -> list[tuple]:
    """n rows per group, round-robin over the groups: (text, *group)."""
    return [(next(docs), *g) for _ in range(n) for g in groups]


def _split_files(folder: Path, make: Callable[[str, int], list[dict]], splits=("train", "test")):
    for split in splits:
        rows = make(split, ROWS_PER_CLASS.get(split, ROWS_PER_CLASS["test"]))
        _write(rows, folder / "data" / f"{split}-00000-of-00001.parquet")


def build_openwebtext(folder: Path, texts: list[str]) -> None:
    _write([{"text": t} for t in texts], folder / "plain_text" / "train" / "0000.parquet")


def build_bias_in_bios(folder: Path, texts: list[str]) -> None:
    docs = cycle(texts)
    groups = [(p, g) for p in range(N_PROFESSIONS) for g in (0, 1)]
    _split_files(
        folder,
        lambda split, n: [
            {"hard_text": t, "profession": p, "gender": g} for t, p, g in _labelled(docs, groups, n)
        ],
        ("train", "test", "dev"),
    )


def build_amazon(folder: Path, texts: list[str]) -> None:
    docs = cycle(texts)
    groups = [(c, r) for c in range(N_CATEGORIES) for r in (1.0, 5.0)]
    _split_files(
        folder,
        lambda split, n: [
            {"text": t, "rating": r, "category": c} for t, c, r in _labelled(docs, groups, n)
        ],
    )


def build_ag_news(folder: Path, texts: list[str]) -> None:
    docs = cycle(texts)
    groups = [(label,) for label in range(AG_NEWS_LABELS)]
    _split_files(
        folder,
        lambda split, n: [{"text": t, "label": label} for t, label in _labelled(docs, groups, n)],
    )


def build_europarl(folder: Path, texts: list[str]) -> None:
    docs = cycle(texts)
    n = 2 * sum(ROWS_PER_CLASS.values())
    configs = []
    for pair in EUROPARL_PAIRS:
        l1, l2 = pair.split("-")
        _write(
            [{"translation": {l1: next(docs), l2: next(docs)}} for _ in range(n)],
            folder / pair / "train-00000-of-00001.parquet",
        )
        configs.append(
            f"- config_name: {pair}\n  data_files:\n  - split: train\n    path: {pair}/train-*\n"
        )
    (folder / "README.md").write_text("---\nconfigs:\n" + "".join(configs) + "---\n")


def build_github_code(folder: Path, texts: list[str]) -> None:
    long_texts = iter(_joined(texts, MIN_CODE_CHARS))
    n = 2 * sum(ROWS_PER_CLASS.values())
    rows = []
    for i in range(n):
        for lang in CODE_LANGUAGES:
            code = next(long_texts)
            rows.append(
                {
                    "code": code,
                    "repo_name": f"replica/{lang.lower()}",
                    "path": f"src/file{i}.{CODE_EXTENSION[lang]}",
                    "language": lang,
                    "license": "mit",
                    "size": len(code),
                }
            )
    _write(rows, folder / "data" / "train-00000-of-00001.parquet")
    # The hub repository is a loading-script dataset; the script's presence makes a plain
    # load_dataset("codeparrot/github-code") fail on the replica exactly as on the hub.
    (folder / "github-code.py").write_text(
        "# The hub repository's loading script (not run by the "
        "pinned `datasets`): read data/*.parquet instead.\n"
    )


def _joined(texts: list[str], min_chars: int):
    """Consecutive documents joined by newlines into texts of at least min_chars characters."""
    buf = []
    for t in cycle(texts):
        buf.append(t)
        if sum(map(len, buf)) + len(buf) >= min_chars:
            yield "\n".join(buf)
            buf = []


BUILDERS: dict[str, Callable[[Path, list[str]], None]] = {
    "Skylion007/openwebtext": build_openwebtext,
    "LabHC/bias_in_bios": build_bias_in_bios,
    "canrager/amazon_reviews_mcauley_1and5": build_amazon,
    "fancyzhx/ag_news": build_ag_news,
    "Helsinki-NLP/europarl": build_europarl,
    "codeparrot/github-code": build_github_code,
}


def recipe(repo_id: str, corpus_sha: str) -> dict:
    import pyarrow

    return {
        "version": REPLICA_VERSION,
        "repo_id": repo_id,
        "corpus_sha256": corpus_sha,
        "rows_per_class": ROWS_PER_CLASS,
        "pyarrow": pyarrow.__version__,
    }


def ensure_dataset_replicas(corpus_dir: Path, force: bool = False) -> dict[str, Path]:
    """Every dataset replica under hub.replica_root(), each (re)built when missing, damaged or
    from another recipe (a few seconds in all)."""
    from hsae_utils.data.corpus.build import corpus_sha256

    corpus_dir = Path(corpus_dir)
    texts = [t for t in corpus_documents(corpus_dir) if len(t) >= 20]
    sha = corpus_sha256(corpus_dir)
    return {
        repo_id: hub.write_replica(
            repo_id,
            "dataset",
            lambda tmp, b=build: b(tmp, texts),
            recipe(repo_id, sha),
            force=force,
        )
        for repo_id, build in BUILDERS.items()
    }
