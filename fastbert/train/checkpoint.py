"""Training checkpoints you can resume from: verified against a manifest, retained by policy.

Layout under ``root``::

    step_00000300/            checkpoints (each built as .tmp-step_00000300, then renamed)
      engine/                 the engine's own files (local engine.pt, or DeepSpeed's tag folder)
      rng_rank0.pt ...        python, numpy, torch (and CUDA) RNG states of each rank
      trainer_state.json      step, data position, world size: what the loop resumes from
      hf/                     config.json + model.safetensors (+ tokenizer) that transformers loads:
                              in the final checkpoint and every ``hf_every`` steps
      manifest.json           size and SHA-256 of every other file, written last
    latest                    name of the newest checkpoint, for people and scripts

A checkpoint is complete when its manifest exists, lists every file a checkpoint of its
world size needs, and every listed file has its recorded size and digest. The manifest is
built by reading each file back from disk, and only then is the staging folder renamed.
Resuming trusts neither names nor ``latest``: it verifies, newest first, and resumes from
the first checkpoint that is complete, saying which it skipped and why.

SHA-256 rather than a cheaper checksum: it runs at about 1 GB/s per core (files hash in
parallel threads), about what writing them costs, once per save and once per resume; it
catches any corruption, not only truncation; and ``sha256sum`` checks a file by hand.

Every rank calls :meth:`CheckpointManager.save`, :meth:`~CheckpointManager.resume_point`
and :meth:`~CheckpointManager.publish_model`; a filesystem shared by all ranks is assumed.
A failed write on any rank stops every rank, removes the staging folder and leaves the
checkpoints before it as they were; a full disk says so in one line.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import atomic
from ..errors import UserError
from .config import CheckpointPolicy
from .engines import Engine
from .launch import broadcast_from_main

logger = logging.getLogger(__name__)

LATEST = "latest"
MANIFEST = "manifest.json"
TRAINER_STATE = "trainer_state.json"
HF_EXPORT = "hf"
STAGING_PREFIX = ".tmp-"
_NAME = re.compile(r"step_(\d+)")
_HASH_CHUNK = 8 << 20


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}"


def checkpoint_step(path: str | os.PathLike) -> int | None:
    """The step of a checkpoint directory named ``step_N``; None for any other name."""
    match = _NAME.fullmatch(Path(path).name)
    return int(match.group(1)) if match else None


def list_checkpoints(root: str | os.PathLike) -> list[Path]:
    """The ``step_N`` directories under root, oldest first (complete or not)."""
    root = Path(root)
    found = [p for p in root.iterdir() if p.is_dir() and checkpoint_step(p) is not None] if root.is_dir() else []
    return sorted(found, key=checkpoint_step)


def rng_file(rank: int) -> str:
    return f"rng_rank{rank}.pt"


def capture_rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---- manifests -------------------------------------------------------------------------------

def write_manifest(directory: Path) -> int:
    """Record size and SHA-256 of every file under ``directory`` in its manifest (written last);
    returns the bytes recorded. Raises when a file a complete checkpoint needs is missing."""
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)
    relative = [p.relative_to(directory).as_posix() for p in files]
    entries = {rel: {"size": path.stat().st_size, "sha256": digest}
               for rel, path, digest in zip(relative, files, _sha256_all(files, sync=True))}
    missing = _missing_files(directory, entries)
    if missing:
        raise RuntimeError(f"{directory}: {missing} was not written")
    atomic.write_json(directory / MANIFEST, {"hash": "sha256", "files": entries})
    return sum(entry["size"] for entry in entries.values())


def verify_checkpoint(directory: Path) -> str | None:
    """None when ``directory`` is a complete checkpoint, else what is wrong with it (one phrase)."""
    entries, problem = _read_manifest(directory)
    if problem:
        return problem
    paths = {rel: directory / rel for rel in entries}
    for rel, path in paths.items():
        if not path.is_file():
            return f"{rel} is missing"
        size = path.stat().st_size
        if size != entries[rel]["size"]:
            return f"{rel} is {size} bytes, its manifest says {entries[rel]['size']} (truncated or overwritten)"
    for rel, digest in zip(paths, _sha256_all(list(paths.values()))):
        if digest != entries[rel]["sha256"]:
            return f"{rel} differs from its manifest's SHA-256 (corrupt)"
    missing = _missing_files(directory, entries)
    return f"{missing} is missing" if missing else None


def manifest_bytes(directory: Path) -> int | None:
    """The size a checkpoint's manifest records, without verifying it; None without a manifest."""
    entries, problem = _read_manifest(directory)
    return None if problem else sum(entry["size"] for entry in entries.values())


def _read_manifest(directory: Path) -> tuple[dict[str, dict[str, Any]], str | None]:
    path = directory / MANIFEST
    if not path.is_file():
        return {}, f"it has no {MANIFEST} (unfinished, or older than manifests)"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        entries = manifest["files"]
        if manifest["hash"] != "sha256" or not all({"size", "sha256"} <= set(e) for e in entries.values()):
            raise ValueError
    except (ValueError, KeyError, TypeError, AttributeError):
        return {}, f"its {MANIFEST} is unreadable"
    return entries, None


