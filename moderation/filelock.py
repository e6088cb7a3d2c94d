"""An exclusive lock on a file that several processes update (a batch job's OUT, a hash list, a feedback store).

    with file_lock(Path("known-bad.json.lock"), wait_s=60, busy=lambda p: RuntimeError(f"{p} is held")):
        ...  # read, change and write the file: no other holder of the lock runs meanwhile

An `flock` on the lock file, which the kernel releases if the process dies (a `kill -9` leaves no stale lock);
the file holds the holder's pid (for messages) and is removed on release, while still locked.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from pathlib import Path
from typing import Callable, Iterator


@contextlib.contextmanager
def file_lock(path: Path, *, wait_s: float = 0.0, busy: Callable[[Path], Exception]) -> Iterator[Path]:
    """Hold an exclusive lock on `path` for the block, waiting up to `wait_s` seconds for another holder (0: not
    at all); then raise `busy(path)`."""
    deadline = time.monotonic() + wait_s
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            if time.monotonic() >= deadline:
                raise busy(path) from None
            time.sleep(0.05)
            continue
        # The holder before us may have removed the file between our open and our lock: lock the file that is there.
        if same_file(fd, path):
            break
        os.close(fd)
    try:
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass  # the pid only makes the message of a refused holder clearer
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # while still locked: a process waiting on this file will find it gone and retry
        os.close(fd)


def same_file(fd: int, path: Path) -> bool:
    """Whether the open descriptor `fd` is the file at `path` now."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    fst = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (fst.st_dev, fst.st_ino)


def holder(path: Path) -> str:
    """" (pid N)" for the pid a lock file holds, "" when it cannot be read."""
    try:
        pid = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""
