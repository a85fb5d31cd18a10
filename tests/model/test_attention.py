"""Attention backends: selection rules and the SDPA path against a per-sequence reference."""

import math

import pytest
import torch

from fastbert.model.attention import resolve_attention_backend, varlen_attention
from fastbert.model.layout import SequenceLayout


def reference_attention(q, k, v, lengths):
    outs, start = [], 0
    for n in lengths:
        qs, ks, vs = (t[start:start + n].transpose(0, 1).double() for t in (q, k, v))
        probs = torch.softmax(qs @ ks.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
        outs.append((probs @ vs).transpose(0, 1))
        start += n
    return torch.cat(outs).to(q.dtype)


def test_sdpa_matches_per_sequence_reference():
    lengths = [1, 13, 7, 32]
    layout = SequenceLayout.from_lengths(torch.tensor(lengths))
    q, k, v = (torch.randn(sum(lengths), 4, 16) for _ in range(3))
    out = varlen_attention(torch.stack([q, k, v], 1), layout, backend="sdpa")
    torch.testing.assert_close(out, reference_attention(q, k, v, lengths), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("first_queries_only", [False, True], ids=["every-query", "first-queries"])
def test_sdpa_gradients_match_per_sequence_reference(first_queries_only):
    lengths = [1, 13, 7, 32]
    layout = SequenceLayout.from_lengths(torch.tensor(lengths))
    qkv = torch.randn(sum(lengths), 3, 4, 16, dtype=torch.float64, requires_grad=True)
    ours = varlen_attention(qkv, layout, backend="sdpa", first_queries_only=first_queries_only)
    theirs = reference_attention(*qkv.unbind(1), lengths)
    if first_queries_only:
        theirs = theirs[layout.first_token_index]
    weights = torch.randn_like(ours)
    ours_grad, theirs_grad = (torch.autograd.grad((out * weights).sum(), qkv)[0] for out in (ours, theirs))
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(ours_grad, theirs_grad)


def test_padded_attention_masks_once_per_forward_and_copies_no_padded_gradient():
    from benchmarks.op_count import OpCounter

    lengths = [3, 9, 5]
    layout = SequenceLayout.from_lengths(torch.tensor(lengths))
    qkv = torch.randn(sum(lengths), 3, 2, 8, requires_grad=True)
    with OpCounter() as forward:
        two_layers = varlen_attention(qkv, layout, backend="sdpa") + varlen_attention(qkv, layout, backend="sdpa")
    # The additive key mask is made once for both layers, not converted from a boolean in each.
    assert forward.counts["aten.masked_fill_.Scalar"] == 1 and "aten.where.self" not in forward.counts
    with OpCounter() as backward:
        two_layers.sum().backward()
    # Each token's gradient is gathered from the stacked q/k/v gradient where it lies; no
    # contiguous copy of the whole padded buffer first.
    assert "aten.clone.default" not in backward.counts
    assert backward.counts["aten.index.Tensor"] == 2


def test_auto_is_sdpa_on_cpu_and_env_overrides(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delenv("FASTBERT_ATTENTION", raising=False)
    assert resolve_attention_backend(cpu, 0.1) == "sdpa"
    monkeypatch.setenv("FASTBERT_ATTENTION", "sdpa")
    assert resolve_attention_backend(cpu, 0.0) == "sdpa"


@pytest.mark.parametrize("name", ["flash_attn", "torch_varlen"])
def test_forcing_an_unavailable_backend_is_a_clear_error(name):
    with pytest.raises(RuntimeError, match=f"attention backend {name} needs CUDA"):
        resolve_attention_backend(torch.device("cpu"), 0.0, name)


def test_unknown_backend(monkeypatch):
    monkeypatch.setenv("FASTBERT_ATTENTION", "magic")
    with pytest.raises(ValueError, match="'magic' is unknown"):
        resolve_attention_backend(torch.device("cpu"), 0.0)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["flash_attn", "torch_varlen"])
def test_cuda_varlen_backends_match_sdpa(name):
    device = torch.device("cuda")
    try:
        resolve_attention_backend(device, 0.0, name)
    except RuntimeError as err:
        pytest.skip(str(err))
    lengths = [1, 77, 128, 3, 64]
    layout = SequenceLayout.from_lengths(torch.tensor(lengths, device=device))
    q, k, v = (torch.randn(sum(lengths), 12, 64, device=device, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    out = varlen_attention(torch.stack([q, k, v], 1), layout, backend=name)
    ref = reference_attention(q.float(), k.float(), v.float(), lengths)
    sdpa = varlen_attention(torch.stack([q, k, v], 1), layout, backend="sdpa")
    tolerance = 2 * (sdpa.float() - ref).abs().max().item() + 1e-3
    assert (out.float() - ref).abs().max().item() <= tolerance
