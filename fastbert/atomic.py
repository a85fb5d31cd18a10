"""Write files and directories under a temporary name beside them, then rename.

A reader (or a resumed run) never sees half a file: whatever exists at the final name is
complete, and a failed write leaves the previous version, if any, untouched. A write that
failed because the disk (or a quota) is full becomes one :class:`~fastbert.errors.DiskFull`
line through :func:`reporting_full_disk`.
Standard library only, so any layer (data workers, the tokenizer, checkpoints) can use it.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .errors import DiskFull, UserError

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
PROBE_BYTES = 1 << 20
"""What a probe write must fit to call a disk not full (torch's writer fails in larger pieces)."""


def write_file(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Let ``write`` fill a temporary sibling of path, then rename it: a file that exists is complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        # mkstemp makes the file private (0600), and some writers (safetensors) create it anew
        # with 0600 themselves: after writing, give it the mode open() would have.
        tmp.chmod(0o666 & ~_umask())
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


@contextlib.contextmanager
def reporting_full_disk(directory: str | os.PathLike, what: str, *, needed: int | None = None,
                        outcome: str = "") -> Iterator[None]:
    """Turn a write under ``directory`` that fails for want of space into one DiskFull line.

    Put it inside whatever cleans up after the write, so that the probe below runs while
    the failed write still holds its space.
    """
    try:
        yield
    except UserError:
        raise
    except Exception as err:
        if not disk_is_full(err, directory):
            raise
        raise DiskFull(directory, what, needed=needed, free=_free_bytes(directory), outcome=outcome) from None


def disk_is_full(err: BaseException, directory: str | os.PathLike) -> bool:
    """Whether ``err``, raised by a write under ``directory``, came from a full disk or quota."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno in DISK_FULL_ERRNOS:
            return True
        cause = cause.__cause__ or cause.__context__
    # torch's zip writer ("[enforce fail at inline_container.cc] ... unexpected pos") and
    # safetensors report a failed write without an errno: ask the filesystem itself.
    return not isinstance(err, OSError) and not _room_for(directory, PROBE_BYTES)


def _room_for(directory: str | os.PathLike, size: int) -> bool:
    try:
        fd, name = tempfile.mkstemp(prefix=".space-probe-", dir=directory)
    except OSError as err:
        return err.errno not in DISK_FULL_ERRNOS
    try:
        os.write(fd, bytes(size))
        os.fsync(fd)
        return True
    except OSError as err:
        return err.errno not in DISK_FULL_ERRNOS
    finally:
        os.close(fd)
        os.unlink(name)


def _free_bytes(directory: str | os.PathLike) -> int | None:
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


def _umask() -> int:
    # The only portable way to read the umask is to set it and put it back.
    umask = os.umask(0)
    os.umask(umask)
    return umask
