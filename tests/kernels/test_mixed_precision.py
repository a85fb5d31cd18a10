"""The fused ops under mixed precision: low-precision activations with fp32 parameters,
inside and outside ``torch.autocast``. Both backends return the dtype
:mod:`fastbert.kernels.precision` prescribes, hand every input its gradient in its own
dtype, and stay within twice the torch reference's own error of the fp64 result, plus one
ulp at 1 of the low precision (relative to the largest magnitude): the Triton LayerNorm
saves its pre-norm sum in the activation dtype, where torch's autocast path keeps fp32,
so its weight gradient carries that one rounding.
"""

import pytest
import torch

from fastbert.kernels import reference, triton_ops
from kernel_checks import assert_close_to_reference, run_op

ROWS, HIDDEN = 130, 384
LOW = [torch.bfloat16, torch.float16]
EPS = 1e-12


def layer_norm_inputs(low: torch.dtype) -> dict[str, torch.Tensor]:
    """As BERT's output block under autocast: a low-precision matmul output and residual stream, fp32 parameters."""
    return {
        "x": torch.randn(ROWS, HIDDEN).to(low),
        "weight": torch.randn(HIDDEN),
        "bias": torch.randn(HIDDEN),
        "residual": (torch.randn(ROWS, HIDDEN) * 2).to(low),
        "x_bias": torch.randn(HIDDEN),
    }


def bias_gelu_inputs(low: torch.dtype) -> dict[str, torch.Tensor]:
    return {"x": (torch.randn(ROWS, HIDDEN) * 2).to(low), "bias": torch.randn(HIDDEN)}


def embedding_inputs(low: torch.dtype) -> dict[str, torch.Tensor]:
    """fp32 tables (the master weights); the output dtype comes from autocast alone."""
    vocab, positions = 37, 40
    return {
        "input_ids": torch.randint(0, vocab, (ROWS,)),
        "token_type_ids": torch.randint(0, 2, (ROWS,)),
        "position_ids": torch.randint(0, positions, (ROWS,)),
        "word_embeddings": torch.randn(vocab, HIDDEN),
        "token_type_embeddings": torch.randn(2, HIDDEN),
        "position_embeddings": torch.randn(positions, HIDDEN),
        "weight": torch.randn(HIDDEN),
        "bias": torch.randn(HIDDEN),
    }


OPS = {
    "layer_norm": (layer_norm_inputs, {"eps": EPS}),
    "bias_gelu": (bias_gelu_inputs, {}),
    "embedding_layer_norm": (embedding_inputs, {"eps": EPS}),
}


def leaves(inputs: dict[str, torch.Tensor], dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Fresh leaves requiring grad (floating ones cast to ``dtype`` when given), indices untouched."""
    return {
        name: (t.detach().to(dtype or t.dtype).requires_grad_() if t.is_floating_point() else t)
        for name, t in inputs.items()
    }


def run_under(autocast: torch.dtype | None, fn, inputs, options, grad_out=None):
    with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
        return run_op(fn, inputs, options, grad_out)


@pytest.mark.parametrize("low", LOW, ids=str)
@pytest.mark.parametrize("op", OPS)
def test_autocast_output_dtype_gradients_and_accuracy(op, low):
    make_inputs, options = OPS[op]
    inputs = make_inputs(low)
    ours_in, torch_in = leaves(inputs), leaves(inputs)
    out, grads, grad_out = run_under(low, getattr(triton_ops, op), ours_in, options)
    torch_out, torch_grads, _ = run_under(low, getattr(reference, op), torch_in, options, grad_out)
    exact_out, exact_grads, _ = run_op(getattr(reference, op), leaves(inputs, torch.float64), options, grad_out)

    assert out.dtype == torch_out.dtype == low
    assert_close_to_reference("output", out, exact_out, torch_out, low)
    assert grads.keys() == torch_grads.keys() == exact_grads.keys()
    for name, grad in grads.items():
        # fp32 master weights get fp32 gradients; low-precision activations low-precision ones.
        assert grad.dtype == torch_grads[name].dtype == inputs[name].dtype, name
        assert_close_to_reference(f"d{name}", grad, exact_grads[name], torch_grads[name], low)


@pytest.mark.parametrize("op", ["layer_norm", "bias_gelu"])
def test_without_autocast_the_output_keeps_the_activation_dtype(op):
    """A model cast to fp16 whose caller passes fp32 parameters: no silent promotion to fp32."""
    make_inputs, options = OPS[op]
    inputs = make_inputs(torch.float16)
    out, grads, grad_out = run_op(getattr(triton_ops, op), leaves(inputs), options)
    torch_out, torch_grads, _ = run_op(getattr(reference, op), leaves(inputs), options, grad_out)
    exact_out, exact_grads, _ = run_op(getattr(reference, op), leaves(inputs, torch.float64), options, grad_out)
    assert out.dtype == torch_out.dtype == torch.float16
    assert_close_to_reference("output", out, exact_out, torch_out)
    for name, grad in grads.items():
        assert grad.dtype == inputs[name].dtype, name
        assert_close_to_reference(f"d{name}", grad, exact_grads[name], torch_grads[name])


def test_backward_inside_the_autocast_region_equals_backward_outside():
    """The autograd Functions call no autocast-dispatched op in backward, so where
    backward runs does not matter (and they need no custom_bwd)."""
    inputs = layer_norm_inputs(torch.bfloat16)
    grad_out = torch.randn(ROWS, HIDDEN)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = leaves(inputs)
        out = triton_ops.layer_norm(**inside, eps=EPS)
        grads_inside = torch.autograd.grad(out, list(inside.values()), grad_out.to(out.dtype))
    _, grads_outside, _ = run_under(torch.bfloat16, triton_ops.layer_norm, leaves(inputs), {"eps": EPS}, grad_out)
    for name, grad in zip(inside, grads_inside):
        assert torch.equal(grad, grads_outside[name]), name
