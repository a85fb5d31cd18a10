"""Shared checks for the kernel tests: run an op forward and backward, compare the Triton
implementation with the fp64 torch reference using dtype-specific tolerances."""

from __future__ import annotations

from typing import Callable

import torch

from fastbert.kernels import reference, triton_ops

FP32_RTOL = 1e-5
# Low precision: at most twice torch's own error against fp64, plus one ulp at 1 of the
# precision the op ran in (2**-10 for fp16), as a fraction of the tensor's largest magnitude.


def cast_inputs(inputs: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Leaf copies of ``inputs``: floating tensors in ``dtype`` and requiring grad, indices as they are."""
    return {
        name: t.detach().to(dtype).requires_grad_() if t.is_floating_point() else t
        for name, t in inputs.items()
    }


def run_op(
    fn: Callable[..., torch.Tensor], inputs: dict[str, torch.Tensor], options: dict, grad_out: torch.Tensor | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """Output, gradients of every floating input, and the output gradient used (random when not given)."""
    out = fn(**inputs, **options)
    if grad_out is None:
        grad_out = torch.randn_like(out)
    names = [name for name, t in inputs.items() if t.requires_grad]
    grads = torch.autograd.grad(out, [inputs[n] for n in names], grad_out.to(out.dtype))
    return out.detach(), dict(zip(names, grads)), grad_out


def assert_close_to_reference(
    name: str,
    ours: torch.Tensor,
    exact: torch.Tensor,
    torch_low_precision: torch.Tensor | None = None,
    precision: torch.dtype = torch.float16,
) -> None:
    """fp32: within FP32_RTOL relative (and of the largest magnitude); lower precisions: no
    worse than twice torch's own op in that precision, plus a small atol set by ``precision``
    (the op's working precision, which an fp32 gradient of an fp32 parameter does not show)."""
    scale = exact.abs().max().item()
    if torch_low_precision is None:
        torch.testing.assert_close(
            ours.double(), exact, rtol=FP32_RTOL, atol=FP32_RTOL * scale, msg=lambda m: f"{name}: {m}"
        )
        return
    error = (ours.double() - exact).abs().max().item()
    torch_error = (torch_low_precision.double() - exact).abs().max().item()
    bound = 2 * torch_error + torch.finfo(precision).eps * max(scale, 1.0)
    assert error <= bound, f"{name}: max error {error:.3g} > {bound:.3g} (torch's own: {torch_error:.3g})"


def check_against_reference(op: str, inputs: dict[str, torch.Tensor], dtype: torch.dtype, **options) -> None:
    """Triton ``op`` in ``dtype`` against the fp64 reference, forward and every gradient."""
    ours_in = cast_inputs(inputs, dtype)
    out, grads, grad_out = run_op(getattr(triton_ops, op), ours_in, options)
    exact_out, exact_grads, _ = run_op(getattr(reference, op), cast_inputs(ours_in, torch.float64), options, grad_out)
    low_out, low_grads = None, {}
    if dtype != torch.float32:
        low_out, low_grads, _ = run_op(getattr(reference, op), cast_inputs(ours_in, dtype), options, grad_out)
    assert out.dtype == dtype and out.shape == exact_out.shape
    assert_close_to_reference("output", out, exact_out, low_out)
    assert grads.keys() == exact_grads.keys()
    for name, grad in grads.items():
        assert grad.dtype == dtype and grad.shape == ours_in[name].shape, name
        assert_close_to_reference(f"d{name}", grad, exact_grads[name], low_grads.get(name))
