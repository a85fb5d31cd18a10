"""What the training loop needs from an engine: one training step, an evaluation forward, state.

``train_step(batch)`` runs one micro-batch forward and backward and, when the micro-batch
closes an accumulation window, the update (clip, optimizer, schedule). A window whose loss
(or gradient norm) was NaN or infinite never reaches the weights: engines that can skip
the update on the device do so without reading anything on the host and remember the
step; :meth:`Engine.raise_if_diverged`, which the loop calls when it logs or checkpoints
anyway, then raises :class:`TrainingDiverged` with that step. Engines that cannot skip
on the device check before stepping (one host read per update). ``forward(batch)`` is
inference for evaluation. How forward and backward run (eagerly, replayed from a CUDA graph, inside
DeepSpeed) is the engine's business, not the loop's.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import nn

from ...errors import UserError
from ...model.inputs import Batch


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; no optimizer step was taken on it."""


class Engine(ABC):
    module: nn.Module
    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @abstractmethod
    def train_step(self, batch: Batch) -> Any:
        """Forward and backward of one micro-batch, and the update at an accumulation boundary;
        returns the model's outputs (the loss and whatever the metrics read)."""

    @abstractmethod
    def forward(self, batch: Batch) -> Any:
        """The model's outputs for ``batch`` in eval mode, without gradients."""

    @property
    @abstractmethod
    def global_step(self) -> int:
        """Optimizer steps taken so far."""

    @property
    @abstractmethod
    def grad_norm(self) -> float | None:
        """Global gradient norm (before clipping) of the last optimizer step."""

    @abstractmethod
    def get_lr(self) -> float: ...

    @abstractmethod
    def save_checkpoint(self, directory: str | os.PathLike, client_state: dict[str, Any]) -> None:
        """Write model, optimizer and schedule state; call on every rank."""

    @abstractmethod
    def load_checkpoint(self, directory: str | os.PathLike) -> dict[str, Any]:
        """Restore what :meth:`save_checkpoint` wrote; returns its client_state."""

    @abstractmethod
    def export_hf(self, out_dir: str | os.PathLike, tokenizer: Any = None) -> None:
        """Write a transformers-loadable fp32 model directory (on the main rank); call on every rank."""

    def barrier(self) -> None:
        if self.world_size > 1:
            torch.distributed.barrier()

    def sum_across_ranks(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum of a float64 tensor over all ranks (identity on one rank)."""
        if self.world_size == 1:
            return values
        reduced = values.to(self.device, torch.float64)
        torch.distributed.all_reduce(reduced)
        return reduced.cpu()

    def raise_if_diverged(self) -> None:
        """Raise :class:`TrainingDiverged` if an update was skipped for a non-finite loss since the
        run started (a host read: call it where the host waits for the device anyway)."""

    def _check_before_update(self, nonfinite: torch.Tensor) -> None:
        """A host read per update, for engines that cannot skip on the device: a non-finite loss
        on any rank stops every rank before it steps."""
        if self.sum_across_ranks(nonfinite.double().reshape(1)).item() > 0:
            raise TrainingDiverged(f"non-finite loss at step {self.global_step + 1}; the optimizer did not step on it")


class AccumulationWindow:
    """Counts micro-batches and remembers whether any loss of the current window was non-finite.

    The memory is one float on the device, ``poison``: 0 while every loss was finite, NaN
    after one was not (``loss * 0`` is NaN exactly for a NaN or infinite loss, and NaN stays NaN
    under addition). Two launches a micro-batch, where ``isfinite`` and a logical or take six.
    """

    def __init__(self, steps: int, device: torch.device):
        self.steps = steps
        self.micro_step = 0
        self.poison = torch.zeros((), dtype=torch.float32, device=device)

    def add(self, loss: torch.Tensor) -> bool:
        """Record one micro-batch's loss (on the device, no sync); whether it closes the window."""
        self.record(loss)
        return self.advance()

    def record(self, loss: torch.Tensor) -> None:
        """The device half of :meth:`add` (what a CUDA graph captures)."""
        self.poison += loss.detach() * 0

    def advance(self) -> bool:
        """The host half of :meth:`add`: count the micro-batch; whether it closed the window."""
        self.micro_step += 1
        return self.micro_step % self.steps == 0

    @property
    def closes_next(self) -> bool:
        """Whether the next micro-batch closes the window."""
        return (self.micro_step + 1) % self.steps == 0

    @property
    def nonfinite(self) -> torch.Tensor:
        """Whether a loss of the window was NaN or infinite (a bool on the device)."""
        return self.poison.isnan()

    def reset(self) -> None:
        self.poison.zero_()
