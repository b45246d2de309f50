"""Colab support: the profiles, the token-based choice, the pins, and the injected notebook cells
(an "Open in Colab" badge and a set-up cell that does nothing outside Colab)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hsae_utils.config import REPO_ROOT, get_profile
from hsae_utils.pipeline import colab

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))


@pytest.fixture
def no_token(monkeypatch, tmp_path):
    """No token in the environment and none stored (huggingface_hub reads this path)."""
    import huggingface_hub.constants

    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(var, raising=False)
    token_file = tmp_path / "hf_token"
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(token_file))
    return token_file


def test_colab_profiles_fit_a_t4():
    small, gemma = get_profile("colab"), get_profile("colab-gemma")
    assert small.is_embedded and small.device == gemma.device == "auto"
    assert small.n_train_tokens > 10 * get_profile("local").n_train_tokens
    assert small.train_steps > get_profile("local").train_steps
    # the embedded corpus holds ~2.0M train tokens and ~105K validation tokens
    assert small.n_train_tokens < 2_000_000 and small.n_valid_tokens < 100_000
    assert (
        gemma.model_name == "google/gemma-2-2b" and gemma.hook_name == "blocks.19.hook_resid_post"
    )
    assert gemma.model_dtype == "float32"  # fp16 overflows in Gemma-2; no fast bf16 on a T4
    weights_gb = 2.61e9 * 4 / 1e9
    logits_gb = gemma.eval_batch_contexts * gemma.context_size * 256_000 * 4 / 1e9
    assert weights_gb + 4 * logits_gb < 15  # a few logit-sized copies next to the weights
    assert gemma.n_train_tokens * gemma.d_model * 4 / 1e9 < 12  # the cache on Colab's disk


def test_colab_requirements_are_the_locked_versions():
    lock = {}
    for line in (REPO_ROOT / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            lock[name.lower().replace("_", "-")] = version.strip()
    reqs = colab.requirements(REPO_ROOT)
    assert any(r.startswith("sae-lens==") for r in reqs) and any(
        r.startswith("torch==") for r in reqs
    )
    for req in reqs:
        name, version = req.split("==")
        assert lock[name.lower().replace("_", "-")] == version, req


def test_no_stale_modules_in_this_environment():
    import numpy  # noqa: F401
    import torch  # noqa: F401

    assert colab.stale_modules() == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_starts_with_badge_and_setup_cell(path):
    nb = json.loads(path.read_text())
    badge, setup = ("".join(c["source"]) for c in nb["cells"][:2])
    assert nb["cells"][0]["cell_type"] == "markdown" and "colab-badge.svg" in badge
    assert badge.rstrip(")").endswith(f"/blob/main/notebooks/{path.name}")
    assert nb["cells"][1]["cell_type"] == "code" and 'if "google.colab" in sys.modules:' in setup
    repo = badge.split("colab.research.google.com/github/")[1].split("/blob/")[0]
    assert f'"https://github.com/{repo}"' in setup  # badge and clone name the same repository
    tags = [c["metadata"].get("tags", []) for c in nb["cells"]]
    first_param = next(i for i, t in enumerate(tags) if "parameters" in t)
    assert first_param > 1  # papermill injects after the parameters cell, below the set-up


def test_setup_cell_does_nothing_outside_colab(tmp_path):
    """Run every notebook's set-up cell in a fresh interpreter: no output, no chdir, no profile."""
    cells = ["".join(json.loads(p.read_text())["cells"][1]["source"]) for p in NOTEBOOKS]
    assert len(set(cells)) == 1
    probe = (
        cells[0]
        + "\nimport os\nassert os.getcwd() == "
        + repr(str(tmp_path))
        + "\nassert 'HSAE_PROFILE' not in os.environ and 'hsae_utils' not in sys.modules\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "HSAE_PROFILE"}
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "" and out.stderr == ""


# --- the set-up's decisions, in this environment -------------------------------------------------


def test_torch_in_range_is_kept_and_unpinned_in_the_constraints(tmp_path):
    import torch

    reqs, why = colab.torch_plan(REPO_ROOT)
    assert reqs == [f"torch=={torch.__version__}"] and "keeping" in why
    lines = colab.constraints_file(REPO_ROOT, reqs, tmp_path).read_text().splitlines()
    names = {line.split("==")[0] for line in lines}
    assert "torch" not in names and "numpy" in names and "sae-lens" in names
    assert "ipykernel" not in names and "tornado" not in names  # the runtime's front end


def test_torch_out_of_range_is_replaced_with_matching_companions(monkeypatch):
    versions = {"torch": "2.4.1+cu121", "torchvision": "0.19.1+cu121", "torchaudio": None}
    monkeypatch.setattr(colab, "_version", versions.get)
    reqs, why = colab.torch_plan(REPO_ROOT)
    assert reqs == [f"torch=={colab.locked(REPO_ROOT)['torch']}", "torchvision"]  # pip matches it
    assert "2.4.1" in why and "torchvision" in why


def _hf_error(cls):
    import httpx2

    return cls("refused", response=httpx2.Response(403, request=httpx2.Request("GET", "http://x")))


@pytest.mark.parametrize(
    "outcome, expected",
    [
        (None, (True, "can read")),
        ("GatedRepoError", (False, "licence")),
        ("RepositoryNotFoundError", (False, "invalid or expired")),
    ],
)
def test_gemma_profile_only_when_the_token_can_read_the_model(
    no_token, monkeypatch, outcome, expected
):
    import huggingface_hub
    from huggingface_hub import errors

    calls = []

    def auth_check(repo_id, token=None, **_):
        calls.append((repo_id, token))
        if outcome:
            raise _hf_error(getattr(errors, outcome))

    monkeypatch.setattr(huggingface_hub, "auth_check", auth_check)
    monkeypatch.delenv("HSAE_PROFILE", raising=False)
    ok, why = colab.gemma_access()
    assert not ok and "no Hugging Face token" in why and calls == []
    assert colab.choose_profile() == "colab"
    monkeypatch.setenv("HF_TOKEN", "hf_example")
    ok, why = colab.gemma_access()
    assert (ok, expected[1] in why) == (expected[0], True)
    assert calls[-1] == ("google/gemma-2-2b", "hf_example")
    assert colab.choose_profile() == ("colab-gemma" if ok else "colab")


def test_drive_opt_out_and_a_declined_mount(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HSAE_COLAB_CONTENT", str(tmp_path))
    monkeypatch.delenv("HSAE_OUTPUT_ROOT", raising=False)
    monkeypatch.setenv("HSAE_NO_DRIVE", "1")
    assert colab.use_drive() is None and "HSAE_OUTPUT_ROOT" not in os.environ
    monkeypatch.setenv("HSAE_NO_DRIVE", "0")
    monkeypatch.setitem(sys.modules, "google.colab", None)  # importing it fails: not mounted
    assert colab.use_drive() is None and "not mounted" in capsys.readouterr().out
    assert "HSAE_OUTPUT_ROOT" not in os.environ


# --- the set-up cell as Colab runs it: a fresh runtime, a simulated google.colab and Drive ---------

FAKE_DRIVE = '''
from pathlib import Path


def mount(mountpoint, force_remount=False, **_):
    """As Colab's after the user's consent: Drive's files appear under <mountpoint>/MyDrive."""
    (Path(mountpoint) / "MyDrive").mkdir(parents=True, exist_ok=True)
    print(f"Mounted at {mountpoint}")
'''


# Part of what a Colab image comes with (at our locked versions here, to keep the test short);
# set_up() installs the rest: transformer-lens, sae-lens, gguf, the GGUF package, papermill, ...
COLAB_IMAGE = [
    "torch",
    "ipykernel",
    "numpy",
    "pandas",
    "scipy",
    "scikit-learn",
    "matplotlib",
    "transformers",
    "datasets",
    "tqdm",
    "safetensors",
    "accelerate",
]


def _seed_runtime(venv: Path, roots: list[str]) -> None:
    """Put the distributions `roots` and everything they require from this environment into the
    fresh `venv`, as the packages a Colab image comes with (cheaper than installing them). Hard
    links where the file system allows (pip and Python replace files, never write into them, so
    this environment is never changed through them), copies elsewhere."""
    import re
    import shutil
    from importlib import metadata

    from packaging.requirements import Requirement

    site = next((venv / "lib").glob("python3*/site-packages"))
    todo, seen = list(roots), set()
    while todo:
        name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if name in seen:
            continue
        seen.add(name)
        dist = metadata.distribution(name)
        for f in dist.files or []:
            if ".." in f.parts or "__pycache__" in f.parts:
                continue  # scripts in bin/, byte code: not needed
            dst = site / f
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(dist.locate_file(f), dst)
            except OSError:
                shutil.copy2(dist.locate_file(f), dst)
        for req in map(Requirement, dist.requires or []):
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)


def _repo_copy(dst: Path) -> None:
    """The repository as `git clone` would give it (tracked and new files, not ignored ones)."""
    import shutil

    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, files):
        if (REPO_ROOT / name).is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, dst / name)


