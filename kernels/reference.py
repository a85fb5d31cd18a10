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
) -> torch.Tensor:
    """dropout(LayerNorm(word[ids] + token_type[tt] + position[pos])) for ids of any shape.
    ``seed`` is the Triton kernels' (see :func:`dropout_seeds`); here torch's generator draws the mask."""
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
