"""Launch heuristics and Triton building blocks shared by the fused kernels.

Every kernel works on 2-D tiles of ``BLOCK_R`` rows by ``BLOCK_H`` columns: many rows per
program keeps the CPU interpreter (which runs programs one by one in Python) fast, and on
a GPU it amortises loading the LayerNorm weight and bias. Backward kernels are
persistent: a bounded number of programs loop over the tiles and each makes one fp32
partial sum of the per-column parameter gradients. Those partials are either stored and
reduced by torch (a second launch per op; deterministic), or, when the caller hands the op
a zero-filled ``grad_sums`` buffer (see :func:`grad_sums_block`), added into it with
atomics: no second launch, at the price of a summation order that varies from run to run.
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl

MAX_HIDDEN = 8192
"""Widest row a row-wise kernel handles: the whole row lives in registers."""

# Elements per tile. A GPU wants tiles that fit in registers; the interpreter wants as
# few programs as possible, since each costs a round of Python. The GPU settings (tile,
# programs per SM, warps) come from benchmarks/tune_kernels.py on an H200 at 32768 x 768
# bf16 (results in benchmarks/results/2026-11-26-h200/): 2048 elements, 32 programs per
# SM and 4 warps made LayerNorm and bias+GELU backward 2-3x faster than 4096/4/16.
_GPU_TILE_ELEMENTS = 2048
_CPU_TILE_ELEMENTS = 32768
# Persistent backward programs per streaming multiprocessor.
_PROGRAMS_PER_SM = 32
_CPU_PROGRAMS = 2


def row_block(hidden: int) -> int:
    """``BLOCK_H`` for rows of ``hidden`` elements: the next power of two, masked."""
    if hidden < 1 or hidden > MAX_HIDDEN:
        raise ValueError(f"hidden size {hidden} is outside the fused kernels' range 1..{MAX_HIDDEN}")
    return triton.next_power_of_2(hidden)


def tile_rows(block_h: int, device: torch.device) -> int:
    """``BLOCK_R``: rows per tile so a tile holds about the target number of elements."""
    target = _GPU_TILE_ELEMENTS if device.type == "cuda" else _CPU_TILE_ELEMENTS
    return max(1, target // block_h)


def num_warps(tile_elements: int) -> int:
    """Warps for a tile: 4 for the usual 2048-element tile (measured fastest on an H200;
    more warps per program cost occupancy), up to 8 for one very wide row."""
    return min(8, max(4, tile_elements // 512))


def persistent_programs(n_tiles: int, device: torch.device) -> int:
    """How many programs a persistent backward kernel launches for ``n_tiles`` tiles."""
    limit = _PROGRAMS_PER_SM * _sm_count(_cuda_index(device)) if device.type == "cuda" else _CPU_PROGRAMS
    return max(1, min(n_tiles, limit))


def _cuda_index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


@functools.lru_cache(maxsize=None)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def dropout_seed(p: float, device: torch.device, given: torch.Tensor | None = None) -> torch.Tensor | None:
    """A one-element int64 Philox seed for a dropout mask: ``given`` (a caller's view into a block of
    seeds drawn at once, see :func:`dropout_seeds`), else one drawn on ``device`` by torch's generator
    there; None and no draw when ``p == 0``.

    The kernels read the seed from memory rather than taking a Python int: drawing on the
    device needs no host sync, ``torch.manual_seed`` still makes runs reproducible, and a
    captured CUDA graph draws a fresh seed on every replay (torch registers its CUDA
    generator with the graph), where a host-drawn integer would be frozen into the graph
    and replay one mask forever.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {p}")
    if p == 0.0:
        return None
    if given is not None:
        if given.shape != (1,) or given.dtype != torch.int64 or given.device != device:
            raise ValueError(f"a dropout seed is a one-element int64 tensor on {device}; got {tuple(given.shape)} "
                             f"{given.dtype} on {given.device}")
        return given
    return dropout_seeds(1, p, device)


def dropout_seeds(count: int, p: float, device: torch.device) -> torch.Tensor | None:
    """``count`` Philox seeds in one draw (one launch instead of one per dropout kernel);
    None when ``p == 0``. Kernel ``i`` takes the view ``seeds[i : i + 1]``."""
    if p == 0.0:
        return None
    return torch.randint(0, 2**31 - 1, (count,), dtype=torch.int64, device=device)


def grad_sums_block(numel: int, device: torch.device) -> torch.Tensor | None:
    """A zero-filled fp32 buffer whose slices the fused ops of one forward take as
    ``grad_sums``: their backward kernels add the per-column parameter gradients into it
    with atomics. One launch for a whole forward, instead of a reduction launch per op in
    backward. None (each op reduces its own partials, in a fixed order) while
    ``torch.use_deterministic_algorithms`` is on."""
    if torch.are_deterministic_algorithms_enabled():
        return None
    return torch.zeros(numel, dtype=torch.float32, device=device)


def check_grad_sums(t: torch.Tensor | None, numel: int, device: torch.device) -> None:
    """Refuse a ``grad_sums`` buffer the backward kernel could not add into safely."""
    if t is not None and (t.dtype != torch.float32 or t.shape != (numel,) or not t.is_contiguous() or t.device != device):
        raise ValueError(f"grad_sums must be a contiguous fp32 vector of {numel} elements on {device}; got "
                         f"{tuple(t.shape)} {t.dtype} on {t.device}")


