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



def _ln_backward(inputs: dict, grad: torch.Tensor, grad_sums: torch.Tensor | None, backwards: int = 1) -> dict:
    leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}
    out = triton_ops.layer_norm(leaves["x"], leaves["weight"], leaves["bias"], EPS, leaves["residual"], 0.1,
                                leaves["x_bias"], torch.tensor([7]), grad_sums)
    for i in range(backwards):
        out.backward(grad, retain_graph=i + 1 < backwards)
    return leaves


def test_grad_sums_take_the_parameter_gradients_without_a_reduction_launch():
    from benchmarks.op_count import OpCounter

    torch.manual_seed(0)
    inputs = ln_inputs(2000, 64, True, True)  # enough rows for several programs to add into the sums
    grad = torch.randn(2000, 64)
    reduced = _ln_backward(inputs, grad, None)
    sums = torch.zeros(3 * 64)
    with OpCounter() as ops:
        summed = _ln_backward(inputs, grad, sums)
    assert "aten.sum" not in ops.by_op(), ops.by_op()
    for name in ("x", "residual", "weight", "bias", "x_bias"):
        torch.testing.assert_close(summed[name].grad, reduced[name].grad, rtol=1e-5, atol=1e-5, msg=name)
    # The parameters' gradients are the buffer itself (weight, bias, x_bias in turn), not copies.
    for i, name in enumerate(("weight", "bias", "x_bias")):
        assert summed[name].grad.data_ptr() == sums[i * 64:].data_ptr()


def test_grad_sums_serve_one_backward_and_deterministic_mode_never_uses_them():
    torch.manual_seed(0)
    inputs, grad = ln_inputs(2000, 64, True, True), torch.randn(2000, 64)
    once = _ln_backward(inputs, grad, None)
    twice = _ln_backward(inputs, grad, torch.zeros(3 * 64), backwards=2)  # a retained graph, run again
    for name in ("weight", "bias", "x_bias", "x"):
        torch.testing.assert_close(twice[name].grad, 2 * once[name].grad, rtol=1e-5, atol=1e-5, msg=name)
    sums = torch.zeros(3 * 64)
    torch.use_deterministic_algorithms(True)
    try:
        deterministic = _ln_backward(inputs, grad, sums)
    finally:
        torch.use_deterministic_algorithms(False)
    assert not sums.any()  # the partial sums were reduced in their fixed order instead
    torch.testing.assert_close(deterministic["weight"].grad, once["weight"].grad)


def test_refuses_grad_sums_of_the_wrong_size_or_dtype():
    inputs = ln_inputs(4, 64, False, True)
    for bad in (torch.zeros(2 * 64), torch.zeros(3 * 64, dtype=torch.float64)):
        with pytest.raises(ValueError, match="grad_sums must be a contiguous fp32 vector of 192"):
            triton_ops.layer_norm(inputs["x"], inputs["weight"], inputs["bias"], EPS, None, 0.0, inputs["x_bias"], None, bad)
