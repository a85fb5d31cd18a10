"""Write files and directories under a temporary name beside them, then rename.

A reader (or a resumed run) never sees half a file: whatever exists at the final name is
complete, and a failed write leaves the previous version, if any, untouched.
Standard library only, so any layer (data workers, the tokenizer, checkpoints) can use it.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def write_file(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Let ``write`` fill a temporary sibling of path, then rename it: a file that exists is complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        tmp.chmod(0o666 & ~_umask())  # mkstemp makes it private (0600); the result should look like open()'s
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    """Replace path's content with text in one rename: a file that exists is complete."""
    write_file(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: str | os.PathLike, obj: Any, indent: int = 2, sort_keys: bool = False) -> None:
    """Write obj as JSON plus a final newline in one rename: a JSON file that exists parses."""
    write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n")


@contextlib.contextmanager
def staging_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty sibling of target to build in; on success it replaces target, on failure it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(target), dir=target.parent))
    try:
        staging.chmod(0o777 & ~_umask())  # mkdtemp makes it private (0700); the result should look like mkdir's
        yield staging
        replace_directory(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def remove_stale_staging(target: str | os.PathLike) -> list[Path]:
    """Remove staging directories for target that a killed process (SIGKILL, power loss) left; return them.

    Call it only where target has one writer (a run that owns it), before staging anew.
    """
    target = Path(target)
    if not target.parent.is_dir():
        return []
    stale = sorted(path for path in target.parent.glob(f"{glob.escape(_staging_prefix(target))}*") if path.is_dir())
    for path in stale:
        shutil.rmtree(path)
    return stale


def _staging_prefix(target: Path) -> str:
    return f".{target.name}.tmp-"


def replace_directory(staging: str | os.PathLike, target: str | os.PathLike) -> None:
    """Rename a finished directory to target, removing an old target first (rename cannot replace a non-empty one)."""
    target = Path(target)
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)


def _umask() -> int:
    # The only portable way to read the umask is to set it and put it back.
    umask = os.umask(0)
    os.umask(umask)
    return umask