def take_grad_sums(ctx) -> torch.Tensor | None:
    """The op's ``grad_sums`` buffer for its first backward only: a second backward through a
    retained graph would add onto the first's sums, so it reduces its own partials instead."""
    sums, ctx.grad_sums = getattr(ctx, "grad_sums", None), None
    return None if torch.are_deterministic_algorithms_enabled() else sums


def check_vector(name: str, t: torch.Tensor | None, size: int) -> None:
    """Refuse a per-column parameter that does not have ``size`` elements (the kernels
    would read past it)."""
    if t is not None and t.shape != (size,):
        raise ValueError(f"{name} has shape {tuple(t.shape)}; expected ({size},)")


def rows_of(x: torch.Tensor) -> torch.Tensor:
    """``x`` as a contiguous ``[rows, hidden]`` matrix (a view when it already is one)."""
    return x.contiguous().view(-1, x.shape[-1])


# The interpreter converts fp32 to bf16 by dropping the low mantissa bits, where GPUs round
# to nearest even; rounding the bits first lets CPU tests see GPU numerics. A constexpr,
# read when the kernels are imported (as @triton.jit reads TRITON_INTERPRET), so compiled
# kernels do not contain the branch.
_INTERPRETED = tl.constexpr(os.environ.get("TRITON_INTERPRET") == "1")


@triton.jit
def rounded_to(x, dtype: tl.constexpr):
    """fp32 ``x`` converted to ``dtype`` (a pointer's element type), rounding to nearest even."""
    if _INTERPRETED:
        if dtype == tl.bfloat16:
            bits = x.to(tl.uint32, bitcast=True)
            bits += 0x7FFF + ((bits >> 16) & 1)
            x = (bits & 0xFFFF0000).to(tl.float32, bitcast=True)
    return x.to(dtype)


@triton.jit
def dropout_keep(seed_ptr, rows, p, BLOCK_R: tl.constexpr, BLOCK_H: tl.constexpr):
    """Which elements of a ``[BLOCK_R, BLOCK_H]`` row tile survive dropout.

    A function of (seed, row, column) only, so backward regenerates the forward's mask
    instead of storing it. One Philox call (ten rounds of 32-bit multiplies) yields four
    random words; each serves four neighbouring columns. ``tl.rand`` draws one call per
    element and throws three words away: on an H200 every kernel with dropout then took
    about 0.2 ms at 32768 x 768 whatever its memory traffic, and the sm_90 PTX of the
    LayerNorm forward had 258 ``mul.hi`` per thread against 74 with this (not yet timed).
    """
    groups = rows[:, None] * (BLOCK_H // 4) + tl.arange(0, BLOCK_H // 4)[None, :]
    r0, r1, r2, r3 = tl.randint4x(tl.load(seed_ptr), groups.to(tl.int32))
    # [R, H/4] x4 -> [R, H/4, 2, 2] -> [R, H]: join adds the last axis, so element
    # [g, i, j] is word 2i + j of group g, and column 4g + k takes word k.
    words = tl.reshape(tl.join(tl.join(r0, r2), tl.join(r1, r3)), [BLOCK_R, BLOCK_H])
    # P(word < threshold) = p to within 2^-24; the clamp keeps p just below 1 from overflowing uint32.
    threshold = tl.cast(tl.minimum(p * 4294967296.0, 4294967040.0), tl.uint32)
    return words >= threshold


@triton.jit
def store_column_sums(ptr, pid, n_cols, cols, sums, mask, ATOMIC: tl.constexpr):
    """A program's column sums: added into the final ``[n_cols]`` sums at ``ptr`` (ATOMIC), or
    stored as row ``pid`` of a ``[programs, n_cols]`` partials buffer that torch reduces."""
    if ATOMIC:
        tl.atomic_add(ptr + cols, sums, mask=mask)
    else:
        tl.store(ptr + pid * n_cols + cols, sums, mask=mask)


@triton.jit
def tile_offsets(tile, n_rows, n_cols, BLOCK_R: tl.constexpr, BLOCK_H: tl.constexpr):
    """Row indices, column indices, element offsets and masks of one row tile."""
    rows = tile * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_H)
    row_mask = rows < n_rows
    col_mask = cols < n_cols
    offsets = rows[:, None].to(tl.int64) * n_cols + cols[None, :]
    return rows, cols, offsets, row_mask, col_mask, row_mask[:, None] & col_mask[None, :]


@triton.jit
def layer_norm_rows(h, w, b, mask, n_cols, eps):
    """LayerNorm of each row of the fp32 tile ``h`` (zero where masked): (y, mean, rstd)."""
    mean = tl.sum(h, axis=1) / n_cols
    centered = tl.where(mask, h - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(centered * centered, axis=1) / n_cols + eps)
    y = centered * rstd[:, None] * w[None, :] + b[None, :]
    return y, mean, rstd


@triton.jit
def normalized_rows(h, mean, rstd, mask):
    """x-hat of a tile from its saved row statistics, zero where masked."""
    return tl.where(mask, (h - mean[:, None]) * rstd[:, None], 0.0)


@triton.jit
def layer_norm_rows_grad(dy, xhat, w, rstd, n_cols):
    """Gradient of LayerNorm with respect to its input rows, from dL/dy and x-hat."""
    wdy = dy * w[None, :]
    mean_wdy_xhat = tl.sum(wdy * xhat, axis=1) / n_cols
    mean_wdy = tl.sum(wdy, axis=1) / n_cols
    return (wdy - xhat * mean_wdy_xhat[:, None] - mean_wdy[:, None]) * rstd[:, None]
