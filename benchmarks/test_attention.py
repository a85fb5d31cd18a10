"""Attention forward + backward on BERT-base shapes (12 heads of 64): varlen backends vs padded SDPA vs eager.

fastbert's backends read the unpadded ``[tokens, heads, head_dim]`` layout; the padded
baselines get the same sequences padded to the longest (transformers' layout and mask),
so they also pay for the padding they attend over. No attention dropout on any side.
Lengths: ``uniform`` in [seq/2, seq] (pretraining-like) or ``skewed`` towards short
sequences (fine-tuning-like: seq * u**2, at least 8).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from fastbert.model import SequenceLayout, varlen_attention
from fastbert.model.attention import resolve_attention_backend

HEADS, HEAD_DIM = 12, 64
IMPLS = ("fastbert-auto", "fastbert-sdpa", "flash_attn", "torch_varlen", "padded-sdpa", "eager")


@dataclass(frozen=True)
class AttentionCase:
    seq_len: int
    batch_size: int
    lengths: str

    def __str__(self) -> str:
        return f"s{self.seq_len}-b{self.batch_size}-{self.lengths}"

    def sample_lengths(self, generator: torch.Generator) -> torch.Tensor:
        if self.lengths == "uniform":
            return torch.randint(self.seq_len // 2, self.seq_len + 1, (self.batch_size,), generator=generator)
        u = torch.rand(self.batch_size, generator=generator)
        return (self.seq_len * u**2).long().clamp(8, self.seq_len)


CASES = {
    "cpu": [AttentionCase(128, 16, "uniform")],
    "gpu": [AttentionCase(s, b, d) for s, b in ((128, 64), (512, 16)) for d in ("uniform", "skewed")],
}


def eager_attention(q, k, v, key_mask):
    """transformers' eager path: scores, additive mask, softmax, weighted values."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~key_mask, torch.finfo(scores.dtype).min)
    return scores.softmax(-1) @ v


def _runner(impl: str, layout: SequenceLayout, device: torch.device):
    """fn(q, k, v) on flat [N, h, d] tensors; padded impls pad first, as a padded batch would arrive."""
    if impl.startswith("fastbert") or impl in ("flash_attn", "torch_varlen"):
        backend = {"fastbert-auto": "auto", "fastbert-sdpa": "sdpa"}.get(impl, impl)
        resolve_attention_backend(device, 0.0, backend)  # raises when this machine lacks the backend
        return lambda q, k, v: varlen_attention(torch.stack([q, k, v], 1), layout, 0.0, backend)
    mask = layout.key_padding_mask[:, None, None, :]
    padded = [None, None, None]

    def run(q, k, v):
        padded[:] = [layout.pad(t.detach()).transpose(1, 2).requires_grad_() for t in (q, k, v)]
        if impl == "padded-sdpa":
            return F.scaled_dot_product_attention(*padded, attn_mask=mask)
        return eager_attention(*padded, mask)

    return run


@pytest.mark.parametrize("impl", IMPLS)
def test_attention(case: AttentionCase, impl: str, measure, device: torch.device):
    if impl == "fastbert-sdpa" and device.type == "cpu":
        pytest.skip("on a CPU fastbert-auto is the padded SDPA path")
    generator = torch.Generator().manual_seed(0)
    lengths = case.sample_lengths(generator)
    layout = SequenceLayout.from_lengths(lengths.to(device))
    tokens = int(lengths.sum())
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    q, k, v = (torch.randn(tokens, HEADS, HEAD_DIM, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    try:
        attend = _runner(impl, layout, device)
    except RuntimeError as err:
        pytest.skip(str(err))
    grad = None

    def forward_backward(_):
        nonlocal grad
        out = attend(q, k, v)
        if grad is None or grad.shape != out.shape:
            grad = torch.randn_like(out)
        out.backward(grad)

    # Forward 4 * hidden * sum(L^2) FLOPs; backward about 2.5x that.
    flops = 3.5 * 4 * HEADS * HEAD_DIM * float((lengths.double() ** 2).sum())
    measure(forward_backward, [None], group=f"attention {case}", impl=impl,
            role="candidate" if impl == "fastbert-auto" else "baseline",
            real_tokens=tokens, sequences=case.batch_size, flops=flops)
