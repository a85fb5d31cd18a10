"""A linear whose input is also the residual: the two gradients meet inside one matmul.

Each BERT layer reads its input twice, through a linear (QKV, or the FFN's first dense)
and as the residual added before the next LayerNorm. Left to autograd, the two gradients of
that input come from separate launches and are then summed by a third (an ``add`` over
``[tokens, hidden]``, twice per layer). :func:`linear_with_residual` returns the residual
as a second output of the same autograd node, so its backward receives both gradients and
computes the input's as ``addmm(d_residual, d_out, weight)``: one launch and one pass over
memory fewer per fork, on every backend (the GPU path is bound by the host's launches).

The weight and bias may come as row blocks (Q, K and V: three ``nn.Linear``s, as checkpoints
name them) that :func:`share_rows` placed one after another in one storage: the forward then
reads them as one ``[3H, H]`` matrix through a view, and the backward hands each block its
slice of the one weight gradient, where ``torch.cat`` would copy the weights and biases every
forward (two launches a layer). Blocks that are not so placed (a state dict loaded with
``assign=True``, ZeRO-3's gathered parameters) are concatenated as before.
"""

from __future__ import annotations

from typing import Sequence, Union

import torch

from ..kernels.precision import activation_dtype


class _LinearWithResidual(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, n_weights, *blocks):
        ctx.set_materialize_grads(False)  # an unused output's gradient stays None instead of a zero-filled launch
        weights, biases = blocks[:n_weights], blocks[n_weights:]
        weight, bias = stacked_rows(weights), stacked_rows(biases) if biases else None
        dtype = activation_dtype(weight)  # what F.linear computes in: autocast's inside an autocast region
        # Cast once here, as autocast would, and keep the cast operands for the backward
        # (which runs outside the autocast region).
        xc, wc = x.to(dtype), weight.to(dtype)
        out = torch.nn.functional.linear(xc, wc, None if bias is None else bias.to(dtype))
        ctx.save_for_backward(xc, wc)
        ctx.x_dtype, ctx.weight_dtype = x.dtype, weight.dtype
        ctx.bias_dtype = None if bias is None else bias.dtype
        ctx.weight_rows = [w.shape[0] for w in weights]
        ctx.bias_rows = [b.shape[0] for b in biases]
        return out, x.view_as(x)

    @staticmethod
    def backward(ctx, grad_out, grad_residual):
        xc, wc = ctx.saved_tensors
        need_x, _, *need_blocks = ctx.needs_input_grad
        n_weights = len(ctx.weight_rows)
        no_blocks = [None] * len(need_blocks)
        if grad_out is None:  # the linear's output was not used: the input's gradient is the residual's
            return grad_residual if need_x else None, None, *no_blocks
        grad_x = None
        dy = grad_out.reshape(-1, grad_out.shape[-1])
        if need_x:
            if grad_residual is not None and grad_residual.dtype == dy.dtype:
                grad_x = torch.addmm(grad_residual.reshape(-1, wc.shape[1]), dy, wc)
            else:  # no residual gradient, or (an fp32 input under autocast) one in another dtype
                grad_x = (dy @ wc).to(ctx.x_dtype)
                if grad_residual is not None:
                    grad_x = grad_x + grad_residual.reshape(grad_x.shape)
            grad_x = grad_x.view(xc.shape)
        grads = list(no_blocks)
        if any(need_blocks[:n_weights]):
            grad_weight = (dy.t() @ xc.reshape(-1, xc.shape[-1])).to(ctx.weight_dtype)
            grads[:n_weights] = grad_weight.split(ctx.weight_rows)  # views: each block's gradient, no copy
        if any(need_blocks[n_weights:]):
            # Summed straight into the bias's dtype: under autocast one launch instead of a bf16
            # sum and a cast (and no rounding to bf16 on the way).
            grads[n_weights:] = dy.sum(0, dtype=ctx.bias_dtype).split(ctx.bias_rows)
        return grad_x, None, *(g if need else None for g, need in zip(grads, need_blocks))


Blocks = Union[torch.Tensor, Sequence[torch.Tensor]]


def linear_with_residual(
    x: torch.Tensor, weight: Blocks, bias: Blocks | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(F.linear(x, weight, bias), x)``, the second an alias of ``x`` to use as the residual,
    with both gradients of ``x`` summed inside the backward's matmul. ``weight`` and ``bias``
    may each be a sequence of row blocks, stacked as ``torch.cat`` would stack them."""
    weights = (weight,) if isinstance(weight, torch.Tensor) else tuple(weight)
    biases = () if bias is None else (bias,) if isinstance(bias, torch.Tensor) else tuple(bias)
    return _LinearWithResidual.apply(x, len(weights), *weights, *biases)


def stacked_rows(blocks: Sequence[torch.Tensor]) -> torch.Tensor:
    """``torch.cat(blocks)``: a view, without a copy, when the blocks lie one after another in one storage."""
    if len(blocks) == 1:
        return blocks[0]
    if not torch.compiler.is_compiling() and _consecutive(blocks):  # the compiler fuses the copy away itself
        first = blocks[0]
        rows = sum(b.shape[0] for b in blocks)
        return first.as_strided((rows, *first.shape[1:]), first.stride(), first.storage_offset())
    return torch.cat(blocks)


def share_rows(*params: torch.nn.Parameter) -> None:
    """Place ``params`` (equal trailing shapes) one after another in one new storage, values
    kept, so that :func:`stacked_rows` reads them as one tensor. Each stays its own parameter:
    names, state dicts, optimizer state and per-tensor norms (LAMB's trust ratio) are unchanged."""
    if _consecutive(params):
        return
    with torch.no_grad():
        packed = torch.cat([p.detach() for p in params])
    start = 0
    for p in params:
        p.data = packed[start : start + p.shape[0]]
        start += p.shape[0]


def _consecutive(blocks: Sequence[torch.Tensor]) -> bool:
    first = blocks[0]
    storage, offset = first.untyped_storage().data_ptr(), first.storage_offset()
    for block in blocks:
        if not (block.is_contiguous() and block.dtype == first.dtype and block.device == first.device
                and block.shape[1:] == first.shape[1:] and block.untyped_storage().data_ptr() == storage
                and block.storage_offset() == offset):
            return False
        offset += block.numel()
    return True
