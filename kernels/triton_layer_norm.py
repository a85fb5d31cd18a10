"""Fused LayerNorm(dropout(x + x_bias) + residual): BERT's post-attention and post-FFN block.

Forward reads x, the residual and the parameters once and writes the output, the fp32
row statistics and, when anything was added to x, the pre-norm sum ``h`` (in the output
dtype) that backward needs. Inputs may mix dtypes (under autocast: a bf16 matmul output,
fp32 bias and LayerNorm parameters); arithmetic is fp32 and the output dtype follows
:mod:`.precision`. The dropout mask is never stored: backward regenerates it from the
seed. Backward gives dx, dresidual, dweight, dbias and dx_bias.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._utils import (
    check_grad_sums,
    check_vector,
    dropout_keep,
    dropout_seed,
    layer_norm_rows,
    layer_norm_rows_grad,
    normalized_rows,
    num_warps,
    persistent_programs,
    rounded_to,
    row_block,
    rows_of,
    store_column_sums,
    take_grad_sums,
    tile_offsets,
    tile_rows,
)
from .precision import activation_dtype


@triton.jit
def _layer_norm_fwd_kernel(
    x_ptr, x_bias_ptr, residual_ptr, w_ptr, b_ptr, y_ptr, h_ptr, mean_ptr, rstd_ptr,
    n_rows, n_cols, eps, dropout_p, dropout_scale, seed_ptr,
    HAS_X_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr, HAS_DROPOUT: tl.constexpr,
    STORE_H: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_H: tl.constexpr,
):
    rows, cols, offsets, row_mask, col_mask, mask = tile_offsets(
        tl.program_id(0), n_rows, n_cols, BLOCK_R, BLOCK_H
    )
    h = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    if HAS_X_BIAS:
        h += tl.load(x_bias_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]
    if HAS_DROPOUT:
        h = tl.where(dropout_keep(seed_ptr, rows, dropout_p, BLOCK_R, BLOCK_H), h * dropout_scale, 0.0)
    if HAS_RESIDUAL:
        h += tl.load(residual_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    if STORE_H:
        tl.store(h_ptr + offsets, rounded_to(h, h_ptr.dtype.element_ty), mask=mask)
    w = tl.load(w_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
    y, mean, rstd = layer_norm_rows(h, w, b, mask, n_cols, eps)
    tl.store(y_ptr + offsets, rounded_to(y, y_ptr.dtype.element_ty), mask=mask)
    tl.store(mean_ptr + rows, mean, mask=row_mask)
    tl.store(rstd_ptr + rows, rstd, mask=row_mask)


@triton.jit
def _layer_norm_bwd_kernel(
    dy_ptr, h_ptr, w_ptr, mean_ptr, rstd_ptr, dx_ptr, dresidual_ptr,
    dw_sums_ptr, db_sums_ptr, dx_bias_sums_ptr,
    n_rows, n_cols, dropout_p, dropout_scale, seed_ptr,
    HAS_X_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr, HAS_DROPOUT: tl.constexpr,
    ATOMIC_SUMS: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_H: tl.constexpr,
):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_H)
    col_mask = cols < n_cols
    w = tl.load(w_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
    dw = tl.zeros([BLOCK_H], dtype=tl.float32)
    db = tl.zeros([BLOCK_H], dtype=tl.float32)
    dx_bias = tl.zeros([BLOCK_H], dtype=tl.float32)
    for tile in range(pid, tl.cdiv(n_rows, BLOCK_R), tl.num_programs(0)):
        rows, cols, offsets, row_mask, col_mask, mask = tile_offsets(tile, n_rows, n_cols, BLOCK_R, BLOCK_H)
        dy = tl.load(dy_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        h = tl.load(h_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        mean = tl.load(mean_ptr + rows, mask=row_mask, other=0.0)
        rstd = tl.load(rstd_ptr + rows, mask=row_mask, other=0.0)
        xhat = normalized_rows(h, mean, rstd, mask)
        dw += tl.sum(dy * xhat, axis=0)
        db += tl.sum(dy, axis=0)
        dh = layer_norm_rows_grad(dy, xhat, w, rstd, n_cols)
        if HAS_RESIDUAL:
            # A separate buffer even when equal to dx: autograd may accumulate into either in place.
            tl.store(dresidual_ptr + offsets, rounded_to(dh, dresidual_ptr.dtype.element_ty), mask=mask)
        if HAS_DROPOUT:
            dx = tl.where(dropout_keep(seed_ptr, rows, dropout_p, BLOCK_R, BLOCK_H), dh * dropout_scale, 0.0)
        else:
            dx = dh
        tl.store(dx_ptr + offsets, rounded_to(dx, dx_ptr.dtype.element_ty), mask=mask)
        if HAS_X_BIAS:
            dx_bias += tl.sum(dx, axis=0)
    store_column_sums(dw_sums_ptr, pid, n_cols, cols, dw, col_mask, ATOMIC_SUMS)
    store_column_sums(db_sums_ptr, pid, n_cols, cols, db, col_mask, ATOMIC_SUMS)
    if HAS_X_BIAS:
        store_column_sums(dx_bias_sums_ptr, pid, n_cols, cols, dx_bias, col_mask, ATOMIC_SUMS)


def layer_norm_forward(x, weight, bias, eps, residual, dropout_p, x_bias, seed, out_dtype):
    """Launch the forward kernel on ``[rows, hidden]`` inputs: (y, h, mean, rstd); ``h`` is
    ``x`` itself when nothing was added to it."""
    n_rows, n_cols = x.shape
    block_h = row_block(n_cols)
    block_r = tile_rows(block_h, x.device)
    store_h = residual is not None or x_bias is not None or dropout_p > 0.0
    y = torch.empty_like(x, dtype=out_dtype)
    h = torch.empty_like(y) if store_h else x
    mean = torch.empty(n_rows, dtype=torch.float32, device=x.device)
    rstd = torch.empty_like(mean)
    _layer_norm_fwd_kernel[(triton.cdiv(n_rows, block_r),)](
        x, x if x_bias is None else x_bias, x if residual is None else residual,
        weight, bias, y, h, mean, rstd,
        n_rows, n_cols, eps, dropout_p, 1.0 / (1.0 - dropout_p), x if seed is None else seed,
        HAS_X_BIAS=x_bias is not None, HAS_RESIDUAL=residual is not None, HAS_DROPOUT=dropout_p > 0.0,
        STORE_H=store_h, BLOCK_R=block_r, BLOCK_H=block_h, num_warps=num_warps(block_r * block_h),
    )
    return y, h, mean, rstd


def layer_norm_backward(dy, h, weight, mean, rstd, dropout_p, seed, x_dtype, residual_dtype, has_x_bias, grad_sums=None):
    """Launch the backward kernel: (dx, dresidual or None, fp32 dweight, fp32 dbias, fp32
    dx_bias or None); dx and dresidual come in their inputs' dtypes. With ``grad_sums``
    (zero-filled fp32, ``[(2 or 3) * hidden]``) the three sums are added into it and
    returned as views of it, with no reduction launch."""
    n_rows, n_cols = dy.shape
    block_h = row_block(n_cols)
    block_r = tile_rows(block_h, dy.device)
    programs = persistent_programs(triton.cdiv(n_rows, block_r), dy.device)
    has_residual = residual_dtype is not None
    dx = torch.empty_like(dy, dtype=x_dtype)
    dresidual = torch.empty_like(dy, dtype=residual_dtype) if has_residual else None
    n_sums = 3 if has_x_bias else 2
    atomic = grad_sums is not None
    sums = grad_sums.view(n_sums, n_cols) if atomic else torch.empty(n_sums, programs, n_cols, dtype=torch.float32, device=dy.device)
    _layer_norm_bwd_kernel[(programs,)](
        dy, h, weight, mean, rstd, dx, dx if dresidual is None else dresidual,
        sums[0], sums[1], sums[-1],
        n_rows, n_cols, dropout_p, 1.0 / (1.0 - dropout_p), dy if seed is None else seed,
        HAS_X_BIAS=has_x_bias, HAS_RESIDUAL=has_residual, HAS_DROPOUT=dropout_p > 0.0,
        ATOMIC_SUMS=atomic, BLOCK_R=block_r, BLOCK_H=block_h, num_warps=num_warps(block_r * block_h),
    )
    if not atomic:
        sums = sums.sum(dim=1)
    dx_bias = sums[2] if has_x_bias else None
    return dx, dresidual, sums[0], sums[1], dx_bias


class LayerNormFunction(torch.autograd.Function):
    """Autograd for the fused residual-dropout-LayerNorm; the mask is replayed from a seed."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps, residual, dropout_p, x_bias, out_dtype, seed, grad_sums):
        shape = x.shape
        x2 = rows_of(x)
        residual2 = None if residual is None else rows_of(residual)
        seed = dropout_seed(dropout_p, x.device, seed)
        y, h, mean, rstd = layer_norm_forward(
            x2, weight.contiguous(), bias.contiguous(), eps, residual2, dropout_p,
            None if x_bias is None else x_bias.contiguous(), seed, out_dtype,
        )
        ctx.save_for_backward(h, weight, mean, rstd)
        ctx.dropout_p, ctx.seed, ctx.shape, ctx.x_dtype, ctx.bias_dtype = dropout_p, seed, shape, x.dtype, bias.dtype
        ctx.residual_dtype = None if residual is None else residual.dtype
        ctx.x_bias_dtype = None if x_bias is None else x_bias.dtype
        ctx.grad_sums = grad_sums
        return y.view(shape)

    @staticmethod
    def backward(ctx, grad_out):
        h, weight, mean, rstd = ctx.saved_tensors
        dx, dresidual, dweight, dbias, dx_bias = layer_norm_backward(
            rows_of(grad_out), h, weight.contiguous(), mean, rstd, ctx.dropout_p, ctx.seed,
            ctx.x_dtype, ctx.residual_dtype, ctx.x_bias_dtype is not None, take_grad_sums(ctx),
        )
        return (
            dx.view(ctx.shape),
            dweight.to(weight.dtype),
            dbias.to(ctx.bias_dtype),
            None,
            None if dresidual is None else dresidual.view(ctx.shape),
            None,
            None if dx_bias is None else dx_bias.to(ctx.x_bias_dtype),
            None,
            None,
            None,
        )


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
    """LayerNorm(dropout(x + x_bias) + residual) over the last dimension, fused in Triton;
    ``seed`` (one int64 on x's device) seeds the dropout mask, else one is drawn.
    ``grad_sums``: a zero-filled fp32 vector of 2 (3 with ``x_bias``) times the hidden size
    on x's device, into which the backward adds the gradients of weight, bias (and x_bias)."""
    if residual is not None and residual.shape != x.shape:
        raise ValueError(f"residual shape {tuple(residual.shape)} differs from x shape {tuple(x.shape)}")
    for name, vector in (("weight", weight), ("bias", bias), ("x_bias", x_bias)):
        check_vector(name, vector, x.shape[-1])
    check_grad_sums(grad_sums, (2 if x_bias is None else 3) * x.shape[-1], x.device)
    return LayerNormFunction.apply(x, weight, bias, eps, residual, dropout_p, x_bias, activation_dtype(x), seed, grad_sums)
