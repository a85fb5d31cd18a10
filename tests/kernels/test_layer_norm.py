"""Triton LayerNorm(dropout(x + x_bias) + residual) against the fp64 torch reference."""

import pytest
import torch

from fastbert.kernels import reference, triton_ops
from kernel_checks import cast_inputs, check_against_reference, run_op

ROWS = [1, 7, 130]
HIDDEN = [64, 384, 768, 1000]
DTYPES = [torch.float32, torch.float16]
EPS = 1e-12  # BERT's


def ln_inputs(rows: int, hidden: int, residual: bool, x_bias: bool) -> dict[str, torch.Tensor]:
    inputs = {"x": torch.randn(rows, hidden) * 3 + 0.5, "weight": torch.randn(hidden), "bias": torch.randn(hidden)}
    if residual:
        inputs["residual"] = torch.randn(rows, hidden)
    if x_bias:
        inputs["x_bias"] = torch.randn(hidden)
    return inputs


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("rows", ROWS)
def test_plain_layer_norm_matches_reference(rows, hidden, dtype):
    check_against_reference("layer_norm", ln_inputs(rows, hidden, False, False), dtype, eps=EPS)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("rows", ROWS)
def test_residual_and_x_bias_match_reference(rows, hidden, dtype):
    check_against_reference("layer_norm", ln_inputs(rows, hidden, True, True), dtype, eps=EPS)


@pytest.mark.parametrize("residual, x_bias", [(True, False), (False, True)])
def test_residual_or_x_bias_alone_match_reference(residual, x_bias):
    check_against_reference("layer_norm", ln_inputs(130, 384, residual, x_bias), torch.float32, eps=1e-5)


def test_batched_shape_and_widest_row():
    x = torch.randn(2, 3, 8192)
    check_against_reference("layer_norm", {"x": x, "weight": torch.randn(8192), "bias": torch.randn(8192)}, torch.float32, eps=EPS)


def test_non_contiguous_input_gives_same_result():
    inputs = ln_inputs(130, 384, True, True)
    base = torch.randn(384, 130)
    transposed = dict(inputs, x=base.t())
    contiguous = dict(inputs, x=base.t().contiguous())
    grad_out = torch.randn(130, 384)
    out_t, grads_t, _ = run_op(triton_ops.layer_norm, cast_inputs(transposed, torch.float32), {"eps": EPS}, grad_out)
    out_c, grads_c, _ = run_op(triton_ops.layer_norm, cast_inputs(contiguous, torch.float32), {"eps": EPS}, grad_out)
    assert torch.equal(out_t, out_c)
    for name in grads_c:
        assert torch.equal(grads_t[name], grads_c[name]), name


def test_residual_and_input_grads_are_independent_tensors():
    # Without dropout both gradients are one buffer; autograd must not let them alias.
    x, residual = torch.randn(7, 64, requires_grad=True), torch.randn(7, 64, requires_grad=True)
    triton_ops.layer_norm(x, torch.ones(64), torch.zeros(64), EPS, residual).square().sum().backward()
    torch.testing.assert_close(x.grad, residual.grad)
    x.grad.zero_()
    assert residual.grad.abs().sum() > 0


def test_empty_input():
    out = triton_ops.layer_norm(torch.randn(0, 64), torch.ones(64), torch.zeros(64), EPS)
    assert out.shape == (0, 64)


def test_refuses_rows_wider_than_the_kernel():
    with pytest.raises(ValueError, match="8193"):
        triton_ops.layer_norm(torch.randn(2, 8193), torch.ones(8193), torch.zeros(8193), EPS)


def test_refuses_mismatched_residual():
    with pytest.raises(ValueError, match="residual shape"):
        triton_ops.layer_norm(torch.randn(2, 64), torch.ones(64), torch.zeros(64), EPS, residual=torch.randn(3, 64))


def test_reference_agrees_with_layer_norm_definition():
    # Guards the oracle itself: the reference equals the textbook formula.
    x, w, b = torch.randn(7, 64, dtype=torch.float64), torch.randn(64, dtype=torch.float64), torch.randn(64, dtype=torch.float64)
    expected = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-5) * w + b
    torch.testing.assert_close(reference.layer_norm(x, w, b, 1e-5), expected)


def test_refuses_parameters_of_the_wrong_width():
    with pytest.raises(ValueError, match=r"x_bias has shape \(63,\); expected \(64,\)"):
        triton_ops.layer_norm(torch.randn(2, 64), torch.ones(64), torch.zeros(64), EPS, x_bias=torch.zeros(63))
