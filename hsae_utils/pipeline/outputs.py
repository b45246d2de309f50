"""What each notebook leaves on disk, so `run_all.sh` skips a notebook only when its outputs are
still complete and valid (not merely because the notebook once finished).

    python -m hsae_utils.pipeline.outputs stamp PROFILE           print the profile's hash (fails
                                                                  fast, with the valid names, on
                                                                  an unknown profile)
    python -m hsae_utils.pipeline.outputs check PROFILE NOTEBOOK  exit 0 if the notebook's outputs
                                                                  are complete and valid, else 1
                                                                  and say why

The runs a training notebook produces come from the run registry (`runs.NOTEBOOK_RUNS`). A notebook
this module does not know (a new one) has no outputs to check: its finish marker decides alone.
"""

from __future__ import annotations

import sys

from hsae_utils.config import Profile, get_profile
from hsae_utils.io import sha256_json
from hsae_utils.runs import notebook_runs, run_dir


def output_problems(profile: Profile, notebook: str) -> list[str]:
    """What is missing or damaged among the outputs of `notebook` (e.g. "02_baselines.ipynb")."""
    stem = notebook.removesuffix(".ipynb")
    if stem == "01_activation_caching":
        return _cache_problems(profile)
    if stem == "11_readings":
        from hsae_utils.experiment.sensitivity import (
            output_problems as readings_problems,
        )  # pandas: only for 11

        return readings_problems(profile)
    if stem == "12_features":
        from hsae_utils.features.inspect import (
            output_problems as features_problems,
        )  # torch: only for 12

        return features_problems(profile)
    if stem == "08_evaluation":
        table = profile.results_dir / "evaluation.csv"
        return [] if table.is_file() else [f"{table} is missing"]
    problems = []
    for name, seeds in notebook_runs(profile, notebook):
        for folder in (run_dir(profile, name, seed) for seed in seeds):
            if not _is_finished(folder, profile.train_steps):
                problems.append(f"{folder} is not a finished run")
            else:  # the whole folder, ours and the SAELens files; damaged SAELens files are rebuilt
                problems += _repair_export(folder)
    return problems


def _cache_problems(profile: Profile) -> list[str]:
    from hsae_utils.data.activations import (
        ActivationStore,
        CacheError,
    )  # torch: only for notebook 01's check

    problems = []
    for split in ("train", "validation"):
        try:  # checks completeness and every shard's size and shape (not the checksums)
            ActivationStore(profile.cache_dir / split, cache_dtype=profile.cache_dtype)
        except CacheError as err:
            problems.append(str(err))
    return problems


def _is_finished(folder, steps: int) -> bool:
    from hsae_utils.experiment.paper_runs import (
        is_finished,
    )  # torch: only for the training notebooks' check

    return is_finished(folder, steps)


def _repair_export(folder) -> list[str]:
    from hsae_utils.method.checkpoint import (
        repair_export,
    )  # torch: only for the training notebooks' check

    return repair_export(folder)


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
    problems = output_problems(profile, rest[0])
    for problem in problems:
        print(f"    outputs of {rest[0]} incomplete: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
