"""Learning-rate schedule and optimizer parameter groups shared by every engine."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def linear_warmup_decay(warmup_steps: int, total_steps: int):
    """Multiplier for LambdaLR: linear warmup to 1, then linear decay to 0 at ``total_steps``.

    The warmup counts from ``(step + 1) / warmup`` so that the very first update is not
    wasted on a zero learning rate; the decay reaches 0 only after the last step.
    """
    warmup_steps = max(0, min(warmup_steps, total_steps))

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return multiplier


def build_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup_decay(warmup_steps, total_steps))


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: matrices decay; biases and LayerNorm weights (all 1-d tensors) do not."""
    decay, no_decay = [], []
    for param in _unique_trainable(model.parameters()):
        (decay if param.ndim >= 2 else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _unique_trainable(params: Iterable[nn.Parameter]) -> list[nn.Parameter]:
    # Tied weights (the MLM decoder and the word embeddings) appear once.
    seen: set[int] = set()
    out = []
    for param in params:
        if param.requires_grad and id(param) not in seen:
            seen.add(id(param))
            out.append(param)
    return out
