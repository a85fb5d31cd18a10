"""One writer per run directory, and what a run may find in its --out.

``OUT/fastbert.lock`` names the run that writes there (host, PID, when, the command). It is
created whole or not at all (written beside, then hard-linked into place, which fails if a
lock exists), refreshed every minute while the run lives, and removed when it ends. A lock
left by a run that died is stale and taken over with a message: on this host when its PID is
gone (or now belongs to a younger process); from an earlier start of the same SLURM job
(requeued: SLURM ends every task before it restarts a job); on another host when it has not
been refreshed for 15 minutes.

What a run may find: a fresh run refuses an --out holding an earlier run's outputs unless
``overwrite`` (which deletes those outputs, nothing else); a resumed run continues them, and
resuming from an older checkpoint discards the later ones only with ``overwrite``. Staging
debris of a killed run is removed, since nobody else writes here.

Only the main rank touches the directory; it tells the others the outcome, so that a
refusal stops every rank with the same line instead of leaving them waiting.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import atomic
from ..errors import UserError
from .checkpoint import LATEST, STAGING_PREFIX, checkpoint_name, checkpoint_step, list_checkpoints
from .launch import Launch, broadcast_from_main

logger = logging.getLogger(__name__)

LOCK_FILE = "fastbert.lock"
HEARTBEAT_S = 60.0
FOREIGN_STALE_S = 15 * 60.0
"""A lock from another host whose heartbeat stopped this long ago belongs to a dead run."""
RUN_OUTPUTS = ("checkpoints", "metrics.jsonl", "model", "results.json", "seed_*")
"""What pretraining and fine-tuning write into --out: what --overwrite deletes, and what makes an --out taken."""
STAGING_DEBRIS = (".model.*", ".export-*", ".metrics.jsonl.*", ".results.json.*", f"checkpoints/{STAGING_PREFIX}*",
                  "seed_*/.model.*", "seed_*/.export-*", "seed_*/.metrics.jsonl.*")
"""Temporary siblings (fastbert.atomic, DeepSpeed export scratch) a killed run leaves behind."""


@dataclass(frozen=True)
class StartMode:
    """How a run treats what is already in its --out."""

    resume: bool = False
    """Continue from the newest complete checkpoint."""
    resume_from: Path | None = None
    """Continue from this checkpoint (implies resume)."""
    overwrite: bool = False
    """Delete an earlier run's outputs first; with resume_from, the checkpoints after it."""

    def __post_init__(self) -> None:
        if self.resume and self.overwrite and self.resume_from is None:
            raise UserError("--overwrite deletes the checkpoints --resume would continue from; give one of them "
                            "(or --resume-from CHECKPOINT --overwrite to go back to an older checkpoint)")

    @property
    def resuming(self) -> bool | Path:
        """What the training loop's ``resume`` takes: the checkpoint path, True for the newest, or False."""
        return self.resume_from if self.resume_from is not None else self.resume


@dataclass(frozen=True)
class LockHolder:
    host: str
    pid: int
    process_start: str | None
    """The PID's start time (Linux), so that a reused PID is not taken for the holder."""
    since: str
    command: str
    slurm_job: str | None = None
    """SLURM_JOB_ID and SLURM_RESTART_COUNT ("4242.0"), so that a requeued job knows its own earlier start."""

    @classmethod
    def this_process(cls) -> "LockHolder":
        job = os.environ.get("SLURM_JOB_ID")
        return cls(socket.gethostname(), os.getpid(), _process_start(os.getpid()), time.strftime("%Y-%m-%d %H:%M:%S"),
                   " ".join(sys.argv), f"{job}.{os.environ.get('SLURM_RESTART_COUNT', '0')}" if job else None)

    def describe(self) -> str:
        return f"PID {self.pid} on {self.host} since {self.since} ({self.command})"


