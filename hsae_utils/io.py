"""Small file helpers: atomic writes and hashing.

Every file a later stage reads is written to a temporary name in the same folder and then
renamed, so a crash never leaves a half-written file behind; a write that fills the disk raises
DiskFullError naming the file and the bytes it needs, and leaves the completed files as they were.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

# A failed write with less than this free (after f_bavail, what this user may use) is a full disk:
# numpy, torch and safetensors each report ENOSPC in their own words, some without an errno.
FULL_DISK_BYTES = 1 << 20


class DiskFullError(OSError):
    """No space left while writing a file; the message names the file, the bytes and the fix."""


def _disk_full(err: BaseException, folder: Path) -> bool:
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return True
    try:
        return shutil.disk_usage(folder).free < FULL_DISK_BYTES
    except OSError:
        return False


@contextmanager
def atomic_path(path: str | Path, nbytes: int | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds.
    `nbytes`: the file's expected size, named in the error if the disk fills."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except Exception as err:
        if isinstance(err, DiskFullError) or not _disk_full(err, path.parent):
            raise
        written = tmp_path.stat().st_size if tmp_path.exists() else 0
        tmp_path.unlink(missing_ok=True)
        needs = f"{nbytes:,} bytes" if nbytes else f"more than the {written:,} bytes written"
        raise _disk_full_error(path, needs) from err
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _disk_full_error(path: Path, needs: str) -> DiskFullError:
    return DiskFullError(
        errno.ENOSPC,
        f"No space left on device writing {path}: it needs {needs}, and "
        f"{shutil.disk_usage(path.parent).free:,} bytes are free there. Free some space (or "
        "set HSAE_OUTPUT_ROOT to a larger disk) and re-run: the files completed so far are "
        "kept and the work resumes after them.",
    )


def open_memmap_allocated(path: str | Path, dtype: Any, shape: tuple[int, ...]) -> Any:
    """`np.lib.format.open_memmap(path, "w+", ...)` with its disk space reserved up front.

    A memory map's file is sparse: when the disk fills while its pages are written, the process
    dies of SIGBUS, with no error and no clean-up. Reserving the blocks first turns that into a
    DiskFullError before any work (where the OS has posix_fallocate; elsewhere as before)."""
    import numpy as np

    path = Path(path)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    if hasattr(os, "posix_fallocate"):
        size = path.stat().st_size
        fd = os.open(path, os.O_RDWR)
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as err:
            if err.errno != errno.ENOSPC:
                raise
            del out
            path.unlink(missing_ok=True)
            raise _disk_full_error(path, f"{size:,} bytes") from err
        finally:
            os.close(fd)
    return out


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporaries of `atomic_path` that a killed process left in `folder`.

    A SIGKILL skips the cleanup, so a half-written `.name.xxx.tmp` can remain; it is never read
    (only renamed files are), but it holds disk space. Call only when no other process writes here.
    """
    stale = sorted(Path(folder).glob(".*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def replace_marked_block(path: str | Path, name: str, body: str) -> None:
    """Replace the text between `<!-- {name}:start -->` and `<!-- {name}:end -->` in `path`
    (e.g. README.md) with `body`, atomically; an error names the missing markers."""
    path = Path(path)
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text()
    if start not in text or end not in text:
        raise ValueError(f"{path} has no {start} ... {end} markers; add them where the block goes.")
    head, tail = text[: text.index(start) + len(start)], text[text.index(end) :]
    write_text_atomic(path, f"{head}\n{body}\n{tail}")


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def read_manifest(path: str | Path) -> tuple[dict | None, str]:
    """(manifest, "ok"), or (None, why) when it is missing or unreadable: the first check of every
    cached artifact that a manifest describes (converted model, hub replicas)."""
    if not Path(path).is_file():
        return None, "no manifest"
    try:
        return read_json(path), "ok"
    except ValueError:
        return None, "unreadable manifest"


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            h.update(chunk)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
