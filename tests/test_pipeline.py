"""run_all.sh and its loop, hsae_utils.pipeline.cli (issue 17, cases 1-3 and 5): options checked
before any work, --force passing only declared parameters, one run per output folder.

Everything runs the real script in real subprocesses; the lock's holder is a real process that
is SIGKILLed, so a stale lock would show.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from hsae_utils.config import REPO_ROOT
from hsae_utils.pipeline.cli import notebook_sha256

RUN_ALL = str(REPO_ROOT / "run_all.sh")


def _notebook(path: Path, params: str = 'profile = "smoke"', code: str = "") -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    }
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [
        cell,
        nbformat.v4.new_code_cell(
            "import os, pathlib\n"
            "with open(pathlib.Path(os.environ['HSAE_OUTPUT_ROOT']) / 'ran.txt', 'a') as f:\n"
            f"    f.write({path.stem!r} + '\\n')\n" + code
        ),
    ]
    nbformat.write(nb, path)


def _env(nbs: Path, out: Path | str) -> dict:
    return {**os.environ, "HSAE_NOTEBOOK_DIR": str(nbs), "HSAE_OUTPUT_ROOT": str(out)}


def run_all(nbs: Path, out: Path | str, *args: str, profile: str = "smoke"):
    return subprocess.run(
        [RUN_ALL, "--no-setup", "--profile", profile, *args],
        env=_env(nbs, out),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def nbs(tmp_path):
    folder = tmp_path / "nbs"
    folder.mkdir()
    _notebook(folder / "01_first.ipynb")
    return folder


# ----------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    "args, message",
    [
        (("--profile",), "argument --profile: expected one argument"),
        (("--only",), "argument --only: expected one argument"),
        (("--profile", "locl"), "Unknown profile 'locl'. Valid profiles: .*local"),
        (("--only", "99"), "--only 99 matches no notebook; the notebooks are: 01_first.ipynb"),
        (("--only", "01,7"), "--only 7 matches no notebook"),
        (("--bogus",), "unrecognized arguments: --bogus"),
    ],
)
def test_bad_options_fail_before_any_work(nbs, tmp_path, args, message):
    out = tmp_path / "out"
    proc = subprocess.run(
        [RUN_ALL, "--no-setup", *args],
        env=_env(nbs, out),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert re.search(message, proc.stderr), proc.stderr
    assert not out.exists()  # nothing created, nothing ran


def test_an_output_root_that_cannot_be_created_or_written(nbs, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    roots = [blocker / "x"] + ([Path("/sys/x")] if Path("/sys").is_dir() else [])
    if os.geteuid() != 0:  # root writes anywhere
        roots.append(readonly)
    for root in roots:
        proc = run_all(nbs, root)
        assert proc.returncode == 2, proc.stderr
        assert f"output root {root} cannot be created or written" in proc.stderr
        assert "set HSAE_OUTPUT_ROOT to a writable folder" in proc.stderr


def test_plan_prints_and_creates_nothing(nbs, tmp_path):
    proc = run_all(nbs, tmp_path / "out", "--plan")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()  # the plan, or a note that there is no resource module yet
    assert not (tmp_path / "out").exists()


def test_force_passes_only_the_parameters_a_notebook_declares(nbs, tmp_path):
    _notebook(nbs / "02_train.ipynb", 'profile = "smoke"\nforce_retrain = False')
    out = tmp_path / "out"
    proc = run_all(nbs, out, "--force")
    assert proc.returncode == 0, proc.stderr
    assert "Passed unknown parameter" not in proc.stderr  # papermill's warning
    injected = {}
    for name in ("01_first.ipynb", "02_train.ipynb"):
        nb = nbformat.read(out / "smoke" / "notebooks" / name, as_version=4)
        injected[name] = next(
            c.source for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])
        )
    assert "force_retrain = True" in injected["02_train.ipynb"]
    assert "force_retrain" not in injected["01_first.ipynb"]
    assert all("force = " not in s and "rebuild_cache" not in s for s in injected.values())


def test_notebook_hash_ignores_outputs(tmp_path):
    path = tmp_path / "01_x.ipynb"
    _notebook(path)
    before = notebook_sha256(path)
    nb = nbformat.read(path, as_version=4)
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="hello")]
    nb.cells[1].execution_count = 3
    nbformat.write(nb, path)
    assert notebook_sha256(path) == before
    nb.cells[1].source += "\nx = 1"
    nbformat.write(nb, path)
    assert notebook_sha256(path) != before


# ----------------------------------------------------------------------------- one run per folder


def _hold_lock(folder: Path) -> subprocess.Popen:
    """A real process holding `folder`'s run lock until killed."""
    code = (
        "import sys, time\nfrom hsae_utils.pipeline.lock import run_lock\n"
        "with run_lock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(600)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(folder)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_run_of_the_same_folder_is_refused_or_waits(nbs, tmp_path):
    out = tmp_path / "out"
    holder = _hold_lock(out / "smoke")
    try:
        refused = run_all(nbs, out)
        assert refused.returncode == 3
        assert f"Another run (PID {holder.pid}) is writing {out / 'smoke'}" in refused.stderr
        assert "--wait" in refused.stderr
        assert not (out / "ran.txt").exists()

        # another profile, or another root, runs alongside
        assert run_all(nbs, out, profile="local").returncode == 0
        assert run_all(nbs, tmp_path / "other").returncode == 0
        assert (out / "ran.txt").read_text().split() == ["01_first"]

        waiting = subprocess.Popen(
            [RUN_ALL, "--no-setup", "--profile", "smoke", "--wait"],
            env=_env(nbs, out),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines = iter(waiting.stdout.readline, "")
        assert any(f"Waiting for the run with PID {holder.pid}" in line for line in lines)
        time.sleep(1)
        assert waiting.poll() is None  # still waiting
    finally:
        holder.send_signal(signal.SIGKILL)  # no clean-up: the kernel drops the lock
        holder.wait()
    rest = waiting.communicate(timeout=300)[0]
    assert waiting.returncode == 0, rest
    assert (out / "ran.txt").read_text().split() == ["01_first", "01_first"]
    assert run_all(nbs, out).returncode == 0  # no stale lock left by the killed holder
