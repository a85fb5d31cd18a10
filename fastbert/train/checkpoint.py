"""Atomic training checkpoints: engine state, per-rank RNG streams, trainer state, an HF export.

Layout under ``root``::

    step_00000300/            complete checkpoints only (written as .tmp-step_00000300, then renamed)
      engine/                 the engine's own files (local engine.pt, or DeepSpeed's tag folder)
      rng_rank0.pt ...        python, numpy, torch (and CUDA) RNG states of each rank
      trainer_state.json      step, data position, world size: what the loop resumes from
      hf/                     config.json + model.safetensors (+ tokenizer) that transformers loads
    latest                    name of the newest complete checkpoint, written last

Every rank calls :meth:`CheckpointManager.save`; a shared filesystem is assumed.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import atomic
from ..errors import UserError
from .engines import Engine

logger = logging.getLogger(__name__)

LATEST = "latest"
TRAINER_STATE = "trainer_state.json"


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


class CheckpointManager:
    def __init__(self, root: str | os.PathLike, engine: Engine):
        self.root = Path(root)
        self.engine = engine

    def save(self, step: int, trainer_state: dict[str, Any], tokenizer: Any = None) -> Path:
        """Write checkpoint ``step`` on every rank; returns its final path."""
        final = self.root / f"step_{step:08d}"
        tmp = self.root / f".tmp-{final.name}"
        engine = self.engine
        if engine.is_main:
            self.root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)  # left by a run killed while saving
            tmp.mkdir()
        engine.barrier()
        state = {**trainer_state, "step": step, "world_size": engine.world_size}
        engine.save_checkpoint(tmp / "engine", client_state=state)
        torch.save(capture_rng_state(), tmp / f"rng_rank{engine.rank}.pt")
        engine.export_hf(tmp / "hf", tokenizer=tokenizer)
        if engine.is_main:
            (tmp / TRAINER_STATE).write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        engine.barrier()
        if engine.is_main:
            atomic.replace_directory(tmp, final)
            atomic.write_text(self.root / LATEST, final.name + "\n")
        engine.barrier()
        return final

    def latest(self) -> Path | None:
        pointer = self.root / LATEST
        if not pointer.is_file():
            return None
        path = self.root / pointer.read_text().strip()
        if not (path / TRAINER_STATE).is_file():
            raise UserError(f"{pointer}: points at {path.name}, which is not a complete checkpoint")
        return path

    def load(self, path: Path) -> dict[str, Any]:
        """Restore engine and this rank's RNG streams from ``path``; returns the trainer state."""
        state = self.engine.load_checkpoint(path / "engine")
        rng_file = path / f"rng_rank{self.engine.rank}.pt"
        if state.get("world_size") != self.engine.world_size or not rng_file.is_file():
            # The data order does not depend on the world size; only dropout streams change.
            logger.warning(
                "%s was written by %s ranks, resuming on %d: RNG streams are reseeded, so dropout differs from an uninterrupted run",
                path, state.get("world_size"), self.engine.world_size,
            )
            torch.manual_seed(state["step"] * 1_000_003 + self.engine.rank)
        else:
            restore_rng_state(torch.load(rng_file, weights_only=False))
        return state
