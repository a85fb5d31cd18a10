"""fastbert.kernels.dropout: the CPU mask drawn four elements per random 64-bit word."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fastbert.kernels import dropout
from fastbert.kernels.dropout import cpu_keep_mask
from fastbert.model.attention import _attention_with_cpu_dropout


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_drop_rate_within_statistical_bounds(p):
    torch.manual_seed(0)
    n = 1_000_003  # not a multiple of four: the last word is only partly used
    keep, keep_probability = cpu_keep_mask((n,), p)
    assert keep.shape == (n,) and keep.dtype == torch.bool
    assert keep_probability == pytest.approx(1 - p, abs=2**-17)
    sigma = math.sqrt(p * (1 - p) / n)
    assert abs((1 - keep.float().mean().item()) - p) < 5 * sigma


def test_every_lane_of_a_word_is_uniform():
    # Each int64 word is read as four int16 lanes; none of them may be biased (a sign bit
    # that is always 0 would make one lane drop nothing).
    torch.manual_seed(1)
    keep, _ = cpu_keep_mask((200_000, 4), 0.5)
    per_lane = 1 - keep.float().mean(0)
    assert torch.all((per_lane - 0.5).abs() < 5 * math.sqrt(0.25 / 200_000)), per_lane


def test_kept_values_scaled_and_gradient_uses_the_same_mask():
    torch.manual_seed(2)
    x = torch.randn(64, 384, dtype=torch.float64, requires_grad=True)
    out = dropout(x, 0.25)
    kept = out != 0
    _, keep_probability = cpu_keep_mask((1,), 0.25)
    torch.testing.assert_close(out[kept], x.detach()[kept] / keep_probability)
    grad = torch.randn_like(out)
    out.backward(grad)
    torch.testing.assert_close(x.grad, torch.where(kept, grad / keep_probability, 0.0))


def test_expectation_is_preserved():
    torch.manual_seed(3)
    x = torch.full((2_000_000,), 3.0)
    assert dropout(x, 0.1).mean().item() == pytest.approx(3.0, rel=3e-3)


def test_same_seed_same_mask_and_identity_cases():
    x = torch.randn(7, 1000)
    torch.manual_seed(4)
    first = dropout(x, 0.1)
    torch.manual_seed(4)
    assert torch.equal(first, dropout(x, 0.1))
    assert dropout(x, 0.0) is x and dropout(x, 0.3, training=False) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))
    with pytest.raises(ValueError, match="dropout probability"):
        dropout(x, 1.5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_low_precision_keeps_dtype_and_scales_without_bias(dtype):
    torch.manual_seed(7)
    x = torch.full((100_000,), 7.0, dtype=dtype)
    out = dropout(x, 0.1)
    assert out.dtype == dtype
    kept = out[out != 0].float()
    _, keep_probability = cpu_keep_mask((1,), 0.1)
    # 7 / keep rounded once to the dtype: 7.78125 in bf16, where 7 times the scale rounded
    # to bf16 (1.109375) would give 7.75.
    assert torch.all(kept == torch.tensor(7 / keep_probability, dtype=dtype).float())


def test_attention_with_cpu_dropout_is_sdpa_when_nothing_is_dropped():
    torch.manual_seed(5)
    q, k, v = (torch.randn(3, 2, 9, 16, dtype=torch.float64) for _ in range(3))
    key_mask = (torch.arange(9) < torch.tensor([9, 4, 1])[:, None])[:, None, None, :]
    key_bias = torch.zeros(key_mask.shape, dtype=q.dtype).masked_fill(~key_mask, float("-inf"))
    # p below 2**-17 rounds to no dropped lanes: the same math as SDPA without dropout.
    ours = _attention_with_cpu_dropout(q, k, v, key_bias, 1e-7)
    torch.testing.assert_close(ours, F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask))


def test_attention_with_cpu_dropout_drops_probabilities():
    torch.manual_seed(6)
    q, k = torch.zeros(1, 1, 400, 8), torch.zeros(1, 1, 400, 8)
    v = torch.ones(1, 1, 400, 8)
    no_padding = torch.zeros(1, 1, 1, 400)  # the additive key mask of 400 real keys
    out = _attention_with_cpu_dropout(q, k, v, no_padding, 0.5)
    # Uniform probabilities 1/400, half dropped, kept ones doubled: each row sums to about 1.
    assert out.mean().item() == pytest.approx(1.0, abs=0.05)
    assert out.std().item() > 0.01
