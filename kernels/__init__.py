"""fastbert.kernels: the fused ops BERT's encoder and its training step call, and nothing else.

Each op has one public function here; it dispatches to a Triton kernel or to the torch
reference in :mod:`fastbert.kernels.reference` (see :mod:`fastbert.kernels.backend`).
This package knows nothing of BERT and imports only torch and triton.
"""

from __future__ import annotations

import torch

from . import reference
from .backend import BACKENDS, ENV_VAR, auto_backend, requested_backend, resolve_backend
from .dropout import dropout

__all__ = [
    "embedding_layer_norm", "bias_gelu", "layer_norm", "dropout", "grad_sums_block", "update_verdict",
    "implementation", "auto_backend", "requested_backend", "resolve_backend", "BACKENDS", "ENV_VAR",
]


def implementation(device: torch.device, backend: str | None = None):
    """The module whose ``embedding_layer_norm``/``bias_gelu``/``layer_norm`` run for tensors on
    ``device``: the Triton ops or :mod:`.reference`. Callers on a hot path (a model's layers)
    look it up once instead of resolving the backend per call."""
    if resolve_backend(device, backend) != "triton":
        return reference
    # Imported lazily: triton's decorators read TRITON_INTERPRET at import time, and a
    # CPU-only user never pays for importing triton.
    from . import triton_ops

    return triton_ops


def embedding_layer_norm(
    input_ids: torch.Tensor,
    token_type_ids: torch.Tensor,
    position_ids: torch.Tensor,
    word_embeddings: torch.Tensor,
    token_type_embeddings: torch.Tensor,
    position_embeddings: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float,
    dropout_p: float = 0.0,
    *,
    seed: torch.Tensor | None = None,
    grad_sums: torch.Tensor | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """dropout(LayerNorm(word[ids] + token_type[tt] + position[pos])); ids of any shape.
    ``seed``: the Triton kernel's dropout seed (one int64 on the device), else drawn per call.
    ``grad_sums``: as for :func:`layer_norm`; the weight, bias and token-type table gradients
    ((2 + token types) times the hidden size)."""
    return implementation(word_embeddings.device, backend).embedding_layer_norm(
        input_ids, token_type_ids, position_ids, word_embeddings, token_type_embeddings,
        position_embeddings, weight, bias, eps, dropout_p, seed, grad_sums,
    )


def bias_gelu(
    x: torch.Tensor, bias: torch.Tensor, approximate: str = "none", *,
    grad_sums: torch.Tensor | None = None, backend: str | None = None,
) -> torch.Tensor:
    """GELU(x + bias), exact erf form unless ``approximate="tanh"``. ``grad_sums``: see :func:`layer_norm`."""
    return implementation(x.device, backend).bias_gelu(x, bias, approximate, grad_sums)


def layer_norm(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float,
    residual: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    x_bias: torch.Tensor | None = None,
    *,
    seed: torch.Tensor | None = None,
    grad_sums: torch.Tensor | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """LayerNorm(dropout(x + x_bias) + residual). ``seed``: as for :func:`embedding_layer_norm`.
    ``grad_sums``: for the Triton kernels, a zero-filled fp32 slice of :func:`grad_sums_block`
    (weight, bias and x_bias gradients, hidden size each), which the backward adds the
    parameters' gradients into instead of reducing partial sums in a second launch; the
    torch reference ignores it."""
    return implementation(x.device, backend).layer_norm(x, weight, bias, eps, residual, dropout_p, x_bias, seed, grad_sums)


def grad_sums_block(numel: int, device: torch.device, *, backend: str | None = None) -> torch.Tensor | None:
    """One forward's zero-filled buffer for the Triton ops' ``grad_sums`` (one launch), or
    None where the backend does not use one (torch) or reductions must be deterministic."""
    return implementation(device, backend).grad_sums_block(numel, device)


def update_verdict(
    norms: torch.Tensor,
    window_poison: torch.Tensor,
    updates: torch.Tensor,
    first_skipped: torch.Tensor,
    max_norm: float,
    *,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What an optimizer update needs from its gradient norms, computed on the device without
    a host read: ``(total_norm, grad_scale, found_inf)``, 0-dim fp32 tensors.

    ``norms``: the per-tensor gradient norms (or the one total norm); ``total_norm`` is their
    2-norm; ``grad_scale`` = max(1, (total_norm + 1e-6) / max_norm), the divisor that clips
    them as ``clip_grad_norm_`` would (1 for ``max_norm`` inf); ``found_inf`` 1 when
    ``window_poison`` (0, or NaN after a non-finite loss) or the norm is non-finite, else 0.
    In place: ``updates`` (the step count) goes up by one; ``first_skipped`` (first step
    skipped for a non-finite loss, for either cause; inf for none) takes this step where it
    applies; ``window_poison`` is consumed (zeroed) for the next window."""
    return implementation(norms.device, backend).update_verdict(norms, window_poison, updates, first_skipped, max_norm)


def _hand_over_to_installed_kernels() -> None:
    """Leave the top-level name ``kernels`` to the PyPI package of that name, when it is installed.

    From a source checkout's root (``python -m pytest``, the benchmarks, ``python -m fastbert``)
    this folder is importable as a top-level ``kernels`` too, and then shadows Hugging Face's
    ``kernels`` package, which transformers >= 5.25 requires and imports. fastbert's own name
    for this package is ``fastbert.kernels``; under the bare name the installed package answers.
    """
    import importlib.machinery
    import importlib.util
    import os
    import sys

    checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    elsewhere = [p for p in sys.path if os.path.abspath(p or os.curdir) != checkout]
    spec = importlib.machinery.PathFinder.find_spec("kernels", elsewhere)
    if spec is None or spec.loader is None:
        return  # nothing to shadow: this folder may keep the name
    for name in [n for n in sys.modules if n == "kernels" or n.startswith("kernels.")]:
        del sys.modules[name]  # this folder's submodules too, so none passes for one of the package's
    module = importlib.util.module_from_spec(spec)
    sys.modules["kernels"] = module  # the import statement that ran this file returns sys.modules["kernels"]
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["kernels"]
        raise


# Last, not first: the relative imports above must resolve to this folder before the name is handed over.
if __name__ == "kernels":
    _hand_over_to_installed_kernels()
