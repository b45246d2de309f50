"""scripts/setup.sh: which Python and environment it uses, the torch-build variables, the install
stamp, and the profile it prepares. Run on a copy of the repository's set-up files with a stand-in
`hsae_utils.pipeline.prepare` that reports how it was called (the real one is run by every ./run_tests.sh),
and with the install stamp already in place, so nothing is installed."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hsae_utils.config import REPO_ROOT

FAKE_PREPARE = 'import sys\nprint("prepare:", sys.executable, sys.argv[1:])\n'


@pytest.fixture
def repo(tmp_path):
    dst = tmp_path / "repo"
    (dst / "scripts").mkdir(parents=True)
    (dst / "hsae_utils" / "pipeline").mkdir(parents=True)
    for name in ("scripts/setup.sh", "requirements.lock", "pyproject.toml"):
        shutil.copy2(REPO_ROOT / name, dst / name)
    (dst / "hsae_utils" / "__init__.py").write_text("")
    (dst / "hsae_utils" / "pipeline" / "__init__.py").write_text("")
    (dst / "hsae_utils" / "pipeline" / "prepare.py").write_text(
        FAKE_PREPARE + "# takes --profile NAME\n"
    )
    return dst


def _env_with_stamp(prefix: Path, repo: Path) -> None:
    """A Python environment at `prefix` whose install stamp says the pins are installed."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(prefix)], check=True)
    digest = hashlib.sha256(
        (repo / "requirements.lock").read_bytes() + (repo / "pyproject.toml").read_bytes()
    ).hexdigest()
    (prefix / ".hsae-installed").write_text(digest + "\n")


def _run(repo, *args, **env):
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("CONDA_PREFIX", "PYTHON", "HSAE_TORCH", "HSAE_TORCH_INDEX", "VIRTUAL_ENV")
    }
    return subprocess.run(
        ["bash", "scripts/setup.sh", *args],
        cwd=repo,
        env={**base, **env},
        capture_output=True,
        text=True,
    )


def test_active_conda_environment_is_used_and_profile_passed(repo, tmp_path):
    conda = tmp_path / "conda-env"
    _env_with_stamp(conda, repo)
    out = _run(repo, "--profile", "smoke", CONDA_PREFIX=str(conda))
    assert out.returncode == 0, out.stderr
    assert (repo / ".venv").is_symlink() and (repo / ".venv").resolve() == conda.resolve()
    assert "installing" not in out.stdout  # the stamp matched: same hash as before (Python's)
    assert f"prepare: {repo}/.venv/bin/python ['--profile', 'smoke']" in out.stdout
    again = _run(repo, CONDA_PREFIX=str(conda))  # idempotent, no profile: prepare without flag
    assert again.returncode == 0 and "prepare:" in again.stdout and "[]" in again.stdout


def test_existing_venv_wins_over_conda_and_old_prepare_gets_no_flag(repo, tmp_path):
    _env_with_stamp(repo / ".venv", repo)
    (repo / "hsae_utils" / "pipeline" / "prepare.py").write_text(
        FAKE_PREPARE
    )  # a prepare without --profile
    out = _run(repo, "--profile", "local", CONDA_PREFIX=str(tmp_path / "elsewhere"))
    assert out.returncode == 0, out.stderr
    assert not (repo / ".venv").is_symlink() and "prepare:" in out.stdout and "[]" in out.stdout


def test_unsupported_python_is_refused_with_the_fix(repo, tmp_path):
    fake = tmp_path / "python3.10"
    fake.write_text('#!/bin/sh\n[ "$1" = --version ] && echo "Python 3.10.14"; exit 1\n')
    fake.chmod(0o755)
    out = _run(repo, PYTHON=str(fake))
    assert out.returncode == 1 and "3.11 or 3.12" in out.stderr and "Python 3.10.14" in out.stderr
    assert not (repo / ".venv").exists()


def test_torch_build_variables_are_checked_before_installing(repo):
    _env_with_stamp(repo / ".venv", repo)
    out = _run(repo, HSAE_TORCH="cpu")
    assert out.returncode == 2 and "HSAE_TORCH_INDEX" in out.stderr
    out = _run(repo, HSAE_TORCH="gpu", HSAE_TORCH_INDEX="file:///nowhere")
    assert out.returncode == 2 and "cu126" in out.stderr
    out = _run(repo, "--bogus")
    assert out.returncode == 2 and "--profile NAME" in out.stderr


def test_setup_script_uses_no_gnu_only_tools():
    text = (REPO_ROOT / "scripts" / "setup.sh").read_text()
    for tool in ("sha256sum", "realpath", "readlink -f", "sed -i", "md5sum", "stat -c"):
        assert tool not in text, tool
