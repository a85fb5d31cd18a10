"""Training engines: how one training step runs. The loop sees only :class:`Engine`.

* :class:`LocalEngine`: one process, eager forward and backward;
* :class:`GraphedEngine`: the local engine with each micro-batch's whole step (the update included)
  replayed from a CUDA graph;
* ``DeepSpeedEngine`` (:mod:`.deepspeed_engine`, imported only when used): ZeRO 0-3 over
  ``deepspeed.initialize``, also what a multi-process launch without a DeepSpeed config runs.

:func:`build_engine` picks one from an :class:`~fastbert.train.config.EngineConfig`.
"""

from __future__ import annotations

import torch
from torch import nn

from ...errors import UserError
from ..config import EngineConfig
from ..launch import discover_launch
from .base import Engine, TrainingDiverged
from .graphed import GraphedEngine
from .local import LocalEngine

__all__ = ["Engine", "LocalEngine", "GraphedEngine", "TrainingDiverged", "build_engine"]


def build_engine(model: nn.Module, config: EngineConfig) -> Engine:
    """DeepSpeed when a DeepSpeed config is given or a launcher started several processes
    (torchrun/SLURM without one get ZeRO stage 0, i.e. data parallelism); else a local engine
    on this process's GPU."""
    launch = discover_launch()
    if config.deepspeed_config is not None or launch.world_size > 1:
        if config.cuda_graphs:
            raise UserError("cuda_graphs works with the local engine only; DeepSpeed runs its own step")
        from .deepspeed_engine import DeepSpeedEngine

        return DeepSpeedEngine(model, config)
    device = torch.device("cuda", launch.cuda_index(torch.cuda.device_count())) if torch.cuda.is_available() else torch.device("cpu")
    return (GraphedEngine if config.cuda_graphs else LocalEngine)(model, config, device)
