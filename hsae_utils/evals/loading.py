"""Finding the SAEs to evaluate: our exports under a folder, and external SAELens SAEs."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from hsae_utils.config import Profile
from hsae_utils.evals.adapter import SAEAdapter
from hsae_utils.evals.external import (
    cfg_d_in,
    cfg_hook_name,
    check_compatible,
    load_external_adapter,
    parse_specs,
)
from hsae_utils.io import read_json
from hsae_utils.method.checkpoint import HSAE_CONFIG, SAE_LENS_CFG, load_sae, read_export_info
from hsae_utils.runs import RUNS


@dataclass
class SAERun:
    """One SAE to evaluate: an export of ours (usually under `profile.sae_dir`) or, with
    `external` set, a SAELens-format SAE (`external`)."""

    run: str  # unique name: the folder relative to sae_dir, e.g. "topk/seed42"
    config: str  # the configuration (run folder name), e.g. "topk"
    seed: int | None
    label: str
    architecture: str
    folder: Path | None  # None only for an external SAE from the hub
    metadata: dict = field(default_factory=dict)
    external: str | None = None  # a SAELens folder or "release:sae_id"; None: our export


def load_adapter(
    run: SAERun,
    device: str | torch.device = "cpu",
    profile: Profile | None = None,
    normalization: Mapping[str, Any] | None = None,
) -> SAEAdapter:
    """The SAE of `run` on raw activations. An external SAE is checked against `profile` and put
    in the normalized space `normalization` (the activation cache's), where ours live."""
    if run.external is not None:
        return load_external_adapter(run.external, device, profile, normalization)
    return SAEAdapter(load_sae(run.folder, device=device))


def export_run(folder: Path, sae_dir: Path | None = None) -> SAERun:
    """The `SAERun` of one of our exports. Under `sae_dir` (as `find_saes` walks it) the run is
    named by its path there and the configuration by its parent folder (`<run>/seed<N>`);
    elsewhere by the export's metadata (`<run>/seed<seed>`)."""
    info = read_export_info(folder)
    meta = info.get("metadata") or {}
    seed = meta.get("seed")
    if seed is None and (m := re.search(r"seed(\d+)", folder.name)):
        seed = int(m.group(1))
    if sae_dir is not None and folder.parent != sae_dir:
        config = folder.parent.name
    elif sae_dir is not None and seed is not None:
        config = folder.name
    else:
        config = meta.get("run") or folder.name
    if sae_dir is not None:
        run = folder.relative_to(sae_dir).as_posix()
    else:
        run = f"{config}/seed{seed}" if seed is not None else config
    return SAERun(
        run=run,
        config=config,
        seed=seed,
        label=meta.get("label") or config,
        architecture=info.get("architecture", ""),
        folder=folder,
        metadata=meta,
    )


def find_saes(sae_dir: str | Path) -> list[SAERun]:
    """Every complete export (a folder with hsae_config.json) under `sae_dir`, in the paper's
    run order when the names are known (`runs.RUNS`), then alphabetically."""
    sae_dir = Path(sae_dir)
    if not sae_dir.is_dir():
        return []
    order = {name: i for i, name in enumerate(RUNS)}
    runs = []
    for cfg_path in sorted(sae_dir.rglob(HSAE_CONFIG)):
        try:
            runs.append(export_run(cfg_path.parent, sae_dir))
        except (ValueError, OSError):
            continue
    base = lambda r: r.config.split("__")[0]  # noqa: E731
    runs.sort(key=lambda r: (order.get(base(r), len(order)), r.config, r.seed or 0))
    return runs


def external_runs(
    specs: str | Iterable[str] | None, profile: Profile | None = None
) -> list[SAERun]:
    """`SAERun`s for external SAEs (run and config "ext:<name>", no seed). A folder's
    config is checked against `profile` now; a hub SAE when it is loaded."""
    runs = []
    for spec in parse_specs(specs):
        architecture = "sae_lens"
        if spec.folder is not None:
            cfg = read_json(spec.folder / SAE_LENS_CFG)
            if profile is not None:
                check_compatible(cfg_d_in(cfg), cfg_hook_name(cfg), profile, spec.text)
            architecture = f"sae_lens:{cfg.get('architecture', 'standard')}"
        name = f"ext:{spec.name}"
        runs.append(
            SAERun(
                run=name,
                config=name,
                seed=None,
                label=f"{spec.name} (SAELens)",
                architecture=architecture,
                folder=spec.folder,
                metadata={"external": spec.text},
                external=spec.text,
            )
        )
    return runs
