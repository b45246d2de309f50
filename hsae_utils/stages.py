"""What each notebook leaves on disk, so `run_all.sh` skips a stage only when its outputs are
still complete and valid (not merely because the notebook once finished).

    python -m hsae_utils.stages stamp PROFILE           print the profile's hash (fails fast, with
                                                        the valid names, on an unknown profile)
    python -m hsae_utils.stages check PROFILE NOTEBOOK  exit 0 if the notebook's outputs are
                                                        complete and valid, else 1 and say why

A notebook this module does not know (a new one) has no outputs to check: its finish marker
decides alone.
"""
from __future__ import annotations

import re
import sys

from .config import Profile, get_profile
from .io import sha256_json

TRAINING_NOTEBOOK = re.compile(r"\d\d_(baselines|stage\d_\w+)")


def stage_problems(profile: Profile, notebook: str) -> list[str]:
    """What is missing or damaged among the outputs of `notebook` (e.g. "02_baselines.ipynb")."""
    stem = notebook.removesuffix(".ipynb")
    if stem == "01_activation_caching":
        return _cache_problems(profile)
    if stem == "08_evaluation":
        table = profile.results_dir / "evaluation.csv"
        return [] if table.is_file() else [f"{table} is missing"]
    if not TRAINING_NOTEBOOK.fullmatch(stem):  # checked first: the run registry imports torch
        return []
    from .experiments import BASELINES, RUNS, sweep_runs

    if stem == "02_baselines":  # the headline baselines (every seed) and the sparsity sweep
        return (_run_problems(profile, [spec.name for spec in BASELINES], profile.seeds)
                + _run_problems(profile, [spec.name for spec in sweep_runs(profile)],
                                profile.sweep_seeds))
    # "04_stage2_resampling" trains run "stage2_resampling"
    return _run_problems(profile, [stem[3:]] if stem[3:] in RUNS else [], profile.seeds)


def _cache_problems(profile: Profile) -> list[str]:
    from .activations import ActivationStore, CacheError

    problems = []
    for split in ("train", "validation"):
        try:  # checks completeness and every shard's size and shape (not the checksums)
            ActivationStore(profile.cache_dir / split)
        except CacheError as err:
            problems.append(str(err))
    return problems


def _run_problems(profile: Profile, names: list[str], seeds: tuple[int, ...]) -> list[str]:
    from .checkpoint import repair_export
    from .experiments import is_finished, run_dir

    problems = []
    for folder in (run_dir(profile, name, seed) for name in names for seed in seeds):
        if not is_finished(folder, profile.train_steps):
            problems.append(f"{folder} is not a finished run")
        else:  # the whole folder, ours and the SAELens files; damaged SAELens files are rebuilt
            problems += repair_export(folder)
    return problems


def main(argv: list[str]) -> int:
    command, name, *rest = argv
    try:
        profile = get_profile(name)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if command == "stamp":
        print(sha256_json(profile.to_dict()))
        return 0
    problems = stage_problems(profile, rest[0])
    for problem in problems:
        print(f"    outputs of {rest[0]} incomplete: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
