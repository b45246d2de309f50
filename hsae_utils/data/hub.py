"""Resolving Hugging Face hub ids, with one switch to local replicas.

Every hub id the pipeline reads (the model, the text dataset, the probing datasets) goes through
`resolve(repo_id, repo_type, profile)`. Normally it returns the id unchanged and the hub (or its
local cache) serves the files. With the switch on, it returns the folder of a local replica in the
hub's file layout, built at set-up (`python -m hsae_utils.pipeline.prepare --profile paper-tiny`), so that
the code after it (TransformerBridge.boot_transformers, `datasets.load_dataset`) runs exactly as
for the hub; nothing else in the path differs.

The switch: the profile's `hub_replica` field (on for `paper-tiny`), overridden either way by the
environment variable HSAE_HUB_REPLICA (1/true/on, 0/false/off).

Layout (one root, `replica_root()` = <cache>/hub-replica, <cache> = $HSAE_CACHE_DIR or .cache):
    hub-replica/models/<org>/<name>/      e.g. models/google/gemma-2-2b/config.json ...
    hub-replica/datasets/<org>/<name>/    e.g. datasets/Skylion007/openwebtext/...
Each replica folder holds `replica-manifest.json` (repo id and type, the recipe it was built from,
and the sha256 of every file); a folder whose files or recipe do not match is rebuilt by
`write_replica` and refused by `resolve`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from hsae_utils.config import cache_root
from hsae_utils.io import read_json, read_manifest, sha256_file, write_json_atomic

REPLICA_ENV = "HSAE_HUB_REPLICA"
MANIFEST = "replica-manifest.json"
REPO_TYPES = ("model", "dataset")
PREPARE_HINT = "python -m hsae_utils.pipeline.prepare --profile paper-tiny"


def replica_root() -> Path:
    return cache_root() / "hub-replica"


def replica_folder(repo_id: str, repo_type: str = "model") -> Path:
    if repo_type not in REPO_TYPES:
        raise ValueError(f"repo_type must be one of {REPO_TYPES}, got {repo_type!r}.")
    return replica_root() / f"{repo_type}s" / repo_id


def replica_enabled(profile=None) -> bool:
    """The switch: HSAE_HUB_REPLICA when set, otherwise the profile's `hub_replica`."""
    env = os.environ.get(REPLICA_ENV, "").strip().lower()
    if env in ("1", "true", "yes", "on"):
        return True
    if env in ("0", "false", "no", "off"):
        return False
    if env:
        raise ValueError(
            f"{REPLICA_ENV}={os.environ[REPLICA_ENV]!r}: use 1 (read local replicas "
            "of hub repositories) or 0 (read the hub), or unset it."
        )
    return bool(getattr(profile, "hub_replica", False))


def replica_status(folder: Path, recipe: dict | None = None) -> tuple[bool, str]:
    """(valid, why): the manifest is readable, every file it lists has its sha256, and (when
    given) the recipe matches the one the replica was built from."""
    manifest, why = read_manifest(Path(folder) / MANIFEST)
    if manifest is None:
        return False, ("missing" if why == "no manifest" else "damaged") + f" ({why})"
    if recipe is not None and manifest.get("recipe") != recipe:
        return False, "built from another recipe"
    for name, sha in manifest.get("files", {}).items():
        f = Path(folder) / name
        if not f.is_file() or sha256_file(f) != sha:
            return False, f"damaged ({name} missing or changed)"
    return True, "ok"


def write_replica(
    repo_id: str,
    repo_type: str,
    build: Callable[[Path], None],
    recipe: dict,
    force: bool = False,
    verbose: bool = True,
) -> Path:
    """Build a replica with `build(tmp_folder)` unless a valid one from `recipe` exists; the
    folder is written beside its final place, checksummed and renamed in, so an interrupted
    build leaves nothing half-written."""
    folder = replica_folder(repo_id, repo_type)
    ok, why = replica_status(folder, recipe)
    if ok and not force:
        return folder
    if verbose:
        print(
            f"[replica] building the local replica of {repo_type} {repo_id} at {folder} "
            f"({why if folder.exists() else 'first build'})"
        )
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp's 0700 would make the replica private to its builder
        build(tmp)
        files = {
            p.relative_to(tmp).as_posix(): sha256_file(p)
            for p in sorted(tmp.rglob("*"))
            if p.is_file()
        }
        write_json_atomic(
            tmp / MANIFEST,
            {"repo_id": repo_id, "repo_type": repo_type, "recipe": recipe, "files": files},
        )
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return folder


