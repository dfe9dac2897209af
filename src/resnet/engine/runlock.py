"""One writer per run folder: an advisory lock that a killed process cannot leave behind, and unique default names.

``fcntl.flock`` locks belong to the open file: the kernel drops them when the process exits for any reason
(SIGKILL included), so a crashed run never leaves a stale lock, and a second ``resnet train --out SAME`` (or a
``--resume`` of a run still training, or a study re-run while its orphaned children still write) is refused at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType

from resnet.errors import ConfigError

LOCK_NAME = ".lock"
RUN_FILES = ("config.toml", "run.json")
"""Files that mark a folder as a run folder."""


class RunDirLock:
    """Exclusive ownership of a run folder for the life of the object (or the ``with`` block)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self._fd: int | None = None

    def acquire(self, wait: bool = False) -> RunDirLock:
        """Take the lock, or refuse at once in one line naming the holder; ``wait`` blocks until the holder lets go
        (for short critical sections such as a study's job submission, never for a training run)."""
        self.out.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ConfigError(f"{self.out} is being written by process {holder}; wait for it to finish (or stop it), "
                              "or pass another --out") from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())  # who holds it, for the next one's error message
        except OSError as e:  # a full disk: the lock holds without its note, but say which folder is full
            os.close(fd)
            raise OSError(e.errno, e.strerror or str(e), str(self.out / LOCK_NAME)) from None
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.release()

    def __enter__(self) -> RunDirLock:
        return self.acquire()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.release()


def is_run_dir(folder: Path) -> bool:
    return any((folder / name).is_file() for name in RUN_FILES)


def check_new_run_dir(out: Path) -> None:
    """A new run goes into a missing or empty folder: never over another run, never over unrelated files."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder; pass another --out")
    if is_run_dir(out):
        raise ConfigError(f"{out} already holds a run; pass --resume {out} to continue it, or another --out")
    others = [p.name for p in out.iterdir() if p.name != LOCK_NAME]
    if others:
        raise ConfigError(f"{out} is not empty and is not a run folder (it holds {others[0]!r} ...); pass an empty "
                          "or new --out")


def unique_run_dir(base: Path) -> Path:
    """``base``, or ``base-2``, ``base-3`` ... : the first that did not exist, created here (atomically, so two runs
    started in the same second never share a folder)."""
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 10_000):
        candidate = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise ConfigError(f"no free run folder name next to {base}; pass --out")


__all__ = ["RunDirLock", "check_new_run_dir", "is_run_dir", "unique_run_dir"]
