"""Torch reference implementations of the fused ops.

These are permanent: they are the CPU path and the oracle the Triton kernels are tested
against. Each function has exactly the signature of its public counterpart in
``fastbert.kernels`` and returns the dtype :mod:`.precision` prescribes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .dropout import dropout
from .precision import activation_dtype


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
    seed: torch.Tensor | None = None,
    grad_sums: torch.Tensor | None = None,
) -> torch.Tensor:
    """dropout(LayerNorm(word[ids] + token_type[tt] + position[pos])) for ids of any shape.
    ``seed`` and ``grad_sums`` are the Triton kernels' (see :func:`dropout_seeds`); here torch's
    generator draws the mask and autograd makes the parameters' gradients."""
    summed = (
        F.embedding(input_ids, word_embeddings)
        + F.embedding(token_type_ids, token_type_embeddings)
        + F.embedding(position_ids, position_embeddings)
    )
    out = F.layer_norm(summed, (summed.shape[-1],), weight, bias, eps)
    return dropout(out, dropout_p).to(activation_dtype(word_embeddings))


def bias_gelu(
    x: torch.Tensor, bias: torch.Tensor, approximate: str = "none", grad_sums: torch.Tensor | None = None
) -> torch.Tensor:
    """GELU(x + bias); ``approximate="none"`` is BERT's exact erf form, ``"tanh"`` the approximation.
    ``grad_sums`` is the Triton kernel's; autograd makes the bias's gradient here."""
    return F.gelu(x + bias, approximate=approximate).to(activation_dtype(x))


def layer_norm(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float,
    residual: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    x_bias: torch.Tensor | None = None,
    seed: torch.Tensor | None = None,
    grad_sums: torch.Tensor | None = None,
) -> torch.Tensor:
    """LayerNorm(dropout(x + x_bias) + residual): BERT's post-attention and post-FFN block.
    ``seed`` and ``grad_sums`` are the Triton kernel's; here torch's generator draws the mask
    and autograd makes the parameters' gradients."""
    out_dtype = activation_dtype(x)  # before fp32 parameters promote x
    if x_bias is not None:
        x = x + x_bias
    x = dropout(x, dropout_p)
    if residual is not None:
        x = x + residual
    return F.layer_norm(x, (x.shape[-1],), weight, bias, eps).to(out_dtype)


def dropout_seeds(count: int, p: float, device: torch.device) -> None:
    """The Triton ops draw their dropout seeds in one block per forward; these ops draw each
    mask from torch's generator when they run, so there is nothing to draw ahead."""
    return None


def grad_sums_block(numel: int, device: torch.device) -> None:
    """The Triton ops' backward kernels add parameter gradients into one buffer per forward;
    here autograd makes each gradient, so there is nothing to allocate."""
    return None


CLIP_EPS = 1e-6
"""Added to the total norm before dividing by it, as torch's ``clip_grad_norm_`` does."""


def update_verdict(
    norms: torch.Tensor,
    window_poison: torch.Tensor,
    updates: torch.Tensor,
    first_skipped: torch.Tensor,
    max_norm: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """See :func:`fastbert.kernels.update_verdict`: here a dozen one-element torch ops."""
    total = torch.linalg.vector_norm(norms, 2.0)
    # The inverse of clip_grad_norm_'s factor min(1, max_norm / (norm + CLIP_EPS)).
    scale = ((total + CLIP_EPS) / max_norm).clamp_(min=1.0)
    # 0 when the window's losses and the norm were all finite, NaN otherwise: ``x * 0`` is NaN
    # exactly for a NaN or infinite x, and NaN stays NaN under addition.
    poison = window_poison + total * 0
    found_inf = poison.nan_to_num(nan=1.0)
    updates += 1
    # Per cause (the loss; the loss or the norm): this step where poisoned, inf where not
    # (the step number divided by a bool: by 1, or by 0; one launch fewer than a where).
    this_step = updates / torch.stack([window_poison, poison]).isnan()
    torch.fmin(first_skipped, this_step, out=first_skipped)
    window_poison.zero_()
    return total, scale, found_inf
