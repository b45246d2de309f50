"""Text datasets streamed from the Hugging Face hub (the `paper` profile's openwebtext), with a
deterministic held-out split: such datasets have only a train split."""
from __future__ import annotations

import hashlib

from ..hub import hub_error

HUB_HOLDOUT_EVERY = 100  # streamed hub datasets: every 100th document is the validation split


def hub_fingerprint(profile) -> str:
    """The identity of a hub dataset's text: its name, text field and held-out rule."""
    ident = f"hub:{profile.dataset}:{profile.dataset_text_field}:holdout-every-{HUB_HOLDOUT_EVERY}"
    return hashlib.sha256(ident.encode()).hexdigest()


def stream_hub_dataset(profile, split: str):
    """An IterableDataset with a "text" column: documents whose stream index is a multiple of 100
    form the validation split, the rest the train split."""
    import datasets  # slow to import; only text loading needs it

    try:
        ds = datasets.load_dataset(profile.dataset, split="train", streaming=True)
    except Exception as err:  # offline, gated or renamed: all need the same advice
        raise hub_error(repr(profile.dataset), err,
                        f"Profile {profile.name!r} streams its text from the hub.") from err
    if profile.dataset_text_field != "text":
        ds = ds.rename_column(profile.dataset_text_field, "text")
    want_validation = split == "validation"

    def in_split(_row: dict, index: int) -> bool:
        return (index % HUB_HOLDOUT_EVERY == 0) == want_validation

    return ds.filter(in_split, with_indices=True)
