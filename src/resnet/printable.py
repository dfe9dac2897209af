"""Names from the file system as they may be printed: a file called ``$'\\e[2J.jpg'`` must not clear the terminal."""

from __future__ import annotations

import os


def safe_name(path: str | bytes | os.PathLike[str] | os.PathLike[bytes]) -> str:
    """``path`` as text for a message or a log line: unchanged when every character is printable, else its
    ``repr`` (quoted, with escape codes, newlines and undecodable bytes written as ``\\x1b``, ``\\n``, ``\\udcff``)."""
    text = os.fsdecode(path)
    return text if text.isprintable() else repr(text)


def printable_line(text: str) -> str:
    """One line as a terminal should show it: unchanged when printable, else with escape codes and newlines written
    as ``\\x1b``, ``\\n`` (unquoted: an error line or a report cell, where a name could clear the screen or forge a
    line)."""
    return text if text.isprintable() else repr(text)[1:-1]

