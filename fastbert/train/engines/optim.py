"""The optimizer every engine builds from an :class:`OptimizerConfig` (the schedule is :mod:`..schedule`)."""

from __future__ import annotations

import torch
from torch import nn

from ..config import OptimizerConfig
from ..lamb import Lamb
from ..schedule import parameter_groups

FUSED_ADAMW_DEVICES = ("cuda", "cpu")


def build_optimizer(model: nn.Module, optim: OptimizerConfig, device: torch.device, capturable: bool = False) -> torch.optim.Optimizer:
    """``capturable``: a step that a CUDA graph can record and replay (learning rates on the device)."""
    groups = parameter_groups(model, optim.weight_decay)
    if optim.optimizer == "lamb":
        optimizer = Lamb(groups, lr=optim.lr, betas=optim.betas, eps=optim.eps)
    else:
        # torch's fused AdamW (CUDA and CPU) is one kernel over all parameters: on a CPU it is
        # about 4x faster than foreach, which matters when the optimizer is a third of a small
        # model's step. transformers' Trainer uses it by default too. Elsewhere torch picks.
        optimizer = torch.optim.AdamW(
            groups, lr=optim.lr, betas=optim.betas, eps=optim.eps,
            fused=True if device.type in FUSED_ADAMW_DEVICES else None, capturable=capturable,
        )
    if capturable:
        learning_rates_on_device(optimizer, device)
    return optimizer


def learning_rates_on_device(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Make each group's learning rate a 0-dim fp32 tensor on ``device``, which the schedule fills
    in place every step: a replayed graph then reads this step's value, where a Python float would
    stay frozen at the value it was captured with. ``initial_lr`` stays a float, so that the
    schedule multiplies floats on the host (a tensor there costs launches, and torch's LambdaLR
    would multiply on the device every step). Call it again after ``load_state_dict``, which puts
    back whatever the checkpoint held."""
    for group in optimizer.param_groups:
        value = float(group["lr"])
        if isinstance(group.get("initial_lr"), torch.Tensor):
            group["initial_lr"] = float(group["initial_lr"])
        group.setdefault("initial_lr", value)
        group["lr"] = torch.tensor(value, dtype=torch.float32, device=device)
