"""The fused ops' dtype policy under mixed precision, shared by both backends.

Every fused op computes in fp32 (fp64 stays fp64) and returns activations in one dtype:
the autocast dtype inside an autocast region for the tensors' device, else the input
activation's own dtype. Under ``torch.autocast`` the residual stream between layers is
therefore bf16/fp16, as the matmuls that produce and consume it are: each LayerNorm
output costs half the memory traffic and needs no cast before the next linear, while
the parameters (fp32 master weights) receive gradients in their own dtype.
"""

from __future__ import annotations

import torch

# What autocast itself casts: fp64 tensors are left alone.
_AUTOCAST_ELIGIBLE = (torch.float32, torch.float16, torch.bfloat16)


def activation_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a fused op returns for activations (or an embedding table) ``x``."""
    device = x.device.type
    if x.dtype in _AUTOCAST_ELIGIBLE and torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return x.dtype
