"""Hub datasets read with the pinned `datasets`, and their failures told apart.

The pinned `datasets` no longer runs loading scripts. Datasets whose hub repository is a script
(`SCRIPT_DATASETS`) are read as parquet files straight from the repository, at the revision that
holds them:
- Skylion007/openwebtext: the hub's parquet conversion, revision `refs/convert/parquet`, files
  `plain_text/train/*.parquet` (the script itself reads tar archives of the main revision);
- codeparrot/github-code: the main revision's own `data/train-*.parquet` (columns code, repo_name,
  path, language, license, size); the script's `languages=` option is applied by the reader.
Every other dataset (SAEBench's bias_in_bios, amazon reviews, ag_news, europarl) is a parquet
repository that `load_dataset(repo_id, config)` reads as SAEBench does.

The repository id goes through `hub.resolve_dataset` first, so with the replica switch on the same
calls read the local replica (hsae_utils.data.dataset_replicas) instead of the hub.

Errors (`HubDataError`) say which of these it is, with the fix: no network; offline mode without
a cached copy; a gated dataset without an accepted licence or token; no such repository; a
script-only dataset; a missing split or missing data files; a missing column.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from hsae_utils.data import hub

PARQUET_REVISION = "refs/convert/parquet"


@dataclass(frozen=True)
class ParquetFiles:
    """Where the parquet files of a script dataset are: a revision and a glob per split."""

    revision: str | None  # None: the main revision
    files: dict[str, str]


SCRIPT_DATASETS: dict[str, ParquetFiles] = {
    "Skylion007/openwebtext": ParquetFiles(
        PARQUET_REVISION, {"train": "plain_text/train/*.parquet"}
    ),
    "codeparrot/github-code": ParquetFiles(None, {"train": "data/train-*.parquet"}),
}


class HubDataError(RuntimeError):
    """A hub dataset could not be read; the message names the dataset, the cause and the fix."""

    def __init__(self, repo_id: str, kind: str, message: str):
        super().__init__(message)
        self.repo_id, self.kind = repo_id, kind


# What a paper run reads of the large repositories (the streams read files in order), for
# pre-downloading; the other repositories are downloaded whole.
DOWNLOAD_INCLUDE: dict[str, tuple[str, ...]] = {
    "Skylion007/openwebtext": ("plain_text/train/0000.parquet",),  # far more than 10.1M tokens
    "codeparrot/github-code": ("data/train-0000[0-1]-of-01126.parquet",),  # mixed languages
    "Helsinki-NLP/europarl": ("README.md", "en-fr/*", "fr-it/*", "de-en/*", "es-fr/*", "nl-pt/*"),
}


def download_command(repo_id: str) -> str:
    """The command that puts what we read of `repo_id` into the local hub cache."""
    spec = SCRIPT_DATASETS.get(repo_id)
    rev = f" --revision {spec.revision}" if spec and spec.revision else ""
    include = "".join(f" --include '{g}'" for g in DOWNLOAD_INCLUDE.get(repo_id, ()))
    return f"hf download {repo_id} --repo-type dataset{rev}{include}"


def offline_snapshot(repo_id: str, revision: str | None = None) -> str | None:
    """With HF_HUB_OFFLINE set, the folder of `repo_id`'s snapshot in the local hub cache (as
    `hf download` left it), which `datasets` then reads like any folder: neither hf:// paths nor
    hub ids are read from the hub cache in offline mode. None when online."""
    from huggingface_hub import constants, snapshot_download

    if not constants.HF_HUB_OFFLINE:
        return None
    return snapshot_download(repo_id, repo_type="dataset", revision=revision, local_files_only=True)


def source(repo_id: str, profile=None) -> str:
    """What `datasets` reads for `repo_id`: its replica folder (switch on), its snapshot in the
    hub cache (offline), or the hub id."""
    spec = SCRIPT_DATASETS.get(repo_id)
    base = hub.resolve_dataset(repo_id, profile)
    if base == repo_id:
        base = offline_snapshot(repo_id, spec.revision if spec else None) or repo_id
    return base


def data_files(repo_id: str, profile=None) -> dict[str, str]:
    """split -> the parquet glob of a script dataset: `hf://datasets/<id>@<revision>/<glob>` on
    the hub, `<folder>/<glob>` for a replica or a snapshot in the hub cache."""
    spec = SCRIPT_DATASETS[repo_id]
    base = source(repo_id, profile)
    if base == repo_id:
        rev = f"@{quote(spec.revision, safe='')}" if spec.revision else ""
        base = f"hf://datasets/{repo_id}{rev}"
    return {split: f"{base}/{glob}" for split, glob in spec.files.items()}


_HELP = {
    "offline": (
        "the Hugging Face hub is in offline mode (HF_HUB_OFFLINE) and the files are not in "
        "the local cache. Where there is network, pre-download them with `{download}` "
        "(same HF_HOME) and copy the cache here, or unset HF_HUB_OFFLINE"
    ),
    "network": (
        "the Hugging Face hub cannot be reached (no network, DNS or proxy failure). Check "
        "the connection, or pre-download with `{download}` where there is network and "
        "run with HF_HUB_OFFLINE=1; without the hub use ./run_all.sh --profile local"
    ),
    "gated": (
        "it is gated and this machine has no token with access to it. Accept its conditions "
        "on https://huggingface.co/datasets/{name} while logged in, then `hf auth login` or "
        "set HF_TOKEN"
    ),
    "not_found": "the hub has no such dataset (check the spelling) or it is private",
    "script": (
        "its hub repository is a loading script, which the pinned `datasets` no longer "
        "runs. Read its parquet files instead: add it to hsae_utils.data.hub_data."
        "SCRIPT_DATASETS with the revision and files that hold them (for an automatically "
        "converted dataset: revision refs/convert/parquet, <config>/<split>/*.parquet)"
    ),
    "split": (
        "the split asked for does not exist in it. Check the split name (or, for a replica, "
        "rebuild it with `" + hub.PREPARE_HINT + "`)"
    ),
    "files": (
        "the data files the reader expects are not there (the repository's layout changed, "
        "or a replica is incomplete): check hsae_utils.data.hub_data.SCRIPT_DATASETS against the "
        "repository, or rebuild a replica with `" + hub.PREPARE_HINT + "`"
    ),
    "other": (
        "an unexpected error. The `paper` profile needs the hub (or a pre-downloaded hub "
        "cache); without it, use ./run_all.sh --profile local"
    ),
}


def error_kind(err: BaseException) -> str:
    """What went wrong while reading a hub dataset (see `_HELP`), from the exceptions
    `datasets` and `huggingface_hub` raise."""
    kind = hub.error_kind(err)
    if kind != "other":
        return kind
    text = " ".join(str(e) for e in hub.error_chain(err))
    if any(type(e).__name__ == "DatasetNotFoundError" for e in hub.error_chain(err)):
        return "not_found"
    if "Dataset scripts are no longer supported" in text:
        return "script"
    if "Bad split" in text or "Unknown split" in text:
        return "split"
    if "valid data file" in text or any(
        isinstance(e, FileNotFoundError) for e in hub.error_chain(err)
    ):
        return "files"
    return "other"


def error_help(repo_id: str, err: BaseException) -> HubDataError:
    kind = error_kind(err)
    why = _HELP[kind].format(name=repo_id, download=download_command(repo_id))
    return HubDataError(
        repo_id,
        kind,
        f"Could not read the hub dataset {repo_id!r}: {why}. "
        f"Original error: {type(err).__name__}: {err}",
    )


def check_columns(ds, columns, repo_id: str):
    """Refuse a dataset (or each split of a dataset dict) that lacks one of `columns`."""
    import datasets

    parts = (
        ds.values()
        if isinstance(ds, (datasets.DatasetDict, datasets.IterableDatasetDict))
        else [ds]
    )
    for part in parts:
        have = part.column_names
        if have is None:  # a streamed dataset whose features are unknown: look at a row
            have = list(next(iter(part), {}).keys())
        missing = [c for c in columns if c not in have]
        if missing:
            raise HubDataError(
                repo_id,
                "column",
                (
                    f"The hub dataset {repo_id!r} has no column(s) {missing} (it has {sorted(have)}): "
                    "its schema changed, or a replica is damaged (rebuild it with "
                    f"`{hub.PREPARE_HINT}`); the reader in hsae_utils needs updating for a new schema."
                ),
            )
    return ds


def check_splits(ds, splits, repo_id: str):
    """Refuse a dataset dict that lacks one of `splits`."""
    missing = [s for s in splits if s not in ds]
    if missing:
        raise HubDataError(
            repo_id,
            "split",
            (
                f"Could not read the hub dataset {repo_id!r}: it has no split(s) {missing} (it has "
                f"{sorted(ds)}). " + _HELP["split"] + "."
            ),
        )
    return ds


def load_hub_dataset(
    repo_id: str,
    profile=None,
    config: str | None = None,
    split: str | None = None,
    streaming: bool = False,
    columns=(),
    splits=(),
):
    """`datasets.load_dataset` of a hub dataset (or its replica), script datasets through their
    parquet files; failures become a `HubDataError` that names the cause and the fix. `columns`
    and (without `split`) `splits` are checked to exist."""
    import datasets  # slow to import; only hub data needs it

    try:
        if repo_id in SCRIPT_DATASETS:
            ds = datasets.load_dataset(
                "parquet", data_files=data_files(repo_id, profile), split=split, streaming=streaming
            )
        else:
            ds = datasets.load_dataset(
                source(repo_id, profile), config, split=split, streaming=streaming
            )
    except FileNotFoundError as err:
        if hub.REPLICA_ENV in str(err):  # a missing replica: hub.resolve's message says it all
            raise
        raise error_help(repo_id, err) from err
    except Exception as err:  # noqa: BLE001 - told apart by error_kind
        raise error_help(repo_id, err) from err
    if split is None:
        check_splits(ds, splits, repo_id)
    return check_columns(ds, columns, repo_id)
