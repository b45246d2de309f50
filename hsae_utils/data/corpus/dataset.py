"""The profile's text as a `datasets` object, and its identity for downstream caches: the embedded
corpus (`build`), or a dataset streamed from the hub (`hub`)."""

from __future__ import annotations

from hsae_utils.data.corpus.build import SPLITS, build_corpus, corpus_dir
from hsae_utils.data.corpus.hub import hub_fingerprint, stream_hub_dataset


def corpus_fingerprint(profile) -> str:
    """What downstream caches record as the identity of the profile's text: the embedded corpus's
    corpus_sha256 (building it if needed), or for a hub dataset its name and held-out rule."""
    if profile.dataset == "embedded":
        return build_corpus(corpus_dir(profile))["corpus_sha256"]
    return hub_fingerprint(profile)


def load_text_dataset(profile, split: str):
    """A `datasets` object with a "text" column for the profile's corpus and split.

    - profile.dataset == "embedded": the local corpus in `<output root>/corpus` (shared by all
      profiles, built on demand), loaded as a map-style Dataset.
    - otherwise (the paper's "Skylion007/openwebtext"): streamed from the Hugging Face hub as an
      IterableDataset (`hub.stream_hub_dataset`: every 100th document is the validation split).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if profile.dataset != "embedded":
        return stream_hub_dataset(profile, split)
    import datasets  # slow to import; only text loading needs it

    folder = corpus_dir(profile)
    build_corpus(folder)
    files = str(folder / f"{split}.jsonl")
    return datasets.load_dataset("json", data_files=files, split="train")
