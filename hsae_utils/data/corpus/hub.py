"""Text datasets streamed from the Hugging Face hub (the `paper` profile's openwebtext), with a
deterministic held-out split: such datasets have only a train split."""

from __future__ import annotations

import hashlib

HUB_HOLDOUT_EVERY = 100  # streamed hub datasets: every 100th document is the validation split


def hub_fingerprint(profile) -> str:
    """The identity of a hub dataset's text: its name, text field and held-out rule."""
    from hsae_utils.data import hub

    source = hub.identity(profile.dataset, "dataset", profile)
    ident = f"hub:{source}:{profile.dataset_text_field}:holdout-every-{HUB_HOLDOUT_EVERY}"
    return hashlib.sha256(ident.encode()).hexdigest()


def stream_hub_dataset(profile, split: str):
    """An IterableDataset with a "text" column: documents whose stream index is a multiple of 100
    form the validation split, the rest the train split."""
    from hsae_utils.data.hub_data import load_hub_dataset

    # Script datasets (openwebtext) are read from their parquet files (hsae_utils.data.hub_data); the
    # id resolves to its local replica with the profile's hub_replica switch (paper-tiny).
    ds = load_hub_dataset(
        profile.dataset,
        profile,
        split="train",
        streaming=True,
        columns=(profile.dataset_text_field,),
    )
    if profile.dataset_text_field != "text":
        ds = ds.rename_column(profile.dataset_text_field, "text")
    want_validation = split == "validation"

    def in_split(_row: dict, index: int) -> bool:
        return (index % HUB_HOLDOUT_EVERY == 0) == want_validation

    return ds.filter(in_split, with_indices=True)
