"""Fused dropout(LayerNorm(word[ids] + token_type[tt] + position[pos])): BERT's embeddings.

Forward gathers the three table rows, normalises in fp32 and writes only the output
(dtype per :mod:`.precision`) and the fp32 row statistics; backward regathers the rows
rather than keeping their sum alive.

Backward computes the fp32 gradient of the summed embedding per token and, by default,
never writes it: it adds it straight into fp32 word and position table gradients with
atomic adds (repeated ids summed; the order of additions varies, so those two gradients
are not bitwise repeatable, as torch's own CUDA scatter-adds are not), and sums the
token-type gradient (a handful of rows, where atomics would all collide) per program in
registers. Under ``torch.use_deterministic_algorithms(True)``, or with more than
``MAX_SCATTER_TYPES`` token types, it writes the per-token gradient instead and torch's
deterministic embedding backward scatters it into each table.

The per-program sums (LayerNorm weight and bias, token-type rows) are reduced by one torch
launch, or, given a caller's zero-filled ``grad_sums`` buffer, added into it with atomics
(see :mod:`._utils`).
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
    store_column_sums,
    take_grad_sums,
    tile_offsets,
    tile_rows,
)
from .precision import activation_dtype


@triton.jit
def _summed_embeddings(ids_ptr, tt_ptr, pos_ptr, word_ptr, tt_emb_ptr, pos_emb_ptr, rows, cols, row_mask, mask, n_cols):
    ids = tl.load(ids_ptr + rows, mask=row_mask, other=0).to(tl.int64)
    tts = tl.load(tt_ptr + rows, mask=row_mask, other=0).to(tl.int64)
    positions = tl.load(pos_ptr + rows, mask=row_mask, other=0).to(tl.int64)
    h = tl.load(word_ptr + ids[:, None] * n_cols + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    h += tl.load(tt_emb_ptr + tts[:, None] * n_cols + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    h += tl.load(pos_emb_ptr + positions[:, None] * n_cols + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    return h


@triton.jit
def _embedding_layer_norm_fwd_kernel(
    ids_ptr, tt_ptr, pos_ptr, word_ptr, tt_emb_ptr, pos_emb_ptr, w_ptr, b_ptr,
    y_ptr, mean_ptr, rstd_ptr,
    n_rows, n_cols, eps, dropout_p, dropout_scale, seed_ptr,
    HAS_DROPOUT: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_H: tl.constexpr,
):
    rows, cols, offsets, row_mask, col_mask, mask = tile_offsets(
        tl.program_id(0), n_rows, n_cols, BLOCK_R, BLOCK_H
    )
    h = _summed_embeddings(ids_ptr, tt_ptr, pos_ptr, word_ptr, tt_emb_ptr, pos_emb_ptr, rows, cols, row_mask, mask, n_cols)
    w = tl.load(w_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
    y, mean, rstd = layer_norm_rows(h, w, b, mask, n_cols, eps)
    if HAS_DROPOUT:
        y = tl.where(dropout_keep(seed_ptr, rows, dropout_p, BLOCK_R, BLOCK_H), y * dropout_scale, 0.0)
    tl.store(y_ptr + offsets, rounded_to(y, y_ptr.dtype.element_ty), mask=mask)
    tl.store(mean_ptr + rows, mean, mask=row_mask)
    tl.store(rstd_ptr + rows, rstd, mask=row_mask)


@triton.jit
def _embedding_layer_norm_bwd_kernel(
    dy_ptr, ids_ptr, tt_ptr, pos_ptr, word_ptr, tt_emb_ptr, pos_emb_ptr, w_ptr, mean_ptr, rstd_ptr,
    dsum_ptr, dword_ptr, dpos_ptr, sums_ptr,
    n_rows, n_cols, n_types, dropout_p, dropout_scale, seed_ptr,
    HAS_DROPOUT: tl.constexpr, SCATTER_TABLES: tl.constexpr, ATOMIC_SUMS: tl.constexpr, BLOCK_T: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_H: tl.constexpr,
):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_H)
    col_mask = cols < n_cols
    w = tl.load(w_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
    dw = tl.zeros([BLOCK_H], dtype=tl.float32)
    db = tl.zeros([BLOCK_H], dtype=tl.float32)
    types = tl.arange(0, BLOCK_T)
    dtt = tl.zeros([BLOCK_T, BLOCK_H], dtype=tl.float32)
    for tile in range(pid, tl.cdiv(n_rows, BLOCK_R), tl.num_programs(0)):
        rows, cols, offsets, row_mask, col_mask, mask = tile_offsets(tile, n_rows, n_cols, BLOCK_R, BLOCK_H)
        h = _summed_embeddings(ids_ptr, tt_ptr, pos_ptr, word_ptr, tt_emb_ptr, pos_emb_ptr, rows, cols, row_mask, mask, n_cols)
        mean = tl.load(mean_ptr + rows, mask=row_mask, other=0.0)
        rstd = tl.load(rstd_ptr + rows, mask=row_mask, other=0.0)
        xhat = normalized_rows(h, mean, rstd, mask)
        dy = tl.load(dy_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        if HAS_DROPOUT:
            dy = tl.where(dropout_keep(seed_ptr, rows, dropout_p, BLOCK_R, BLOCK_H), dy * dropout_scale, 0.0)
        dw += tl.sum(dy * xhat, axis=0)
        db += tl.sum(dy, axis=0)
        dsum = layer_norm_rows_grad(dy, xhat, w, rstd, n_cols)
        if SCATTER_TABLES:
            ids = tl.load(ids_ptr + rows, mask=row_mask, other=0).to(tl.int64)
            positions = tl.load(pos_ptr + rows, mask=row_mask, other=0).to(tl.int64)
            tl.atomic_add(dword_ptr + ids[:, None] * n_cols + cols[None, :], dsum, mask=mask)
            tl.atomic_add(dpos_ptr + positions[:, None] * n_cols + cols[None, :], dsum, mask=mask)
            tts = tl.load(tt_ptr + rows, mask=row_mask, other=-1)
            one_hot = (tts[:, None] == types[None, :]).to(tl.float32)  # [BLOCK_R, BLOCK_T]
            dtt += tl.sum(one_hot[:, :, None] * dsum[:, None, :], axis=0)
        else:
            tl.store(dsum_ptr + offsets, dsum, mask=mask)
    # Sum j (0: weight, 1: bias, 2 + t: token type t) is row j of the caller's [2 + n_types, H]
    # grad_sums (ATOMIC_SUMS), or a [programs, H] block of partials at sums_ptr + j * stride.
    stride = n_cols if ATOMIC_SUMS else tl.num_programs(0) * n_cols
    store_column_sums(sums_ptr, pid, n_cols, cols, dw, col_mask, ATOMIC_SUMS)
    store_column_sums(sums_ptr + stride, pid, n_cols, cols, db, col_mask, ATOMIC_SUMS)
    if SCATTER_TABLES:
        store_column_sums(sums_ptr + (2 + types[:, None]) * stride, pid, n_cols, cols[None, :], dtt,
                          (types[:, None] < n_types) & col_mask[None, :], ATOMIC_SUMS)


def _launch_blocks(n_cols: int, device: torch.device) -> tuple[int, int]:
    block_h = row_block(n_cols)
    return tile_rows(block_h, device), block_h


def embedding_layer_norm_forward(
    ids, tts, positions, word, token_type, position, weight, bias, eps, dropout_p, seed, out_dtype
):
    """Launch the forward kernel on flat ``[N]`` index vectors: (y ``[N, H]``, mean, rstd)."""
    n_rows, n_cols = ids.numel(), word.shape[1]
    block_r, block_h = _launch_blocks(n_cols, word.device)
    y = torch.empty(n_rows, n_cols, dtype=out_dtype, device=word.device)
    mean = torch.empty(n_rows, dtype=torch.float32, device=word.device)
    rstd = torch.empty_like(mean)
    _embedding_layer_norm_fwd_kernel[(triton.cdiv(n_rows, block_r),)](
        ids, tts, positions, word, token_type, position, weight, bias, y, mean, rstd,
        n_rows, n_cols, eps, dropout_p, 1.0 / (1.0 - dropout_p), ids if seed is None else seed,
        HAS_DROPOUT=dropout_p > 0.0, BLOCK_R=block_r, BLOCK_H=block_h, num_warps=num_warps(block_r * block_h),
    )
    return y, mean, rstd


MAX_SCATTER_TYPES = 8
"""Token-type tables up to this many rows get their gradient summed in registers."""


def embedding_layer_norm_backward(
    dy, ids, tts, positions, word, token_type, position, weight, mean, rstd, dropout_p, seed, grad_sums=None
):
    """Launch the backward kernel: fp32 gradients (dword, dtoken_type, dposition, dweight, dbias).
    With ``grad_sums`` (zero-filled fp32, ``[(2 + types) * hidden]``) dweight, dbias and, when the
    kernel sums them, the token-type rows are added into it and returned as views of it, with no
    reduction launch."""
    n_rows, n_cols = dy.shape
    block_r, block_h = _launch_blocks(n_cols, dy.device)
    programs = persistent_programs(triton.cdiv(n_rows, block_r), dy.device)
    n_types = token_type.shape[0]
    scatter = n_types <= MAX_SCATTER_TYPES and not torch.are_deterministic_algorithms_enabled()
    f32 = dict(dtype=torch.float32, device=dy.device)
    atomic = grad_sums is not None
    # Every sum in one buffer: LayerNorm weight, bias (and the token-type rows), either the
    # caller's or [2 (+ n_types), programs, H] partials reduced by one launch; both dense tables
    # zero-filled by one.
    if atomic:
        sums = grad_sums.view(2 + n_types, n_cols)
    else:
        sums = torch.empty(2 + n_types if scatter else 2, programs, n_cols, **f32)
    if scatter:
        tables = torch.zeros(word.shape[0] + position.shape[0], n_cols, **f32)
        dword, dpos = tables[: word.shape[0]], tables[word.shape[0]:]
        dsum = dword  # not written
    else:
        dsum = torch.empty(n_rows, n_cols, **f32)
        dword = dpos = dsum  # not written
    _embedding_layer_norm_bwd_kernel[(programs,)](
        dy, ids, tts, positions, word, token_type, position, weight, mean, rstd,
        dsum, dword, dpos, sums,
        n_rows, n_cols, n_types, dropout_p, 1.0 / (1.0 - dropout_p), ids if seed is None else seed,
        HAS_DROPOUT=dropout_p > 0.0, SCATTER_TABLES=scatter, ATOMIC_SUMS=atomic, BLOCK_T=triton.next_power_of_2(n_types),
        BLOCK_R=block_r, BLOCK_H=block_h, num_warps=num_warps(block_r * block_h),
    )
    if not atomic:
        sums = sums.sum(dim=1)
    dweight, dbias = sums[0], sums[1]
    if scatter:
        return dword, sums[2:], dpos, dweight, dbias
    return _table_grad(dsum, ids, word), _table_grad(dsum, tts, token_type), _table_grad(dsum, positions, position), dweight, dbias


def _table_grad(dsum: torch.Tensor, ids: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    # dsum is fp32, so the per-row sums over repeated ids accumulate in fp32.
    return torch.ops.aten.embedding_dense_backward(dsum, ids, table.shape[0], -1, False)


class EmbeddingLayerNormFunction(torch.autograd.Function):
    """Autograd for the fused embedding sum + LayerNorm + dropout."""

    @staticmethod
    def forward(ctx, ids, tts, positions, word, token_type, position, weight, bias, eps, dropout_p, out_dtype, seed, grad_sums):
        seed = dropout_seed(dropout_p, word.device, seed)
        tables = (word.contiguous(), token_type.contiguous(), position.contiguous())
        y, mean, rstd = embedding_layer_norm_forward(
            ids, tts, positions, *tables, weight.contiguous(), bias.contiguous(), eps, dropout_p, seed, out_dtype
        )
        ctx.save_for_backward(ids, tts, positions, *tables, weight, mean, rstd)
        ctx.dropout_p, ctx.seed, ctx.bias_dtype, ctx.grad_sums = dropout_p, seed, bias.dtype, grad_sums
        return y

    @staticmethod
    def backward(ctx, grad_out):
        ids, tts, positions, word, token_type, position, weight, mean, rstd = ctx.saved_tensors
        dword, dtoken_type, dposition, dweight, dbias = embedding_layer_norm_backward(
            grad_out.contiguous(), ids, tts, positions, word, token_type, position, weight.contiguous(),
            mean, rstd, ctx.dropout_p, ctx.seed, take_grad_sums(ctx),
        )
        return (
            None, None, None,
            dword.to(word.dtype),
            dtoken_type.to(token_type.dtype),
            dposition.to(position.dtype),
            dweight.to(weight.dtype),
            dbias.to(ctx.bias_dtype),
            None, None, None, None, None,
        )


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
    """dropout(LayerNorm(word[ids] + token_type[tt] + position[pos])) for ids of any shape;
    token-type and position ids broadcast against ``input_ids`` as in the reference. ``seed``
    (one int64 on the tables' device) seeds the dropout mask, else one is drawn.
    ``grad_sums``: a zero-filled fp32 vector of (2 + token types) times the hidden size on the
    tables' device, into which the backward adds the gradients of weight, bias and the
    token-type table (that one only while the kernel sums it: see the module's docstring)."""
    hidden = word_embeddings.shape[1]
    for name, table in (("token_type_embeddings", token_type_embeddings), ("position_embeddings", position_embeddings)):
        if table.shape[1] != hidden:
            raise ValueError(f"{name} has width {table.shape[1]}, word_embeddings {hidden}")
    check_vector("weight", weight, hidden)
    check_vector("bias", bias, hidden)
    check_grad_sums(grad_sums, (2 + token_type_embeddings.shape[0]) * hidden, word_embeddings.device)
    shape = input_ids.shape
    flat = [torch.broadcast_to(i, shape).reshape(-1) for i in (input_ids, token_type_ids, position_ids)]
    y = EmbeddingLayerNormFunction.apply(
        *flat, word_embeddings, token_type_embeddings, position_embeddings, weight, bias, eps, dropout_p,
        activation_dtype(word_embeddings), seed, grad_sums,
    )
    return y.view(*shape, hidden)