def _missing_files(directory: Path, entries: dict[str, Any]) -> str | None:
    """The first file a complete checkpoint needs that ``entries`` lack, or None."""
    if TRAINER_STATE not in entries:
        return TRAINER_STATE
    state = json.loads((directory / TRAINER_STATE).read_text(encoding="utf-8"))
    needed = [rng_file(rank) for rank in range(state["world_size"])]
    if state.get("hf_export"):
        needed.append(f"{HF_EXPORT}/config.json")
    if not any(rel.startswith("engine/") for rel in entries):
        return "engine/ (the engine's state)"
    return next((rel for rel in needed if rel not in entries), None)


def _sha256_all(paths: list[Path], sync: bool = False) -> list[str]:
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # hashlib releases the GIL
        return list(pool.map(lambda p: _sha256(p, sync), paths))


def _sha256(path: Path, sync: bool) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
        if sync:  # on stable storage before the manifest vouches for it
            os.fsync(f.fileno())
    return digest.hexdigest()


# ---- the manager -------------------------------------------------------------------------------

class CheckpointManager:
    def __init__(self, root: str | os.PathLike, engine: Engine, policy: CheckpointPolicy | None = None):
        self.root = Path(root)
        self.engine = engine
        self.policy = policy or CheckpointPolicy()

    def save(self, step: int, trainer_state: dict[str, Any], tokenizer: Any = None, *, final: bool = False) -> Path:
        """Write checkpoint ``step`` on every rank (with an HF export when final or every
        ``hf_every`` steps), then apply the retention policy; returns its path."""
        engine, name = self.engine, checkpoint_name(step)
        target, staging = self.root / name, self.root / (STAGING_PREFIX + name)
        with_hf = final or self.policy.exports_hf(step)
        state = {**trainer_state, "step": step, "world_size": engine.world_size, "hf_export": with_hf}
        previous = self._newest_complete(before=step)
        if engine.is_main:
            self.root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(staging, ignore_errors=True)  # left by a run killed while saving
            staging.mkdir()
        engine.barrier()

        def write_all(write: Callable[[], None]) -> None:
            _on_every_rank(engine, write, cleanup=lambda: shutil.rmtree(staging, ignore_errors=True),
                           directory=self.root, what=f"checkpoint {name}",
                           needed=manifest_bytes(previous) if previous else None,
                           outcome="removed the unfinished checkpoint; "
                           + (f"the last complete one, {previous.name}, is intact" if previous else "there is no earlier one"))

        def write_rank_state() -> None:
            engine.save_checkpoint(staging / "engine", client_state=state)
            torch.save(capture_rng_state(), staging / rng_file(engine.rank))

        write_all(write_rank_state)
        if with_hf:
            write_all(lambda: engine.export_hf(staging / HF_EXPORT, tokenizer=tokenizer))
        write_all(lambda: self._complete(staging, target, state) if engine.is_main else None)
        if engine.is_main:
            self._retain(target)
        engine.barrier()
        return target

    def _complete(self, staging: Path, target: Path, state: dict[str, Any]) -> None:
        atomic.write_json(staging / TRAINER_STATE, state, sort_keys=True)
        write_manifest(staging)
        atomic.replace_directory(staging, target)
        try:
            atomic.write_text(self.root / LATEST, target.name + "\n")
        except OSError as err:  # a convenience only: resuming finds checkpoints without it
            logger.warning("%s: could not update %s (%s)", self.root, LATEST, err)

    def _newest_complete(self, before: int) -> Path | None:
        """The newest checkpoint before step ``before`` that has a manifest (not re-verified)."""
        return next((p for p in reversed(list_checkpoints(self.root))
                     if checkpoint_step(p) < before and (p / MANIFEST).is_file()), None)

    def _retain(self, newest: Path) -> None:
        """Delete checkpoints keep_last and keep_every do not keep. Only complete ones up to
        ``newest`` count: a later one can exist only after resuming past a broken one, and
        saving its step again replaces it."""
        if self.policy.keep_last == 0:
            return
        step = checkpoint_step(newest)
        complete = [p for p in list_checkpoints(self.root) if checkpoint_step(p) <= step and (p / MANIFEST).is_file()]
        for path in complete[: -self.policy.keep_last]:
            if not self.policy.keeps(checkpoint_step(path)):
                shutil.rmtree(path)
                logger.info("removed checkpoint %s (keep_last %d)", path.name, self.policy.keep_last)

    def resume_point(self, requested: bool | str | os.PathLike = True) -> Path:
        """The verified checkpoint to resume from: ``requested`` itself when it is a path, else
        the newest complete one under root. The main rank decides; every rank gets its answer."""
        choice, error = None, None
        if self.engine.is_main:
            try:
                choice = str(self._choose(requested))
            except UserError as err:
                error = str(err)
        choice, error = broadcast_from_main((choice, error), self.engine.world_size)
        if error is not None:
            raise UserError(error)
        return Path(choice)

    def _choose(self, requested: bool | str | os.PathLike) -> Path:
        if requested is not True:
            path = Path(requested)
            problem = verify_checkpoint(path) if path.is_dir() else "no such directory"
            if problem:
                raise UserError(f"{path}: cannot resume from it: {problem}")
            return path
        candidates = list_checkpoints(self.root)[::-1]
        if not candidates:
            raise UserError(f"{self.root}: --resume given but there is no checkpoint to resume from")
        skipped = []
        for path in candidates:
            problem = verify_checkpoint(path)
            if problem is None:
                if skipped:
                    logger.warning("resuming from %s, the newest complete checkpoint", path.name)
                return path
            logger.warning("skipping checkpoint %s: %s", path.name, problem)
            skipped.append(f"{path.name}: {problem}")
        raise UserError(f"{self.root}: no complete checkpoint to resume from ({'; '.join(skipped)})")

    def load(self, path: Path) -> dict[str, Any]:
        """Restore engine and this rank's RNG streams from a verified checkpoint; returns the trainer state."""
        state = self.engine.load_checkpoint(path / "engine")
        if state["world_size"] != self.engine.world_size:
            # The data order does not depend on the world size; only dropout streams change.
            logger.warning(
                "%s was written by %d ranks, resuming on %d: RNG streams are reseeded, so dropout differs from an uninterrupted run",
                path, state["world_size"], self.engine.world_size,
            )
            torch.manual_seed(state["step"] * 1_000_003 + self.engine.rank)
        else:
            restore_rng_state(torch.load(path / rng_file(self.engine.rank), weights_only=False))
        return state

    def publish_model(self, checkpoint: Path, target: Path, tokenizer: Any = None) -> None:
        """Make ``target`` the model of ``checkpoint``, whose weights the engine holds: a copy of
        its HF export verified against its manifest, or a fresh export when it has none."""
        entries, _ = _read_manifest(checkpoint)
        exported = {rel: e for rel, e in entries.items() if rel.startswith(HF_EXPORT + "/")}
        if not exported:
            export_model(self.engine, target, tokenizer)
            return
        if self.engine.is_main:
            with atomic.reporting_full_disk(target.parent, f"the final model {target.name}",
                                            needed=sum(e["size"] for e in exported.values()),
                                            outcome=f"{target} was left as it was; {checkpoint} holds the same weights"):
                with atomic.staging_directory(target) as staging:
                    copies = [staging / rel.removeprefix(HF_EXPORT + "/") for rel in exported]
                    for rel, copy in zip(exported, copies):  # file by file: copytree would hide the errno
                        copy.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(checkpoint / rel, copy)
                    for (rel, entry), digest in zip(exported.items(), _sha256_all(copies, sync=True)):
                        if digest != entry["sha256"]:  # never publish a damaged export as the model
                            raise UserError(f"{checkpoint / rel} differs from its manifest's SHA-256; {target} was left as it was")
        self.engine.barrier()


