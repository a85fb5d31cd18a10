"""Single-process training: eager forward and backward, AdamW or LAMB, bf16 autocast on CUDA, fp32 on CPU."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ... import kernels
from ...errors import UserError
from ...model.backends import Backends
from ...model.inputs import Batch
from ..config import EngineConfig
from ..host_memory import give_back_if_memory_is_low, keep_freed_host_memory
from ..schedule import build_scheduler
from .base import AccumulationWindow, Engine, TrainingDiverged
from .optim import build_optimizer


class LocalEngine(Engine):
    grads_set_to_none = True
    """Whether zeroing gradients frees them (a captured graph needs the same .grad tensors every replay)."""

    def __init__(self, model: nn.Module, config: EngineConfig, device: torch.device | None = None):
        self.config = config
        self.device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.type == "cpu":
            keep_freed_host_memory()  # a CPU step reallocates its large buffers every step
        self.module = model.to(self.device)
        # What runs the forward: the module itself, or its compiled wrapper (which shares its
        # parameters, so state dicts, checkpoints and exports keep using self.module).
        self.forward_module = torch.compile(self.module, dynamic=True) if config.compile else self.module
        self.optimizer = build_optimizer(model, config.optim, self.device, capturable=config.cuda_graphs)
        self.scheduler = build_scheduler(self.optimizer, config.warmup_steps, config.total_steps)
        self.autocast_dtype = torch.bfloat16 if config.use_bf16(self.device.type) else None
        self.window = AccumulationWindow(config.grad_accum_steps, self.device)
        self._global_step = 0
        self._grad_norm: torch.Tensor | None = None
        # The first steps whose update was skipped for a non-finite loss / for either cause (inf:
        # none yet), kept on the device so that no step reads them. float32, as the window's
        # poison is: step numbers are exact up to 2**24.
        self._first_skipped = torch.full((2,), math.inf, device=self.device)
        self._updates = torch.zeros((), device=self.device)  # the step count, as the device sees it
        self._skips_on_device = _skips_on_found_inf(self.optimizer)
        self._clips_in_step = _is_fused_adam(self.optimizer)
        # On a CPU the word-embedding gradient comes as sparse rows, added into dense buffers
        # kept from step to step (zeroing a resident buffer is cheap; a fresh one page-faults).
        # A GPU zero-fills 47 MB in microseconds, and torch.compile keeps the dense path.
        self._kept_grads: dict[nn.Parameter, KeptGradient] = {}
        if self._adds_sparse_gradients() and hasattr(self.module, "sparse_embedding_gradients"):
            self._kept_grads = {p: KeptGradient(p) for p in self.module.sparse_embedding_gradients()}

    def _fused_ops(self):
        """The fused ops' implementation for the update: the model's choice of Triton or torch
        (looked up each time: a benchmark may switch it), or the device's default."""
        backends = getattr(self.module, "backends", None)
        return backends.ops(self.device) if isinstance(backends, Backends) else kernels.implementation(self.device)

    def _adds_sparse_gradients(self) -> bool:
        """Whether the word-embedding gradient should arrive as sparse rows (see :class:`KeptGradient`)."""
        return self.device.type == "cpu" and not self.config.compile

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None)

    def forward_backward(self, batch: Batch) -> Any:
        batch = batch.to(self.device, non_blocking=self.device.type == "cuda")
        with self._autocast():
            outputs = self.forward_module(batch.inputs, **batch.targets)
        self._backward(outputs.loss)
        return outputs

    def _backward(self, loss: torch.Tensor) -> None:
        # The engine owns accumulation: each micro-batch contributes 1/N of the window's gradient.
        steps = self.config.grad_accum_steps
        (loss if steps == 1 else loss / steps).backward()  # a division is two launches

    def train_step(self, batch: Batch) -> Any:
        outputs = self.forward_backward(batch)
        if self.window.add(outputs.loss):
            self._update()
        give_back_if_memory_is_low()  # what the CPU heap keeps must not get the run killed
        return outputs

    @torch.no_grad()
    def forward(self, batch: Batch) -> Any:
        was_training = self.module.training
        self.module.eval()
        try:
            batch = batch.to(self.device, non_blocking=self.device.type == "cuda")
            with self._autocast():
                return self.forward_module(batch.inputs, **batch.targets)
        finally:
            self.module.train(was_training)

    def _update(self) -> None:
        self._device_update()
        self._host_update()

    def _device_update(self) -> None:
        """Clip, step or skip, zero the gradients: device work only, taking from the host no value
        that changes between steps (the step number is ``_updates``; a graphed optimizer reads its
        learning rate from a tensor), so that a CUDA graph can replay it (:class:`GraphedEngine`)."""
        max_norm = self.config.optim.grad_clip if self.config.optim.grad_clip > 0 else math.inf
        if not self._skips_on_device:
            self._grad_norm = torch.nn.utils.clip_grad_norm_(self.module.parameters(), max_norm)
            self._check_before_update((self.window.poison + self._grad_norm * 0).isnan())
            self.window.reset()
        else:
            if self._clips_in_step:
                # torch's fused AdamW divides every gradient by ``grad_scale`` as it reads it (AMP's
                # unscaling): clipping by the same divisor there saves a pass over all gradients.
                grads = [
                    kept.touched_rows() if (kept := self._kept_grads.get(p)) else p.grad
                    for p in self.module.parameters() if p.grad is not None
                ]
                norms = torch.stack(torch._foreach_norm(grads)) if grads else torch.zeros(1, device=self.device)
            else:
                norms = torch.nn.utils.clip_grad_norm_(self.module.parameters(), max_norm).reshape(1)
            # One launch on the Triton path: the total norm, the clipping divisor, the skip flag
            # (the optimizer leaves weights, moments and step count alone when found_inf is 1: the
            # mechanism AMP's grad scaler uses; nothing is read on the host), the step count and
            # the first skipped steps; the window's poison is consumed.
            self._grad_norm, grad_scale, self.optimizer.found_inf = self._fused_ops().update_verdict(
                norms, self.window.poison, self._updates, self._first_skipped, max_norm
            )
            if self._clips_in_step and max_norm < math.inf:
                self.optimizer.grad_scale = grad_scale
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=self.grads_set_to_none)

    def _host_update(self) -> None:
        """What follows :meth:`_device_update` on the host: the schedule, the kept gradients, the count."""
        self.scheduler.step()
        for kept in self._kept_grads.values():
            kept.clear()
        self._global_step += 1

    def raise_if_diverged(self) -> None:
        loss_step, any_step = self._first_skipped.tolist()
        if any_step < math.inf:
            what = "loss" if loss_step == any_step else "gradient norm"
            raise TrainingDiverged(f"non-finite {what} at step {int(any_step)}; the optimizer did not step on it")

    @property
    def global_step(self) -> int:
        return self._global_step

    @property
    def grad_norm(self) -> float | None:
        return None if self._grad_norm is None else float(self._grad_norm)

    def get_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])  # a tensor when graphed: read at log time only

    def save_checkpoint(self, directory: str | os.PathLike, client_state: dict[str, Any]) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {
            "module": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "micro_step": self.window.micro_step,
            "global_step": self._global_step,
            "grad_norm": self.grad_norm,
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
        self.window.micro_step = state["micro_step"]
        self._global_step = state["global_step"]
        self._updates.fill_(self._global_step)
        self._grad_norm = None if state["grad_norm"] is None else torch.tensor(state["grad_norm"], device=self.device)
        return state["client_state"]

    def export_hf(self, out_dir: str | os.PathLike, tokenizer: Any = None) -> None:
        self.module.save_pretrained(out_dir, tokenizer=tokenizer)


class KeptGradient:
    """A parameter's dense ``.grad``, kept from step to step, into which the backward adds sparse rows.

    Only the rows the step's gradients touched are non-zero, so clearing them (instead of all
    47 MB of a [30522, 384] table) and taking the norm over them (instead of reading it all)
    costs the batch's size, not the vocabulary's: together about 5 ms of a 0.22 s CoLA step
    on a 2-core CPU. A dense gradient arriving instead (nothing in fastbert sends one) makes
    both fall back to the whole buffer.
    """

    def __init__(self, param: nn.Parameter):
        self.param = param
        self.buffer = torch.zeros_like(param)
        self._rows: list[torch.Tensor] = []
        self._dense = False
        param.register_hook(self._record)
        param.grad = self.buffer

    def _record(self, grad: torch.Tensor) -> None:
        if self.param.grad is not self.buffer:
            return  # another engine has since taken this parameter over; its own KeptGradient records
        if grad.is_sparse:
            self._rows.append(grad._indices()[0])
        else:
            self._dense = True

    def _row_index(self) -> torch.Tensor:
        """Every recorded row index (repeats included), concatenated once per step."""
        if len(self._rows) > 1:
            self._rows = [torch.cat(self._rows)]
        return self._rows[0]

    def touched_rows(self) -> torch.Tensor:
        """The buffer's rows that may be non-zero (each once): all of it after a dense gradient."""
        if self._dense or not self._rows:
            return self.buffer
        return self.buffer.index_select(0, torch.unique(self._row_index()))

    def clear(self) -> None:
        """Zero what the step wrote and hand the buffer back as ``.grad`` for the next one."""
        if self._dense:
            self.buffer.zero_()
        elif self._rows:
            self.buffer.index_fill_(0, self._row_index(), 0.0)
        self._rows.clear()
        self._dense = False
        self.param.grad = self.buffer


def _is_fused_adam(optimizer: torch.optim.Optimizer) -> bool:
    return isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW) and bool(optimizer.defaults.get("fused"))


def _skips_on_found_inf(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer.step()`` honours ``optimizer.found_inf`` (torch's fused Adam/AdamW
    do, as does fastbert's LAMB); other optimizers get the host check before each update."""
    return _is_fused_adam(optimizer) or bool(getattr(optimizer, "skips_on_found_inf", False))
