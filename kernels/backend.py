"""Which implementation of the fused ops runs: Triton kernels or the torch references.

``FASTBERT_KERNELS=auto|triton|torch`` (or an explicit ``backend``) chooses.
``auto`` runs Triton on CUDA tensors and the torch references elsewhere; ``triton`` forces
Triton, which on a CPU works only under ``TRITON_INTERPRET=1``. The choice is logged once.
"""

from __future__ import annotations

import logging
import os

import torch

BACKENDS = ("auto", "triton", "torch")
ENV_VAR = "FASTBERT_KERNELS"

logger = logging.getLogger("fastbert.kernels")
_logged: set[tuple[str, str]] = set()


def requested_backend(override: str | None = None) -> str:
    """The backend asked for: an explicit override other than ``auto``, else the
    environment, else ``auto`` (so FASTBERT_KERNELS can steer a model configured ``auto``)."""
    name, source = (override or "auto").strip().lower(), "backend"
    if name == "auto":
        name, source = (os.environ.get(ENV_VAR) or "auto").strip().lower(), ENV_VAR
    if name not in BACKENDS:
        raise ValueError(f"{source}={name!r} is not a kernel backend; expected one of {', '.join(BACKENDS)}")
    return name


def resolve_backend(device: torch.device, override: str | None = None) -> str:
    """The backend that will actually run for tensors on ``device``: ``triton`` or ``torch``."""
    name = requested_backend(override)
    if name == "auto":
        name = auto_backend(device)
    elif name == "triton":
        if not _triton_importable():
            raise RuntimeError(f"{ENV_VAR}=triton but triton is not installed")
        if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            raise RuntimeError(
                f"{ENV_VAR}=triton on a {device.type} tensor needs TRITON_INTERPRET=1 "
                "(set before fastbert is imported)"
            )
    key = (name, device.type)
    if key not in _logged:
        _logged.add(key)
        logger.info("fused kernels: %s backend on %s", name, device.type)
    return name


def auto_backend(device: torch.device) -> str:
    """What ``auto`` means for tensors on ``device``, without consulting the environment."""
    return "triton" if device.type == "cuda" and _triton_importable() else "torch"


def _triton_importable() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True