@pytest.fixture
def own_tmp():
    """A temporary folder outside pytest's, which other pytest sessions on this machine prune
    (pytest keeps only its three newest) while this long test still runs."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="hsae-colab-") as tmp:
        yield Path(tmp)


def _tiny_notebook(path: Path) -> None:
    """A notebook that records, in <output root>/ran.txt, that it ran, with its profile and
    whether it was started by run_pipeline (whose kernels skip the set-up)."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    }
    params = nbformat.v4.new_code_cell('profile = "local"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [
        params,
        nbformat.v4.new_code_cell(
            "import os, pathlib\n"
            "with open(pathlib.Path(os.environ['HSAE_OUTPUT_ROOT']) / 'ran.txt', 'a') as f:\n"
            f"    f.write(' '.join([{path.stem!r}, profile, os.environ['{colab.PIPELINE_ENV}']]) + '\\n')"
        ),
    ]
    nbformat.write(nb, path)


def test_run_pipeline_runs_every_notebook_in_order_on_the_output_root_and_skips_finished_ones(
    monkeypatch, tmp_path
):
    """run_pipeline's wiring, with real papermill kernels: which notebooks (all of the folder, in
    order), which output root (the one set_up chose: Drive on Colab), a second call skipping the
    finished ones, `only` re-running one, and a failing notebook named."""
    nbs, drive = tmp_path / "notebooks", tmp_path / "MyDrive" / "outputs"
    nbs.mkdir()
    for name in ("02_b", "01_a", "10_c"):
        _tiny_notebook(nbs / f"{name}.ipynb")
    monkeypatch.setenv("HSAE_NOTEBOOK_DIR", str(nbs))
    monkeypatch.setenv("HSAE_OUTPUT_ROOT", str(drive))
    monkeypatch.setenv("HSAE_PROFILE", "smoke")
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))  # run_pipeline extends both
    monkeypatch.setattr(sys, "path", list(sys.path))
    ran = drive / "ran.txt"

    done = colab.run_pipeline(REPO_ROOT)
    out = drive / "smoke" / "notebooks"
    assert done == [out / f"{n}.ipynb" for n in ("01_a", "02_b", "10_c")]
    assert all(p.is_file() for p in done) and colab.PIPELINE_ENV not in os.environ
    assert ran.read_text().splitlines() == ["01_a smoke 1", "02_b smoke 1", "10_c smoke 1"]

    colab.run_pipeline(REPO_ROOT)  # all finished: nothing runs again
    assert len(ran.read_text().splitlines()) == 3
    colab.run_pipeline(REPO_ROOT, only=("02",))
    assert ran.read_text().splitlines()[3:] == ["02_b smoke 1"]

    (nbs / "02_b.ipynb").write_text(
        (nbs / "02_b.ipynb").read_text().replace("import os, pathlib", "raise ValueError('boom')")
    )  # new code: not skipped, and fails
    with pytest.raises(RuntimeError, match="exit status 1"):
        colab.run_pipeline(REPO_ROOT)
    assert "boom" in (out / "02_b.ipynb").read_text()
    assert colab.PIPELINE_ENV not in os.environ