class RunLock:
    """The lock file of one run directory (see the module docstring)."""

    def __init__(self, directory: Path):
        self.path = directory / LOCK_FILE
        self.holder = LockHolder.this_process()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def acquire(self) -> None:
        for _ in range(3):  # another run may take a stale lock over between our look and our move
            if self._create():
                self._heartbeat = threading.Thread(target=self._beat, name="fastbert-lock", daemon=True)
                self._heartbeat.start()
                return
            found, text, age = self._read()
            reason = self._stale_reason(found, age)
            if reason is None:
                who = found.describe() if found else "an unreadable lock"
                raise UserError(f"{self.path.parent}: another run is writing here ({who}); wait for it to end or choose "
                                f"another --out (remove {self.path} only if no run is using it)")
            if self._take_over(text):
                logger.warning("%s: took over the stale lock of %s (%s)", self.path.parent,
                               found.describe() if found else "an unreadable lock", reason)
        raise UserError(f"{self.path.parent}: other runs keep taking its lock; start one run at a time")

    def release(self) -> None:
        """Remove the lock if this process holds it."""
        if self._heartbeat is None:
            return
        self._stop.set()
        self._heartbeat.join()
        self._heartbeat = None
        found, _, _ = self._read()
        if found is not None and (found.host, found.pid) == (self.holder.host, self.holder.pid):
            self.path.unlink(missing_ok=True)

    def _create(self) -> bool:
        """Put our lock in place whole, or return False when there is one."""
        staged = self.path.with_name(f".{LOCK_FILE}.{self.holder.host}.{self.holder.pid}")
        atomic.write_json(staged, asdict(self.holder))
        try:
            os.link(staged, self.path)  # fails, atomically, if a lock exists
            return True
        except FileExistsError:
            return False
        finally:
            staged.unlink(missing_ok=True)

    def _read(self) -> tuple[LockHolder | None, str | None, float]:
        """The lock's holder (None if unreadable), its text (None if absent) and seconds since its last heartbeat."""
        try:
            text = self.path.read_text(encoding="utf-8")
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return None, None, 0.0
        try:
            return LockHolder(**json.loads(text)), text, age
        except (ValueError, TypeError):
            return None, text, age

    def _stale_reason(self, found: LockHolder | None, age: float) -> str | None:
        if found is not None and found.slurm_job and self.holder.slurm_job and found.slurm_job != self.holder.slurm_job:
            (job, started), (my_job, my_start) = found.slurm_job.split("."), self.holder.slurm_job.split(".")
            if job == my_job and int(started) < int(my_start):
                return f"SLURM requeued job {job}, restart {my_start}"
        if found is not None and found.host == self.holder.host:
            if not _alive(found.pid):
                return "that process is gone"
            if found.process_start is not None and _process_start(found.pid) != found.process_start:
                return "its PID now belongs to another process"
            return None
        if age > FOREIGN_STALE_S:
            return f"no heartbeat for {age / 60:.0f} minutes"
        return None

    def _take_over(self, stale_text: str | None) -> bool:
        """Move the stale lock aside, unless it changed since we judged it (then another run holds it)."""
        if stale_text is None:
            return True  # it vanished on its own
        aside = self.path.with_name(f".{LOCK_FILE}.stale.{self.holder.pid}")
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return True
        if aside.read_text(encoding="utf-8") != stale_text:  # we moved a fresh lock: put it back
            with contextlib.suppress(FileExistsError):
                os.link(aside, self.path)
            aside.unlink()
            return False
        aside.unlink()
        return True

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(self.path)


@contextlib.contextmanager
def claim_run_directory(out: str | os.PathLike, mode: StartMode, launch: Launch, *, resumable: bool = True) -> Iterator[None]:
    """Hold ``out`` for this run (on the main rank) after checking what it holds against
    ``mode``; every rank raises the same one-line error when the main rank refuses.
    ``resumable``: whether the command can continue an earlier run (it says so when refusing)."""
    out = Path(out)
    lock, failure = None, None
    if launch.is_main:
        try:
            try:
                out.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise UserError(f"{out}: cannot create the output directory ({err.strerror})") from None
            lock = RunLock(out)
            lock.acquire()
            _prepare(out, mode, resumable)
        except Exception as err:  # noqa: BLE001 - re-raised below, once every rank knows
            failure = err
            if lock is not None:
                lock.release()
    message = broadcast_from_main(None if failure is None else str(failure), launch.world_size)
    if failure is not None:
        raise failure
    if message is not None:
        raise UserError(message)
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def _prepare(out: Path, mode: StartMode, resumable: bool) -> None:
    """Check ``out`` against ``mode`` and clear what it says to clear (we hold the lock)."""
    for debris in (p for pattern in STAGING_DEBRIS for p in out.glob(pattern)):
        shutil.rmtree(debris) if debris.is_dir() else debris.unlink()
    if mode.resume_from is None and mode.resume:
        return  # the loop finds the checkpoint, or says there is none
    checkpoints = (out / "checkpoints").resolve()
    if mode.resume_from is not None and Path(mode.resume_from).resolve().parent == checkpoints:
        _discard_later_checkpoints(out / "checkpoints", Path(mode.resume_from).resolve(), mode.overwrite)
        return
    # A fresh run, or one resumed from another run's checkpoint: nothing of an earlier run may stay.
    outputs = sorted(p for pattern in RUN_OUTPUTS for p in out.glob(pattern))
    if outputs and not mode.overwrite:
        names = ", ".join(p.name for p in outputs[:4]) + (", ..." if len(outputs) > 4 else "")
        raise UserError(f"{out}: holds an earlier run ({names}); "
                        + ("add --resume to continue it, " if resumable else "")
                        + "add --overwrite to replace it, or choose another --out")
    for path in outputs:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    if outputs:
        logger.warning("%s: --overwrite removed the earlier run's %s", out, ", ".join(p.name for p in outputs))


def _discard_later_checkpoints(root: Path, source: Path, overwrite: bool) -> None:
    """Going back to an older checkpoint of this run: the later ones belong to the abandoned
    continuation (a plain --resume would pick them), so they go, with --overwrite only."""
    step = checkpoint_step(source)
    if step is None:
        raise UserError(f"{source}: not a checkpoint (their directories are named step_N)")
    later = [p for p in list_checkpoints(root) if checkpoint_step(p) > step]
    if later and not overwrite:
        raise UserError(f"{root}: has checkpoints after {source.name} ({', '.join(p.name for p in later)}); "
                        f"add --overwrite to discard them and continue from {source.name}")
    for path in later:
        shutil.rmtree(path)
    if later:
        logger.warning("%s: discarded %s to continue from %s", root, ", ".join(p.name for p in later), source.name)
        atomic.write_text(root / LATEST, checkpoint_name(step) + "\n")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _process_start(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot (Linux /proc), None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()[19]  # field 22; the command name may hold spaces
