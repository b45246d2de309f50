"""`pip install .` ships the whole package: a wheel built from pyproject.toml holds every module
and data file of hsae_utils/, and the installed copy imports every subpackage (offline: no
dependencies are installed, no index is asked)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

from hsae_utils.config import REPO_ROOT

PACKAGE = REPO_ROOT / "hsae_utils"
DATA_SUFFIXES = {".html", ".js", ".css", ".json"}


def repo_files() -> set[str]:
    """The package's .py and data files as the wheel names them (hsae_utils/...)."""
    return {
        p.relative_to(REPO_ROOT).as_posix()
        for p in PACKAGE.rglob("*")
        if p.is_file()
        and "__pycache__" not in p.parts
        and (p.suffix == ".py" or p.suffix in DATA_SUFFIXES)
    }


def subpackages() -> list[str]:
    return sorted(
        ".".join(p.parent.relative_to(REPO_ROOT).parts)
        for p in PACKAGE.rglob("__init__.py")
        if "__pycache__" not in p.parts
    )


def test_the_wheel_holds_and_installs_every_subpackage(tmp_path):
    src = tmp_path / "src"  # a copy, so the build leaves nothing in the repository
    src.mkdir()
    shutil.copy(REPO_ROOT / "pyproject.toml", src)
    shutil.copytree(PACKAGE, src / "hsae_utils", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    out = subprocess.run(
        [
            *pip,
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            str(tmp_path / "dist"),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("hsae_utils-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = repo_files() - names
    assert not missing, f"not in the wheel: {sorted(missing)}"

    site = tmp_path / "site"
    out = subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    code = (
        "import importlib, sys\n"
        f"site = {str(site)!r}\n"
        f"for name in {subpackages()!r}:\n"
        "    module = importlib.import_module(name)\n"
        "    assert module.__file__.startswith(site), (name, module.__file__)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}  # the installed copy, not the repository
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
