"""File-system helpers shared by the writers of weights, checkpoints, run folders and results."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path


def follow_umask(path: str | os.PathLike[str]) -> None:
    """Give ``path`` the permissions a plain ``open(path, "w")`` would have had (0o666 less the umask).

    Why: files written through a private temporary file (``tempfile.mkstemp``, safetensors' writer) start at 0o600;
    renamed into place they would stay unreadable to the user's group, unlike every other file of a run folder.
    """
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def temporary_name(path: Path) -> Path:
    """Where :func:`write_atomic` writes ``path`` before the rename: a hidden file beside it (same file system, so
    the rename is atomic; hidden, so a listing of run folders or weights never shows a half-written file)."""
    return path.with_name(f".{path.name}.tmp")


def write_atomic(path: str | os.PathLike[str], data: str | bytes | Callable[[Path], None]) -> Path:
    """Write ``path`` so that it is either the old file or the whole new one, whatever happens meanwhile.

    ``data`` is the text or bytes, or a function that writes a given path (safetensors' ``save_file``). The file
    goes to :func:`temporary_name`, is flushed to disk, renamed over ``path``, and the folder is synced (the rename
    survives a power loss); it follows the umask like any plainly written file. On any failure (a full disk, a
    kill's KeyboardInterrupt) the temporary file is removed and nothing changes at ``path``; an OSError names
    ``path``. The one writer of every file the project leaves for later (configs, checkpoints, weights, results).
    """
    target = Path(path)
    tmp = temporary_name(target)
    try:
        if callable(data):
            data(tmp)
        else:
            with open(tmp, "wb") as f:
                f.write(data.encode() if isinstance(data, str) else data)
        follow_umask(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError) and e.errno is not None:  # the same kind of error (ENOSPC, EACCES ...), named
            raise OSError(e.errno, e.strerror or str(e), str(target)) from None  # for the target, not the temporary
        raise
    with contextlib.suppress(OSError):
        folder = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    return target


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes (hex), read in 1 MB chunks: checkpoints' and downloads' integrity."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def input_file_problem(path: str | os.PathLike[str], what: str) -> str | None:
    """Why ``path`` cannot be read as ``what`` (a file to read whole), or None: missing, a folder, or not a regular
    file (a FIFO would block the reader, /dev/zero never ends)."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except OSError as e:
        return f"{what} {p} {'not found' if e.errno == errno.ENOENT else f'cannot be read ({e.strerror})'}"
    if stat.S_ISDIR(mode):
        return f"{what} {p} is a folder, not a file"
    if not stat.S_ISREG(mode):
        return f"{what} {p} is not a regular file (a device, FIFO or socket); pass the file itself"
    return None


def check_writable(folder: Path) -> None:
    """Create ``folder`` and a file in it, or fail with an OSError naming the folder (a read-only mount, a full
    disk): a run learns this before it trains, an export before it builds its program (torch's C++ writers fail
    with a RuntimeError, or abort)."""
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / f".probe-{os.getpid()}.tmp"
    try:
        probe.write_bytes(b"0")
    except OSError as e:
        raise OSError(e.errno, e.strerror or str(e), str(folder)) from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()


def os_error_from(error: Exception, path: str | os.PathLike[str]) -> OSError:
    """A failed write that a library reports in its own error type (safetensors: "No space left on device (os error
    28)") as the OSError it is, with its errno when the message carries one, naming ``path``."""
    match = re.search(r"os error (\d+)", str(error))
    code = int(match.group(1)) if match else errno.EIO
    return OSError(code, os.strerror(code) if match else str(error), str(path))