def export_model(engine: Engine, target: Path, tokenizer: Any = None) -> None:
    """Write the engine's weights as an HF directory at ``target``, replacing it whole; call
    on every rank (ZeRO gathers the weights)."""
    target = Path(target)
    staging = target.with_name(f".{target.name}.tmp")
    if engine.is_main:
        shutil.rmtree(staging, ignore_errors=True)
    engine.barrier()

    def write() -> None:
        engine.export_hf(staging, tokenizer=tokenizer)
        if engine.is_main:
            atomic.replace_directory(staging, target)

    _on_every_rank(engine, write, cleanup=lambda: shutil.rmtree(staging, ignore_errors=True),
                   directory=target.parent, what=f"the model {target.name}", outcome=f"{target} was left as it was")
    engine.barrier()


def _on_every_rank(engine: Engine, write: Callable[[], None], *, cleanup: Callable[[], None], directory: Path,
                   what: str, needed: int | None = None, outcome: str) -> None:
    """Run ``write`` on every rank; if it fails on any, the main rank runs ``cleanup`` and every
    rank raises (the failing one its own error, a full disk as one line), so none waits forever."""
    error: BaseException | None = None
    try:
        with atomic.reporting_full_disk(directory, what, needed=needed, outcome=outcome):
            write()
    except Exception as err:  # noqa: BLE001 - re-raised below, after every rank knows
        error = err
    failed = engine.sum_across_ranks(torch.tensor([float(error is not None)], dtype=torch.float64)).item() > 0
    if not failed:
        return
    if engine.is_main:
        cleanup()
    if error is not None:
        raise error
    raise UserError(f"writing {what} failed on another rank (its error says why); {outcome}")