def resolve(repo_id: str, repo_type: str = "model", profile=None) -> str:
    """The id to hand to transformers / datasets: `repo_id` itself, or with the switch on the
    folder of its local replica (refused with the command that builds it when missing or
    damaged, never silently replaced by the hub)."""
    if not replica_enabled(profile):
        return repo_id
    folder = replica_folder(repo_id, repo_type)
    ok, why = replica_status(folder)
    if not ok:
        raise FileNotFoundError(
            f"The local replica of the hub {repo_type} {repo_id!r} at {folder} is {why}: build it "
            f"with `{PREPARE_HINT}`, or read the real hub with {REPLICA_ENV}=0 / a profile "
            "without hub_replica."
        )
    return str(folder)


def resolve_model(repo_id: str, profile=None) -> str:
    return resolve(repo_id, "model", profile)


def resolve_dataset(repo_id: str, profile=None) -> str:
    return resolve(repo_id, "dataset", profile)


def error_chain(err: BaseException) -> list[BaseException]:
    """`err` and the exceptions it was raised from."""
    chain, seen = [], set()
    while err is not None and id(err) not in seen:
        chain.append(err)
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return chain


def error_kind(err: BaseException) -> str:
    """What a failure to read from the hub was, from the exceptions huggingface_hub raised
    underneath transformers' / datasets' own: "gated" (401/403 without an accepted licence or
    token), "not_found", "offline" (HF_HUB_OFFLINE without a cached copy), "network", or
    "other"."""
    from huggingface_hub import errors as hf_errors

    chain = error_chain(err)
    kinds = tuple(type(e) for e in chain)

    def has(*types) -> bool:
        return any(issubclass(k, t) for k in kinds for t in types)

    text = " ".join(str(e) for e in chain)
    if has(hf_errors.GatedRepoError) or any(
        w in text.lower() for w in ("gated repo", "a gated dataset")
    ):
        return "gated"
    if has(hf_errors.RepositoryNotFoundError):
        return "not_found"
    if (
        has(hf_errors.OfflineModeIsEnabled)
        or "outgoing traffic has been disabled" in text
        or "offline mode is enabled" in text
    ):
        return "offline"
    if has(ConnectionError, TimeoutError, hf_errors.LocalEntryNotFoundError) or any(
        type(e).__name__ in ("ConnectError", "ConnectTimeout", "ReadTimeout", "ProxyError")
        for e in chain
    ):
        return "network"
    return "other"


def identity(repo_id: str, repo_type: str = "model", profile=None) -> str:
    """What cache manifests record as the source of `repo_id`: the id itself, or with the switch
    on the id and a checksum of its replica's files (a rebuilt replica is other data)."""
    folder = resolve(repo_id, repo_type, profile)
    if folder == repo_id:
        return repo_id
    from hsae_utils.io import sha256_json

    return f"{repo_id}@replica:{sha256_json(read_json(Path(folder) / MANIFEST)['files'])[:16]}"


# ---------------------------------------------------------------------------------------------
# The one error message for anything the hub could not give (no network, a gated repository
# without a token, a renamed dataset): what failed, why it needs the hub, what to do.

TOKEN_ADVICE = "for gated repositories, `huggingface-cli login` or HF_TOKEN"
OFFLINE = (
    "use the `local` profile (./run_all.sh --profile local): it runs on the embedded "
    "model and corpus, built from package data"
)


def hub_error(
    what: str, err: BaseException, why: str, token: bool = True, offline: str = OFFLINE
) -> RuntimeError:
    """A RuntimeError to raise `from err` when loading `what` from the hub failed."""
    access = "network access to the hub" + (f" (and, {TOKEN_ADVICE})" if token else "")
    return RuntimeError(
        f"Could not load {what} from the Hugging Face hub ({type(err).__name__}: "
        f"{err}). {why} That needs {access}. Without the hub, {offline}."
    )
