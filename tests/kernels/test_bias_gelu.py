"""Triton GELU(x + bias) against the fp64 torch reference."""

import pytest
import torch

from fastbert.kernels import triton_ops
from kernel_checks import cast_inputs, check_against_reference, run_op

DTYPES = [torch.float32, torch.float16]


def gelu_inputs(rows: int, cols: int) -> dict[str, torch.Tensor]:
    # Spread over GELU's curved region and both tails.
    return {"x": torch.randn(rows, cols) * 3, "bias": torch.randn(cols)}


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cols", [64, 384, 768, 1000])
@pytest.mark.parametrize("rows", [1, 7, 130])
def test_matches_reference(rows, cols, dtype, approximate):
    check_against_reference("bias_gelu", gelu_inputs(rows, cols), dtype, approximate=approximate)


@pytest.mark.parametrize("cols", [3072, 2500])
def test_rows_wider_than_one_column_block(cols):
    check_against_reference("bias_gelu", gelu_inputs(9, cols), torch.float32)


def test_batched_non_contiguous_input():
    x = torch.randn(384, 2, 5).permute(1, 2, 0)
    inputs = {"x": x, "bias": torch.randn(384)}
    check_against_reference("bias_gelu", inputs, torch.float32)
    grad_out = torch.randn(2, 5, 384)
    out_t, grads_t, _ = run_op(triton_ops.bias_gelu, cast_inputs(inputs, torch.float32), {}, grad_out)
    out_c, grads_c, _ = run_op(triton_ops.bias_gelu, cast_inputs(dict(inputs, x=x.contiguous()), torch.float32), {}, grad_out)
    assert torch.equal(out_t, out_c) and torch.equal(grads_t["x"], grads_c["x"]) and torch.equal(grads_t["bias"], grads_c["bias"])


def test_saturates_in_the_tails():
    x = torch.tensor([[-60.0, -20.0, 20.0, 60.0]])
    out = triton_ops.bias_gelu(x, torch.zeros(4), "tanh")
    assert torch.equal(out, torch.tensor([[0.0, 0.0, 20.0, 60.0]]))


def test_refuses_unknown_approximation():
    with pytest.raises(ValueError, match="approximate='sigmoid'"):
        triton_ops.bias_gelu(torch.randn(2, 8), torch.randn(8), "sigmoid")


def test_refuses_mismatched_bias():
    with pytest.raises(ValueError, match="bias shape"):
        triton_ops.bias_gelu(torch.randn(2, 8), torch.randn(7))


def test_grad_sums_take_the_bias_gradient_without_a_reduction_launch():
    from benchmarks.op_count import OpCounter

    torch.manual_seed(0)
    x, bias, grad = torch.randn(3000, 48), torch.randn(48), torch.randn(3000, 48)  # several programs add in

    def backward(grad_sums):
        xl, bl = x.clone().requires_grad_(), bias.clone().requires_grad_()
        triton_ops.bias_gelu(xl, bl, "none", grad_sums).backward(grad)
        return xl.grad, bl.grad

    dx, dbias = backward(None)
    sums = torch.zeros(48)
    with OpCounter() as ops:
        dx_summed, dbias_summed = backward(sums)
    assert "aten.sum" not in ops.by_op(), ops.by_op()
    torch.testing.assert_close(dx_summed, dx)
    torch.testing.assert_close(dbias_summed, dbias, rtol=1e-5, atol=1e-4)
    assert dbias_summed.data_ptr() == sums.data_ptr()
