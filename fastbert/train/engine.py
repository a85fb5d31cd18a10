"""Training engines: one interface over a single-process loop and DeepSpeed ZeRO 0-3.

The training loop only ever calls ``engine(**batch)``, ``engine.backward(loss)`` and
``engine.step()`` per micro-batch, exactly as with DeepSpeed: the engine owns gradient
accumulation (it scales the loss by 1/accumulation itself), clipping, the optimizer and
the learning-rate schedule. :func:`build_engine` picks the DeepSpeed adapter when a
DeepSpeed config is given, the local engine otherwise.
"""

from __future__ import annotations

import logging
import math
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import UserError
from .lamb import Lamb
from .schedule import build_scheduler, parameter_groups

logger = logging.getLogger(__name__)

OPTIMIZERS = ("adamw", "lamb")
FUSED_ADAMW_DEVICES = ("cuda", "cpu")


@dataclass
class EngineConfig:
    """Optimisation settings common to every engine."""

    lr: float = 1e-4
    """Peak learning rate, reached at the end of warmup."""
    weight_decay: float = 0.01
    """Decoupled weight decay on matrices (never on biases or LayerNorm weights)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam/LAMB moment decay rates."""
    eps: float = 1e-6
    """Adam/LAMB denominator epsilon."""
    optimizer: str = "adamw"
    """"adamw" (torch, fused on CUDA and CPU) or "lamb" (fastbert.train.lamb)."""
    total_steps: int = 1000
    """Optimizer steps of the whole run; the learning rate decays linearly to 0 there."""
    warmup_steps: int | None = None
    """Steps of linear warmup; when None, ``warmup_ratio * total_steps``."""
    warmup_ratio: float = 0.01
    """Fraction of total_steps spent warming up when warmup_steps is None."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value (0 disables clipping)."""
    grad_accum_steps: int = 1
    """Micro-batches per optimizer step on each rank."""
    micro_batch_size: int = 8
    """Sequences per micro-batch on each rank."""
    bf16: bool | None = None
    """bf16 autocast (local) / bf16 training (DeepSpeed); None means on CUDA only."""
    deepspeed_config: dict[str, Any] | None = field(default=None, repr=False)
    """A DeepSpeed config dict; None trains in this process without DeepSpeed."""
    seed: int = 0
    """Seed for parameter init and dropout (set before the model is built)."""
    cuda_graphs: bool = False
    """Replay each micro-batch's forward + backward from a CUDA graph (local engine on CUDA;
    see fastbert.train.cuda_graphs). Batches are padded to micro_batch_size x static_seq_len."""
    static_seq_len: int | None = None
    """Row length of CUDA-graph batches; None: the longest sequence rounded up to 64."""

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"optimizer {self.optimizer!r} is unknown; expected one of {', '.join(OPTIMIZERS)}")
        for name in ("total_steps", "grad_accum_steps", "micro_batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise UserError(f"lr must be positive, got {self.lr}")
        if self.cuda_graphs and self.deepspeed_config is not None:
            raise UserError("cuda_graphs works with the local engine only; DeepSpeed runs its own step")

    @property
    def resolved_warmup_steps(self) -> int:
        if self.warmup_steps is not None:
            return self.warmup_steps
        return round(self.warmup_ratio * self.total_steps)

    def use_bf16(self, device: torch.device) -> bool:
        return device.type == "cuda" if self.bf16 is None else self.bf16


def build_optimizer(model: nn.Module, config: EngineConfig, device: torch.device) -> torch.optim.Optimizer:
    groups = parameter_groups(model, config.weight_decay)
    if config.optimizer == "lamb":
        return Lamb(groups, lr=config.lr, betas=config.betas, eps=config.eps)
    # torch's fused AdamW (CUDA and CPU) is one kernel over all parameters: on a CPU it is
    # about 4x faster than foreach, which matters when the optimizer is a third of a small
    # model's step. transformers' Trainer uses it by default too. Elsewhere torch picks.
    return torch.optim.AdamW(
        groups, lr=config.lr, betas=config.betas, eps=config.eps, fused=True if device.type in FUSED_ADAMW_DEVICES else None
    )


class Engine(ABC):
    """What the training loop needs from an engine; see the module docstring."""

    module: nn.Module
    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @abstractmethod
    def __call__(self, **batch: Any) -> Any:
        """Forward one micro-batch (tensors are moved to the engine's device)."""

    @abstractmethod
    def backward(self, loss: torch.Tensor) -> None: ...

    @abstractmethod
    def step(self) -> None:
        """Count a micro-batch; at an accumulation boundary clip, update, advance the schedule, zero grads."""

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

    def to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        non_blocking = self.device.type == "cuda"
        return {k: v.to(self.device, non_blocking=non_blocking) if torch.is_tensor(v) else v for k, v in batch.items()}


class LocalEngine(Engine):
    """Single-process training: AdamW or LAMB, bf16 autocast on CUDA, fp32 on CPU."""

    def __init__(self, model: nn.Module, config: EngineConfig, device: torch.device | None = None):
        self.config = config
        self.device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.module = model.to(self.device)
        self.optimizer = build_optimizer(model, config, self.device)
        self.scheduler = build_scheduler(self.optimizer, config.resolved_warmup_steps, config.total_steps)
        self.autocast_dtype = torch.bfloat16 if config.use_bf16(self.device) else None
        self._micro_step = 0
        self._global_step = 0
        self._grad_norm: float | None = None
        self._graphed = None
        self._graph_outputs = None
        if config.cuda_graphs:
            from .cuda_graphs import GraphedForwardBackward

            self._graphed = GraphedForwardBackward(
                self.module, self.autocast_dtype, 1.0 / config.grad_accum_steps,
                rows=config.micro_batch_size, seq_len=config.static_seq_len,
                pad_id=getattr(getattr(model, "config", None), "pad_token_id", 0) or 0,
            )

    def __call__(self, **batch: Any) -> Any:
        if self._graphed is not None and self.module.training and torch.is_grad_enabled():
            # Forward and backward both ran in the replay; backward() below only checks.
            # (Evaluation, in eval mode or under no_grad, runs eagerly.)
            self._graph_outputs = self._graphed(batch)
            return self._graph_outputs
        batch = self.to_device(batch)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            return self.module(**batch)

    def backward(self, loss: torch.Tensor) -> None:
        if self._graphed is not None:
            if self._graph_outputs is None or loss is not self._graph_outputs.loss:
                raise UserError("with cuda_graphs, backward() takes the loss of the last engine(**batch) call unchanged")
            self._graph_outputs = None
            return
        (loss / self.config.grad_accum_steps).backward()

    def step(self) -> None:
        self._micro_step += 1
        if self._micro_step % self.config.grad_accum_steps:
            return
        max_norm = self.config.grad_clip if self.config.grad_clip > 0 else math.inf
        norm = torch.nn.utils.clip_grad_norm_(self.module.parameters(), max_norm)
        self._grad_norm = float(norm)
        if not math.isfinite(self._grad_norm):
            raise UserError(f"non-finite gradient norm ({self._grad_norm}) at step {self._global_step + 1}; the update was skipped")
        self.optimizer.step()
        self.scheduler.step()
        # A captured graph accumulates into the same .grad tensors on every replay.
        self.optimizer.zero_grad(set_to_none=self._graphed is None)
        self._global_step += 1

    @property
    def global_step(self) -> int:
        return self._global_step

    @property
    def grad_norm(self) -> float | None:
        return self._grad_norm

    def get_lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def save_checkpoint(self, directory: str | os.PathLike, client_state: dict[str, Any]) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {
            "module": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "micro_step": self._micro_step,
            "global_step": self._global_step,
            "grad_norm": self._grad_norm,
            "client_state": client_state,
        }
        torch.save(state, directory / "engine.pt")

    def load_checkpoint(self, directory: str | os.PathLike) -> dict[str, Any]:
        path = Path(directory) / "engine.pt"
        if not path.is_file():
            raise UserError(f"{path}: no local-engine checkpoint here (was it written by DeepSpeed?)")
        state = torch.load(path, map_location=self.device, weights_only=False)
        self.module.load_state_dict(state["module"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self._micro_step = state["micro_step"]
        self._global_step = state["global_step"]
        self._grad_norm = state["grad_norm"]
        return state["client_state"]

    def export_hf(self, out_dir: str | os.PathLike, tokenizer: Any = None) -> None:
        self.module.save_pretrained(out_dir, tokenizer=tokenizer)


def build_engine(model: nn.Module, config: EngineConfig) -> Engine:
    """A DeepSpeed engine when ``config.deepspeed_config`` is set, a local one otherwise."""
    if config.deepspeed_config is None:
        return LocalEngine(model, config)
    from .deepspeed_engine import DeepSpeedEngineAdapter

    return DeepSpeedEngineAdapter(model, config)
