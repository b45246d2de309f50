"""Set-up step: `python -m hsae_utils.pipeline.prepare [--profile NAME]`.

Builds only what the profile needs, each step skipped when its output is present and valid (so
it is cheap to run before every job):
- embedded-model profiles (local, smoke, colab; the default without --profile): converts the
  embedded model once (cached, checksummed) and builds the embedded corpus from package data;
- profiles with `hub_replica` (paper-tiny): the embedded corpus, then the local replicas of the
  hub repositories the profile reads (the tiny Gemma-2 standing in for google/gemma-2-2b, and
  OpenWebText and SAEBench's probing datasets: hsae_utils.data.dataset_replicas);
- hub profiles (paper, colab-gemma): nothing; the model and datasets come from the hub (or a
  pre-downloaded hub cache with HF_HUB_OFFLINE=1) when the notebooks run.
"""

from __future__ import annotations

import argparse
import time

from hsae_utils.config import PROFILES, Profile, get_profile
from hsae_utils.data import hub


def _corpus_dir(profile: Profile):
    return profile.output_dir.parent / "corpus"


def prepare_embedded(profile: Profile) -> None:
    from transformers import AutoTokenizer

    from hsae_utils.data.corpus import build_corpus
    from hsae_utils.data.model import embedded_model_folder

    folder = embedded_model_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    manifest = build_corpus(_corpus_dir(profile), tokenizer=tokenizer)
    totals = manifest["totals"]
    print(f"[setup] model: {folder}")
    print(
        f"[setup] corpus: {_corpus_dir(profile)} ({totals['documents']:,} documents, "
        f"{totals['words']:,} words, {totals['tokens'] or 0:,} tokens)"
    )


def prepare_replicas(profile: Profile) -> None:
    from hsae_utils.data.corpus import build_corpus
    from hsae_utils.data.tiny_gemma import REPO_ID, ensure_replica

    manifest = build_corpus(_corpus_dir(profile))
    print(f"[setup] corpus: {_corpus_dir(profile)} ({manifest['totals']['documents']:,} documents)")
    if profile.model_name != REPO_ID:
        raise ValueError(
            f"Profile {profile.name!r} reads hub replicas, but there is a replica "
            f"builder only for {REPO_ID}, not {profile.model_name!r}."
        )
    print(f"[setup] model replica of {REPO_ID}: {ensure_replica(_corpus_dir(profile))}")
    from hsae_utils.data.dataset_replicas import ensure_dataset_replicas

    for repo_id, folder in ensure_dataset_replicas(_corpus_dir(profile)).items():
        print(f"[setup] dataset replica of {repo_id}: {folder}")


def prepare(profile_name: str | None = None) -> None:
    t0 = time.time()
    profile = get_profile(profile_name or "local")
    if profile.is_embedded:
        prepare_embedded(profile)
    elif hub.replica_enabled(profile):
        prepare_replicas(profile)
    else:
        print(
            f"[setup] profile {profile.name!r} reads {profile.model_name} and "
            f"{profile.dataset} from the Hugging Face hub (or its local cache with "
            "HF_HUB_OFFLINE=1): nothing to build."
        )
    print(f"[setup] ready in {time.time() - t0:.0f} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default=None,
        help="build only what this profile needs (default: the embedded model and corpus)",
    )
    prepare(parser.parse_args(argv).profile)


if __name__ == "__main__":
    main()
