"""The optimizer update's verdict in one launch: total gradient norm, clipping divisor, skip flag.

Between the backward and the optimizer step, a training step works on a handful of scalars:
the total norm from the per-tensor norms, the divisor that clips to ``max_norm``, whether
the window's losses or the norm were non-finite (then the optimizer skips), the step count,
and the first skipped steps. As torch ops that is a dozen launches of one element each, on
a GPU each a few microseconds of host time for no arithmetic worth the name; here it is one
program. The semantics are those of :func:`fastbert.kernels.reference.update_verdict`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .reference import CLIP_EPS


@triton.jit
def _update_verdict_kernel(
    norms_ptr, n_norms, poison_ptr, updates_ptr, first_skipped_ptr, total_ptr, scale_ptr, found_inf_ptr,
    max_norm, clip_eps, BLOCK: tl.constexpr,
):
    squares = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, n_norms, BLOCK):
        offsets = start + tl.arange(0, BLOCK)
        norms = tl.load(norms_ptr + offsets, mask=offsets < n_norms, other=0.0).to(tl.float32)
        squares += norms * norms
    total = tl.sqrt(tl.sum(squares, axis=0))
    scale = (total + clip_eps) / max_norm
    scale = tl.where(scale != scale, scale, tl.maximum(scale, 1.0))  # clamp(min=1) keeps a NaN
    loss_poison = tl.load(poison_ptr)  # 0, or NaN after a non-finite loss in the window
    loss_bad = loss_poison != loss_poison
    # Compared, not computed as ``total * 0``: a compiler may fold a product by zero.
    any_bad = loss_bad | (total != total) | (total == float("inf"))
    step = tl.load(updates_ptr) + 1.0
    first_loss = tl.load(first_skipped_ptr)
    first_any = tl.load(first_skipped_ptr + 1)
    tl.store(first_skipped_ptr, tl.where(loss_bad, tl.minimum(first_loss, step), first_loss))
    tl.store(first_skipped_ptr + 1, tl.where(any_bad, tl.minimum(first_any, step), first_any))
    tl.store(updates_ptr, step)
    tl.store(poison_ptr, 0.0)
    tl.store(total_ptr, total)
    tl.store(scale_ptr, scale)
    tl.store(found_inf_ptr, tl.where(any_bad, 1.0, 0.0))


def update_verdict(
    norms: torch.Tensor,
    window_poison: torch.Tensor,
    updates: torch.Tensor,
    first_skipped: torch.Tensor,
    max_norm: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """See :func:`fastbert.kernels.update_verdict`; one program, one launch."""
    check_verdict_inputs(norms, window_poison, updates, first_skipped)
    out = torch.empty(3, dtype=torch.float32, device=norms.device)  # one allocation for the three results
    _update_verdict_kernel[(1,)](
        norms, norms.numel(), window_poison, updates, first_skipped, out[0], out[1], out[2],
        float(max_norm), CLIP_EPS, BLOCK=min(MAX_BLOCK, triton.next_power_of_2(norms.numel())),
    )
    return out[0], out[1], out[2]


MAX_BLOCK = 1024
"""Norms read per iteration: BERT-base has about 200 tensors, BERT-large about 400 (one pass)."""


def check_verdict_inputs(norms, window_poison, updates, first_skipped) -> None:
    """Refuse what the kernel would read or write out of bounds, or in the wrong dtype."""
    if norms.dim() != 1 or norms.numel() == 0 or not norms.is_contiguous():
        raise ValueError(f"norms must be a non-empty contiguous vector of per-tensor norms; got shape {tuple(norms.shape)}")
    for name, t, shape in (("window_poison", window_poison, ()), ("updates", updates, ()), ("first_skipped", first_skipped, (2,))):
        if t.dtype != torch.float32 or t.shape != shape or t.device != norms.device:
            raise ValueError(f"{name} must be fp32 of shape {shape} on {norms.device}; got {tuple(t.shape)} {t.dtype} on {t.device}")
