"""The library's two high-level calls: train one SAE on a profile, evaluate some SAEs.

    import hsae_utils as hs
    P = hs.get_profile("smoke")
    hs.cache_activations(P)                                # the model's activations, once
    result = hs.train_sae(P, "topk", seed=42)              # -> TrainResult (.sae, .folder, .log)
    report = hs.evaluate_saes(P, [result])                 # -> EvaluationResult
    report.summary()

The paper's named runs (baselines and ablation stages, every seed) are `hs.train_run`, as in the
notebooks. (`train_sae` / `evaluate_saes` are not called `train` / `evaluate`, to keep them apart
from the modules `hsae_utils.method.train` and `hsae_utils.evals` that implement them.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from hsae_utils.config import Profile, get_profile
from hsae_utils.data.activations import ActivationStore
from hsae_utils.evals import evaluate_profile
from hsae_utils.evals.loading import SAERun, export_run, external_runs
from hsae_utils.method.checkpoint import HSAE_CONFIG
from hsae_utils.method.saes import ARCHITECTURES, config_from_profile, stage_switches
from hsae_utils.method.train import TrainConfig, train

SAE_SPEC = Any  # a folder (str / Path), a TrainResult, or an external "release:id"


def _profile(profile: Profile | str) -> Profile:
    return get_profile(profile) if isinstance(profile, str) else profile


def default_out_dir(profile: Profile, arch: str, seed: int) -> Path:
    """`<output_dir>/library/<arch>_seed<seed>`: apart from the paper's runs under `sae_dir`,
    which the evaluation notebook collects."""
    return profile.output_dir / "library" / f"{arch}_seed{seed}"


def train_sae(
    profile: Profile | str,
    arch: str = "hierarchical",
    *,
    seed: int = 42,
    stage: int | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    **config: Any,
):
    """Train one SAE on the profile's activation cache (`cache_activations` builds it).

    arch: "relu", "topk", "batchtopk" or "hierarchical" (`hsae_utils.method.saes.ARCHITECTURES`).
    stage: for "hierarchical", the ablation stage 1-5 (the mechanisms switched on); None = all.
    config: fields of the architecture's config, e.g. `l1_coefficient=0.04` or `k=40`.
    The budget (steps, batch size, device) is the profile's. The SAE is saved to `out_dir`
    (default `default_out_dir`); calling again resumes or reuses that run. Returns a
    `hsae_utils.method.train.TrainResult`.
    """
    profile = _profile(profile)
    if stage is not None:
        config = {**stage_switches(stage), **config}
    sae = ARCHITECTURES[arch](config_from_profile(arch, profile, **config), seed=seed)
    store = ActivationStore(profile.cache_dir / "train", cache_dtype=profile.cache_dtype)
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(profile, arch, seed)
    metadata = {
        "profile": profile.name,
        "run": arch,
        "label": arch,
        "seed": seed,
        "overrides": config,
    }
    return train(
        sae,
        store,
        TrainConfig.from_profile(profile, seed),
        out_dir,
        progress=progress,
        metadata=metadata,
    )


def _folder_of(item: SAE_SPEC) -> Path | None:
    if getattr(item, "folder", None) is not None:  # a TrainResult or an evals.SAERun
        return Path(item.folder)
    if isinstance(item, (str, Path)) and Path(item).expanduser().is_dir():
        return Path(item).expanduser()
    return None


def runs_for(saes: Iterable[SAE_SPEC], profile: Profile | None = None) -> list:
    """`evals.SAERun`s for a mix of our exports and external SAELens SAEs (see
    `hsae_utils.evals.external`); names are made unique."""
    runs: list[SAERun] = []
    for item in saes:
        folder = _folder_of(item)
        if folder is None or not (folder / HSAE_CONFIG).is_file():
            runs += external_runs([str(folder or item)], profile)
        else:
            runs.append(export_run(folder.resolve()))
    seen: dict[str, int] = {}
    for r in runs:
        seen[r.run] = seen.get(r.run, 0) + 1
        if seen[r.run] > 1:
            r.run = f"{r.run}#{seen[r.run]}"
    return runs


def evaluate_saes(
    profile: Profile | str,
    saes: Iterable[SAE_SPEC] | None = None,
    families: Iterable[str] = ("core", "absorption", "probing"),
    progress: bool = True,
    model=None,
):
    """Evaluate SAEs on the profile's validation data, absorption and probing tasks.

    saes: our export folders, `TrainResult`s, SAELens folders or
    "release:sae_id" specs; None = every SAE under `profile.sae_dir` (as notebook 08).
    families: any of "core" (reconstruction, KL / CE with the SAE spliced in), "absorption",
    "probing". Returns an `hsae_utils.evals.EvaluationResult` (`.results`: the tidy table
    run, config, seed, metric, value; `.summary()`: one row per configuration).
    """
    profile = _profile(profile)
    runs = None if saes is None else runs_for(saes, profile)
    return evaluate_profile(profile, runs, model=model, families=families, progress=progress)
