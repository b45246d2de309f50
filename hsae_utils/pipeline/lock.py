"""One run per output folder: the OS's advisory file lock (flock) on `<folder>/.run.lock`.

The kernel releases the lock when its holder dies, however it dies (kill -9 included), so there
is never a stale lock to delete by hand; the PID in the file only names the holder in messages.
Different profiles or output roots lock different files and run in parallel.
"""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

LOCK_NAME = ".run.lock"


class LockHeld(RuntimeError):
    """Another live process holds the folder's lock."""


def _holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 64).decode(errors="replace").strip() or "unknown"


@contextmanager
def run_lock(folder: str | Path, wait: bool = False, poll_s: float = 0.5) -> Iterator[int]:
    """Hold `folder`'s run lock for the block; yields the lock file's descriptor (a child
    process given it, e.g. with subprocess's pass_fds, holds the lock too). Raises LockHeld
    (naming the holder's PID) when another process holds it, or with `wait=True` waits until it
    is released."""
    path = Path(folder) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _holder(fd)
                if not wait:
                    raise LockHeld(
                        f"Another run (PID {holder}) is writing {path.parent}. Wait for it to "
                        "finish (or pass --wait to queue behind it); a killed run releases the "
                        "lock by itself, so there is nothing to delete."
                    ) from None
                if not announced:
                    print(
                        f"Waiting for the run with PID {holder} to release {path} ...", flush=True
                    )
                    announced = True
                time.sleep(poll_s)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield fd
    finally:
        os.close(fd)  # releases the lock
