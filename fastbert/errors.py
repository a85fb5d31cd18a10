"""User-facing errors: one clear line, a non-zero exit, no traceback.

Raise :class:`UserError` (or :class:`InputError` for a bad file) for anything a user can
fix: bad input files, missing directories, impossible options. The CLI prints the message
alone; everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os


class UserError(Exception):
    """An error the user can fix; the CLI prints ``fastbert: error: <message>`` and exits 2."""

    exit_code = 2


class InputError(UserError):
    """Bad content in an input file, located by file and (when known) line number."""

    def __init__(self, path: str | os.PathLike, message: str, line: int | None = None):
        self.path = os.fspath(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class DiskFull(UserError):
    """A write failed for want of space (or quota): says where, what needed room and what became of it."""

    def __init__(self, directory: str | os.PathLike, what: str, *, needed: int | None = None,
                 free: int | None = None, outcome: str = ""):
        self.directory = os.fspath(directory)
        room = ", ".join(part for part in (f"needs about {format_bytes(needed)}" if needed else "",
                                           f"{format_bytes(free)} free" if free is not None else "") if part)
        super().__init__(f"no space left on device: {self.directory} ({what}{': ' + room if room else ''})"
                         + (f"; {outcome}" if outcome else ""))


def format_bytes(size: float) -> str:
    """1536 -> "1.5 kB": decimal units, as ``df -H`` shows them."""
    units = ("B", "kB", "MB", "GB", "TB")
    power = 0
    while size >= 1000 and power < len(units) - 1:
        size /= 1000
        power += 1
    return f"{size:.0f} B" if power == 0 else f"{size:.1f} {units[power]}"
