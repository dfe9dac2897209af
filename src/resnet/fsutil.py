"""File-system helpers shared by the writers of weights, checkpoints and datasets."""

from __future__ import annotations

import os


def follow_umask(path: str | os.PathLike[str]) -> None:
    """Give ``path`` the permissions a plain ``open(path, "w")`` would have had (0o666 less the umask).

    Why: files written through a private temporary file (``tempfile.mkstemp``, safetensors' writer) start at 0o600;
    renamed into place they would stay unreadable to the user's group, unlike every other file of a run folder.
    """
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)
