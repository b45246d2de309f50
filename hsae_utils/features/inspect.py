"""`inspect_sae`: an SAE's feature statistics, stored next to it and validated, and its browser page.

Statistics live in `<SAE folder>/features/` for our exports (for an external SAE, under
`outputs/<profile>/features/stats/<name>/`): `data.json` (the browser's data dict) and
`manifest.json`, written last, holding what they were computed from (the SAE's weights checksum,
the validation tokens and cache shards, the parameters) and `data.json`'s sha256. They are reused
only when all of it matches; a damaged or stale file is recomputed, never served.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from hsae_utils.config import Profile, get_profile
from hsae_utils.evals.cache import tensor_sha
from hsae_utils.evals.loading import SAERun, export_run, external_runs, load_adapter
from hsae_utils.features.browser import write_browser
from hsae_utils.features.rows import ValidationRows
from hsae_utils.features.stats import StatsParams, feature_data
from hsae_utils.io import read_json, sha256_file, sha256_json, write_json_atomic
from hsae_utils.method.checkpoint import HSAE_CONFIG

STATS_FORMAT = 1
# The seed-42 runs notebook 12 shows side by side (run registry names).
FEATURE_RUNS = ("topk", "batchtopk", "relu_l1", "stage5_clustering")


def resolve_sae(sae: Any, profile: Profile) -> SAERun:
    """An `SAERun` from: an `SAERun`; a run under `profile.sae_dir` ("topk/seed42"); a folder of
    ours; a SAELens folder; or "release:sae_id"."""
    if isinstance(sae, SAERun):
        return sae
    text = str(sae)
    for folder in (profile.sae_dir / text, Path(text).expanduser()):
        if (folder / HSAE_CONFIG).is_file():
            return export_run(
                folder.resolve(),
                profile.sae_dir.resolve()
                if folder.resolve().is_relative_to(profile.sae_dir.resolve())
                else None,
            )
    return external_runs([text], profile)[0]  # raises, naming the accepted forms


def safe_name(run: SAERun) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", run.run).strip("_")


def stats_folder(run: SAERun, profile: Profile) -> Path:
    if run.external is None and run.folder is not None:
        return run.folder / "features"
    return profile.output_dir / "features" / "stats" / safe_name(run)


def sae_sha256(adapter) -> str:
    """Checksum of the SAE's tensors and its normalization (what its latents depend on)."""
    state = adapter.sae.state_dict()
    return sha256_json(
        {
            "tensors": tensor_sha(*(state[k] for k in sorted(state))),
            "scale": adapter.scale,
            "center": adapter.center,
        }
    )


def _read_valid(folder: Path, identity: dict) -> dict | None:
    manifest_path, data_path = folder / "manifest.json", folder / "data.json"
    try:
        manifest = read_json(manifest_path)
    except (OSError, ValueError):
        return None
    if manifest.get("identity") != identity:
        print(
            f"Feature statistics in {folder} were computed for another SAE, data or "
            "parameters: recomputing."
        )
        return None
    if not data_path.is_file() or sha256_file(data_path) != manifest.get("data_sha256"):
        print(f"{data_path} is missing or fails its checksum (damaged): recomputing.")
        return None
    return read_json(data_path)


def stats_problems(folder: Path) -> list[str]:
    """What is missing or damaged in a stats folder (its checksum; not what it was computed
    from, which needs the SAE and the data: `sae_stats` checks that)."""
    try:
        manifest = read_json(folder / "manifest.json")
    except (OSError, ValueError):
        return [f"{folder / 'manifest.json'} is missing or unreadable"]
    data = folder / "data.json"
    if not data.is_file() or sha256_file(data) != manifest.get("data_sha256"):
        return [f"{data} is missing or fails its checksum"]
    return []


def output_problems(profile: Profile, seed: int = 42) -> list[str]:
    """Notebook 12's outputs: the statistics of each `FEATURE_RUNS` SAE and its browser page."""
    from hsae_utils.runs import run_dir

    problems = []
    for name in FEATURE_RUNS:
        folder = run_dir(profile, name, seed)
        problems += stats_problems(folder / "features")
        if (folder / HSAE_CONFIG).is_file():
            page = browser_path(export_run(folder, profile.sae_dir), profile)
            if not page.is_file():
                problems.append(f"{page} is missing")
    return problems


def token_strings(tokenizer):
    """A memoized id -> text of one token (decoded alone, as dashboards show tokens)."""
    memo: dict[int, str] = {}

    def token_str(t: int) -> str:
        if t not in memo:
            memo[t] = tokenizer.decode([t])
        return memo[t]

    return token_str


def sae_stats(
    sae: Any,
    profile: Profile,
    model=None,
    rows: ValidationRows | None = None,
    params: StatsParams = StatsParams(),  # noqa: B008 (frozen: an immutable default)
    progress: bool = True,
    device: str = "cpu",
) -> dict:
    """The browser data dict of `sae` (any form `resolve_sae` takes) on the profile's validation
    tokens: read from its stats folder when valid, else computed and stored (atomically)."""
    from hsae_utils.data.model import load_model
    from hsae_utils.evals.run import eval_cache_root

    run = resolve_sae(sae, profile)
    model = model if model is not None else load_model(profile, device=device)
    rows = rows if rows is not None else ValidationRows(profile, model, eval_cache_root(profile))
    adapter = load_adapter(run, device, profile, rows.normalization)
    identity = json.loads(
        json.dumps(
            {
                "format": STATS_FORMAT,
                "sae_sha256": sae_sha256(adapter),
                **rows.identity,
                "params": params.to_dict(),
            }
        )
    )
    folder = stats_folder(run, profile)
    data = _read_valid(folder, identity)
    if data is not None:
        return data
    info = {
        "name": run.run,
        "arch": run.architecture,
        "label": run.label,
        "model": profile.model_name,
        "hook": profile.hook_name,
    }
    with torch.no_grad():
        data = feature_data(
            adapter,
            rows.x_ND,
            rows.positions_R2,
            rows.tokens_SC,
            token_strings(model.tokenizer),
            info,
            model,
            params,
            progress,
        )
    write_json_atomic(folder / "data.json", data)
    write_json_atomic(
        folder / "manifest.json",
        {"identity": identity, "data_sha256": sha256_file(folder / "data.json")},
    )
    return data


def browser_path(run: SAERun, profile: Profile, out_dir: str | Path | None = None) -> Path:
    return Path(out_dir or profile.output_dir / "features") / f"{safe_name(run)}.html"


def inspect_sae(
    sae: Any,
    profile: Profile | str = "local",
    out_dir: str | Path | None = None,
    model=None,
    rows: ValidationRows | None = None,
    progress: bool = True,
) -> Path:
    """Statistics of `sae` (see `sae_stats`) and its feature browser, written to
    `outputs/<profile>/features/<name>.html` (or `out_dir`); returns the page's path."""
    profile = get_profile(profile) if isinstance(profile, str) else profile
    run = resolve_sae(sae, profile)
    data = sae_stats(run, profile, model=model, rows=rows, progress=progress)
    return Path(write_browser(data, browser_path(run, profile, out_dir)))
