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
