"""Fused GELU(x + bias): the activation after BERT's first feed-forward matmul.

Forward reads x and the bias once and writes the activation (dtype per :mod:`.precision`;
arithmetic in fp32); backward recomputes x + bias from the saved input instead of storing
it, and reduces dbias in two stages (or with atomics into a caller's ``grad_sums``).
Rows are tiled by column blocks too, so any width works.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._utils import (
    check_grad_sums,
    num_warps,
    persistent_programs,
    rounded_to,
    rows_of,
    store_column_sums,
    take_grad_sums,
    tile_rows,
)
from .precision import activation_dtype

_MAX_COLUMN_BLOCK = 1024
_APPROXIMATIONS = ("none", "tanh")


@triton.jit
def _tanh(z):
    # tl.math has no tanh in every Triton we support; exp(-2|z|) never overflows.
    e = tl.exp(-2.0 * tl.abs(z))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(z < 0, -t, t)


@triton.jit
def _gelu_and_grad(z, APPROX_TANH: tl.constexpr):
    """GELU(z) and dGELU/dz, elementwise in fp32."""
    if APPROX_TANH:
        # sqrt(2/pi) * (z + 0.044715 z^3)
        t = _tanh(0.7978845608028654 * (z + 0.044715 * z * z * z))
        gelu = 0.5 * z * (1.0 + t)
        grad = 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * 0.7978845608028654 * (1.0 + 0.134145 * z * z)
    else:
        # Phi(z) = (1 + erf(z / sqrt 2)) / 2 and phi(z) = exp(-z^2 / 2) / sqrt(2 pi)
        cdf = 0.5 * (1.0 + tl.math.erf(z * 0.7071067811865476))
        gelu = z * cdf
        grad = cdf + z * tl.exp(-0.5 * z * z) * 0.3989422804014327
    return gelu, grad


@triton.jit
def _column_tile(tile, col_block, n_rows, n_cols, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    rows = tile * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = col_block * BLOCK_C + tl.arange(0, BLOCK_C)
    col_mask = cols < n_cols
    offsets = rows[:, None].to(tl.int64) * n_cols + cols[None, :]
    return cols, offsets, col_mask, (rows < n_rows)[:, None] & col_mask[None, :]


@triton.jit
def _bias_gelu_fwd_kernel(
    x_ptr, bias_ptr, y_ptr, n_rows, n_cols,
    APPROX_TANH: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):
    cols, offsets, col_mask, mask = _column_tile(tl.program_id(0), tl.program_id(1), n_rows, n_cols, BLOCK_R, BLOCK_C)
    z = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    z += tl.load(bias_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]
    y, _ = _gelu_and_grad(z, APPROX_TANH)
    tl.store(y_ptr + offsets, rounded_to(y, y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _bias_gelu_bwd_kernel(
    dy_ptr, x_ptr, bias_ptr, dx_ptr, dbias_sums_ptr, n_rows, n_cols,
    APPROX_TANH: tl.constexpr, ATOMIC_SUMS: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):
    pid = tl.program_id(0)
    col_block = tl.program_id(1)
    cols = col_block * BLOCK_C + tl.arange(0, BLOCK_C)
    bias = tl.load(bias_ptr + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
    dbias = tl.zeros([BLOCK_C], dtype=tl.float32)
    for tile in range(pid, tl.cdiv(n_rows, BLOCK_R), tl.num_programs(0)):
        _, offsets, _, mask = _column_tile(tile, col_block, n_rows, n_cols, BLOCK_R, BLOCK_C)
        z = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32) + bias[None, :]
        dy = tl.load(dy_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        _, grad = _gelu_and_grad(z, APPROX_TANH)
        dx = dy * grad
        tl.store(dx_ptr + offsets, rounded_to(dx, dx_ptr.dtype.element_ty), mask=mask)
        dbias += tl.sum(dx, axis=0)
    store_column_sums(dbias_sums_ptr, pid, n_cols, cols, dbias, cols < n_cols, ATOMIC_SUMS)


def _blocks(x: torch.Tensor) -> tuple[int, int]:
    block_c = min(triton.next_power_of_2(x.shape[1]), _MAX_COLUMN_BLOCK)
    return tile_rows(block_c, x.device), block_c


def bias_gelu_forward(x: torch.Tensor, bias: torch.Tensor, approx_tanh: bool, out_dtype: torch.dtype) -> torch.Tensor:
    """Launch the forward kernel on a ``[rows, cols]`` input."""
    n_rows, n_cols = x.shape
    block_r, block_c = _blocks(x)
    y = torch.empty_like(x, dtype=out_dtype)
    grid = (triton.cdiv(n_rows, block_r), triton.cdiv(n_cols, block_c))
    _bias_gelu_fwd_kernel[grid](
        x, bias, y, n_rows, n_cols,
        APPROX_TANH=approx_tanh, BLOCK_R=block_r, BLOCK_C=block_c, num_warps=num_warps(block_r * block_c),
    )
    return y


def bias_gelu_backward(dy, x, bias, approx_tanh, grad_sums=None):
    """Launch the backward kernel: (dx, fp32 dbias); dbias is ``grad_sums`` (zero-filled
    fp32, added into with atomics) when given, with no reduction launch."""
    n_rows, n_cols = x.shape
    block_r, block_c = _blocks(x)
    programs = persistent_programs(triton.cdiv(n_rows, block_r), x.device)
    dx = torch.empty_like(x)
    atomic = grad_sums is not None
    dbias = grad_sums if atomic else torch.empty(programs, n_cols, dtype=torch.float32, device=x.device)
    _bias_gelu_bwd_kernel[(programs, triton.cdiv(n_cols, block_c))](
        dy, x, bias, dx, dbias, n_rows, n_cols,
        APPROX_TANH=approx_tanh, ATOMIC_SUMS=atomic, BLOCK_R=block_r, BLOCK_C=block_c, num_warps=num_warps(block_r * block_c),
    )
    # A fresh view, not the caller's tensor itself: autograd then keeps it as the .grad instead of copying it.
    return dx, dbias.view(n_cols) if atomic else dbias.sum(dim=0)


class BiasGeluFunction(torch.autograd.Function):
    """Autograd for the fused bias + GELU; saves only the input."""

    @staticmethod
    def forward(ctx, x, bias, approx_tanh, out_dtype, grad_sums):
        x2 = rows_of(x)
        bias = bias.contiguous()
        ctx.save_for_backward(x2, bias)
        ctx.approx_tanh, ctx.shape, ctx.grad_sums = approx_tanh, x.shape, grad_sums
        return bias_gelu_forward(x2, bias, approx_tanh, out_dtype).view(x.shape)

    @staticmethod
    def backward(ctx, grad_out):
        x2, bias = ctx.saved_tensors
        dx, dbias = bias_gelu_backward(rows_of(grad_out), x2, bias, ctx.approx_tanh, take_grad_sums(ctx))
        return dx.view(ctx.shape), dbias.to(bias.dtype), None, None, None


def bias_gelu(
    x: torch.Tensor, bias: torch.Tensor, approximate: str = "none", grad_sums: torch.Tensor | None = None
) -> torch.Tensor:
    """GELU(x + bias) over the last dimension, exact erf form unless ``approximate="tanh"``.
    ``grad_sums``: a zero-filled fp32 vector of the bias's size on x's device, into which the
    backward adds the bias's gradient."""
    if approximate not in _APPROXIMATIONS:
        raise ValueError(f"approximate={approximate!r}; expected one of {', '.join(_APPROXIMATIONS)}")
    if bias.shape != x.shape[-1:]:
        raise ValueError(f"bias shape {tuple(bias.shape)} does not match the last dimension of x {tuple(x.shape)}")
    check_grad_sums(grad_sums, bias.numel(), x.device)
    return BiasGeluFunction.apply(x, bias, approximate == "tanh", activation_dtype(x), grad_sums)