# --- the set-up cell as Colab runs it: a fresh runtime, a simulated google.colab and Drive ---------

# HSAE_TEST_COLAB_RUNTIME=1 (set by ./run_tests.sh): notebook 01 under the set-up cell's run-all
# option; =all: every notebook; unset or 0 (a plain pytest): skipped
COLAB_RUNTIME = os.environ.get("HSAE_TEST_COLAB_RUNTIME", "")


@pytest.mark.skipif(
    COLAB_RUNTIME not in ("1", "all"),
    reason="builds a fresh environment (about 5 minutes on 2 cores): "
    "./run_tests.sh sets HSAE_TEST_COLAB_RUNTIME=1 (notebook 01); "
    "=all runs 01 to the last",
)
def test_colab_set_up_cell_in_a_fresh_runtime_runs_the_pipeline(own_tmp):
    """The first cell of notebook 01, run as Colab runs it: `google.colab` imported, a fresh Python
    whose only packages are Colab-like preinstalls (COLAB_IMAGE), Drive mounted by the fake
    `drive.mount`. `set_up()` installs our pins into it; then the same cell with HSAE_RUN_ALL=1
    runs the pipeline (notebook 01, or with =all every notebook) on `smoke` with papermill in that
    runtime, outputs on Drive; a third run skips what finished and nothing is installed again."""
    import shutil
    import time

    from hsae_utils.data.model import cache_root

    tmp_path = own_tmp
    t0 = time.time()
    content, fake = tmp_path / "content", tmp_path / "fake"
    repo = content / "hierarchical-sae"
    _repo_copy(repo)
    (fake / "google" / "colab").mkdir(parents=True)  # `google` stays a namespace package
    (fake / "google" / "colab" / "__init__.py").write_text("")
    (fake / "google" / "colab" / "drive.py").write_text(FAKE_DRIVE)
    python = tmp_path / "runtime" / "bin" / "python"
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "runtime")], check=True)
    _seed_runtime(tmp_path / "runtime", COLAB_IMAGE)
    t_seed = time.time() - t0

    # What an earlier runtime left on Drive: the converted model and the built corpus (building
    # them is tested by scripts/setup.sh; here it would only repeat minutes of downloads).
    drive = content / "drive" / "MyDrive" / "hierarchical-sae"
    (drive / "cache").mkdir(parents=True)
    (drive / "outputs").mkdir()
    (drive / "cache" / "models").symlink_to(cache_root() / "models")
    (drive / "outputs" / "corpus").symlink_to(get_profile("local").output_dir.parent / "corpus")
    # ... and Drive's pip-cache/, which set_up() gives pip: the wheels pip built from source
    # distributions for an earlier runtime (kept between runs of this test in the cache folder).
    (cache_root() / "colab-test-pip-cache").mkdir(parents=True, exist_ok=True)
    (drive / "pip-cache").symlink_to(cache_root() / "colab-test-pip-cache")

    cell = "".join(json.loads(NOTEBOOKS[0].read_text())["cells"][1]["source"])
    assert '"/content/' in cell
    driver = "import google.colab\n" + cell.replace('"/content/', f'"{content}/')  # as Colab has
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HSAE_", "HF_", "PYTHON", "VIRTUAL_ENV"))
    }
    env.update(PYTHONPATH=str(fake), HSAE_COLAB_CONTENT=str(content), HSAE_PROFILE="smoke")
    if COLAB_RUNTIME == "all":
        notebooks = sorted((repo / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    else:  # the repository's notebook 01 alone in a folder (HSAE_NOTEBOOK_DIR)
        (tmp_path / "nbs").mkdir()
        notebooks = [Path(shutil.copy2(repo / "notebooks" / NOTEBOOKS[0].name, tmp_path / "nbs"))]
        env["HSAE_NOTEBOOK_DIR"] = str(tmp_path / "nbs")

    def run(**extra):
        t = time.time()
        out = subprocess.run(
            [str(python), "-c", driver],
            cwd=content,
            env={**env, **extra},
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-5000:]
        return out, time.time() - t

    first, t_setup = run()
    second, t_run = run(HSAE_RUN_ALL="1")
    third, t_again = run(HSAE_RUN_ALL="1")
    print(
        f"fresh runtime: venv and Colab-like preinstalls {t_seed:.0f} s, set-up {t_setup:.0f} s, "
        f"set-up + {len(notebooks)} notebook(s) on smoke {t_run:.0f} s, again (all skipped) "
        f"{t_again:.0f} s",
        file=sys.stderr,
    )
    assert "keeping the runtime's torch" in first.stdout
    assert "installing the pinned packages" in first.stdout
    for out in (second, third):  # later set-ups in this runtime install nothing
        assert "installing" not in out.stdout and "set-up done: profile 'smoke'" in out.stdout

    # every notebook ran once, in order, into the Drive folder, and was skipped the second time
    runs = [line.split()[1] for line in second.stdout.splitlines() if line.startswith("=== ")]
    assert runs == [nb.name for nb in notebooks], second.stdout[-3000:]
    skipped = [
        line.split()[1].rstrip(":")
        for line in third.stdout.splitlines()
        if "done before, skipped" in line
    ]
    assert skipped == runs, third.stdout[-3000:]
    executed = drive / "outputs" / "smoke" / "notebooks"
    for nb in notebooks:
        cells = json.loads((executed / nb.name).read_text())["cells"]
        assert all(c.get("outputs") is not None for c in cells if c["cell_type"] == "code")
        assert (executed / ".done" / nb.name).is_file()

    # what the notebooks built is on Drive and complete, as the next runtime will check
    out = subprocess.run(
        [
            str(python),
            "-c",
            "import sys; from hsae_utils.config import get_profile; "
            "from hsae_utils.pipeline.outputs import output_problems; "
            "p = [m for nb in sys.argv[1:] for m in output_problems(get_profile('smoke'), nb)]; "
            "print(p); sys.exit(len(p))",
            *(nb.name for nb in notebooks),
        ],
        cwd=repo,
        env={**env, "HSAE_OUTPUT_ROOT": str(drive / "outputs")},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr

    # the installed versions are the locked ones, and pip finds nothing broken except the
    # dependencies that scripts/setup.sh and set_up() leave out on purpose (--no-deps)
    frozen = subprocess.run(
        [str(python), "-m", "pip", "freeze"], capture_output=True, text=True, check=True
    ).stdout
    lock = colab.locked(REPO_ROOT)
    for line in frozen.splitlines():
        if "==" in line:
            name, version = line.split("==")
            version = version.split("+")[0]  # torch 2.13.0+cpu is the locked 2.13.0
            assert lock.get(colab._norm(name), version) == version, line
    check = subprocess.run([str(python), "-m", "pip", "check"], capture_output=True, text=True)
    no_deps = f"{colab.GGUF_REQUIREMENT.replace('==', ' ')} requires "
    broken = [line for line in check.stdout.splitlines() if not line.startswith(no_deps)]
    assert broken == [], check.stdout
    t = time.time()
    shutil.rmtree(tmp_path / "runtime")
    print(f"removing the runtime: {time.time() - t:.0f} s", file=sys.stderr)


def test_a_gpu_profile_on_a_cpu_runtime_is_refused_with_the_fix():
    from hsae_utils.pipeline.colab import require_gpu

    no_gpu = "No GPU in this runtime (Runtime > Change runtime type > T4 GPU)."
    for name in ("colab-gemma", "colab"):
        with pytest.raises(SystemExit, match=r"sized for a GPU \(NVIDIA T4.*Change runtime type"):
            require_gpu(get_profile(name), False, no_gpu)
        require_gpu(get_profile(name), True, "")  # a GPU: nothing to say
    require_gpu(get_profile("smoke"), False, no_gpu)  # the CPU profile the message suggests
