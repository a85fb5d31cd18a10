"""A linear whose input is also the residual: the two gradients meet inside one matmul.

Each BERT layer reads its input twice, through a linear (QKV, or the FFN's first dense)
and as the residual added before the next LayerNorm. Left to autograd, the two gradients of
that input come from separate launches and are then summed by a third (an ``add`` over
``[tokens, hidden]``, twice per layer). :func:`linear_with_residual` returns the residual
as a second output of the same autograd node, so its backward receives both gradients and
computes the input's as ``addmm(d_residual, d_out, weight)``: one launch and one pass over
memory fewer per fork, on every backend (the GPU path is bound by the host's launches).
"""

from __future__ import annotations

import torch

from ..kernels.precision import activation_dtype


class _LinearWithResidual(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.set_materialize_grads(False)  # an unused output's gradient stays None instead of a zero-filled launch
        dtype = activation_dtype(weight)  # what F.linear computes in: autocast's inside an autocast region
        # Cast once here, as autocast would, and keep the cast operands for the backward
        # (which runs outside the autocast region).
        xc, wc = x.to(dtype), weight.to(dtype)
        out = torch.nn.functional.linear(xc, wc, None if bias is None else bias.to(dtype))
        ctx.save_for_backward(xc, wc)
        ctx.x_dtype, ctx.weight_dtype = x.dtype, weight.dtype
        ctx.bias_dtype = None if bias is None else bias.dtype
        return out, x.view_as(x)

    @staticmethod
    def backward(ctx, grad_out, grad_residual):
        xc, wc = ctx.saved_tensors
        need_x, need_weight, need_bias = ctx.needs_input_grad
        grad_x = grad_weight = grad_bias = None
        if grad_out is None:  # the linear's output was not used: the input's gradient is the residual's
            return grad_residual if need_x else None, None, None
        dy = grad_out.reshape(-1, grad_out.shape[-1])
        if need_x:
            if grad_residual is not None and grad_residual.dtype == dy.dtype:
                grad_x = torch.addmm(grad_residual.reshape(-1, wc.shape[1]), dy, wc)
            else:  # no residual gradient, or (an fp32 input under autocast) one in another dtype
                grad_x = (dy @ wc).to(ctx.x_dtype)
                if grad_residual is not None:
                    grad_x = grad_x + grad_residual.reshape(grad_x.shape)
            grad_x = grad_x.view(xc.shape)
        if need_weight:
            grad_weight = (dy.t() @ xc.reshape(-1, xc.shape[-1])).to(ctx.weight_dtype)
        if need_bias:
            grad_bias = dy.sum(0).to(ctx.bias_dtype)
        return grad_x, grad_weight, grad_bias


def linear_with_residual(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(F.linear(x, weight, bias), x)``, the second an alias of ``x`` to use as the residual,
    with both gradients of ``x`` summed inside the backward's matmul."""
    return _LinearWithResidual.apply(x, weight, bias)
