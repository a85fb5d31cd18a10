"""The fused kernels compiled for a real GPU: bf16/fp16/fp32 parity with the fp64
reference at sizes where many persistent programs each loop over many tiles, and
repeated runs that must agree bit for bit (a race in a reduction would show here)."""

import pytest
import torch

from fastbert.kernels import triton_ops
from kernel_checks import cast_inputs, check_against_reference, run_op

pytestmark = pytest.mark.gpu

DTYPES = [torch.bfloat16, torch.float16, torch.float32]
ROWS = 20_011  # odd, so the last tile is partial
REPEATS = 5
EPS = 1e-12


def cuda(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: t.cuda() for name, t in inputs.items()}


def layer_norm_inputs(hidden: int) -> dict[str, torch.Tensor]:
    return cuda({
        "x": torch.randn(ROWS, hidden) * 3, "weight": torch.randn(hidden), "bias": torch.randn(hidden),
        "residual": torch.randn(ROWS, hidden), "x_bias": torch.randn(hidden),
    })


def embedding_inputs(hidden: int) -> dict[str, torch.Tensor]:
    return cuda({
        "input_ids": torch.randint(0, 30522, (ROWS,)) % 997,  # repeated ids
        "token_type_ids": torch.randint(0, 2, (ROWS,)),
        "position_ids": torch.randint(0, 512, (ROWS,)),
        "word_embeddings": torch.randn(997, hidden), "token_type_embeddings": torch.randn(2, hidden),
        "position_embeddings": torch.randn(512, hidden), "weight": torch.randn(hidden), "bias": torch.randn(hidden),
    })


def gelu_inputs(cols: int) -> dict[str, torch.Tensor]:
    return cuda({"x": torch.randn(ROWS, cols) * 3, "bias": torch.randn(cols)})


CASES = [
    ("layer_norm", layer_norm_inputs, 768, {"eps": EPS}),
    ("layer_norm", layer_norm_inputs, 1000, {"eps": EPS}),
    ("layer_norm", layer_norm_inputs, 4096, {"eps": EPS}),
    ("embedding_layer_norm", embedding_inputs, 768, {"eps": EPS}),
    ("embedding_layer_norm", embedding_inputs, 1024, {"eps": EPS}),
    ("bias_gelu", gelu_inputs, 3072, {}),
    ("bias_gelu", gelu_inputs, 1000, {"approximate": "tanh"}),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op, make_inputs, hidden, options", CASES)
def test_matches_reference_on_gpu(op, make_inputs, hidden, options, dtype):
    check_against_reference(op, make_inputs(hidden), dtype, **options)


@pytest.fixture
def deterministic_torch():
    """The embedding tables' gradients are atomic adds (the kernel's, or torch's CUDA
    scatter), which repeat bit for bit only in deterministic mode, where the kernel hands
    them to torch's deterministic embedding backward; every other reduction must repeat
    in any mode."""
    previous = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("op, make_inputs, hidden, options", CASES)
@pytest.mark.usefixtures("deterministic_torch")
def test_repeated_runs_agree_bit_for_bit(op, make_inputs, hidden, options, dtype):
    inputs = cast_inputs(make_inputs(hidden), dtype)
    first_out, first_grads, grad_out = run_op(getattr(triton_ops, op), inputs, options)
    for _ in range(REPEATS):
        out, grads, _ = run_op(getattr(triton_ops, op), inputs, options, grad_out)
        assert torch.equal(out, first_out)
        for name, grad in grads.items():
            assert torch.equal(grad, first_grads[name]), name


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_dropout_replays_its_mask_on_gpu(dtype):
    p, hidden = 0.1, 768
    inputs = cast_inputs(layer_norm_inputs(hidden), dtype)
    torch.manual_seed(3)
    out, grads, grad_out = run_op(triton_ops.layer_norm, inputs, {"eps": EPS, "dropout_p": p})
    torch.manual_seed(3)
    ones = torch.ones(ROWS, hidden, device="cuda", dtype=dtype)
    kept = triton_ops.layer_norm(ones, ones[0], torch.zeros_like(ones[0]), EPS, dropout_p=p) > 0
    assert abs(kept.float().mean().item() - (1 - p)) < 0.002

    def masked(x, weight, bias, residual, x_bias):
        return torch.nn.functional.layer_norm((x + x_bias) * kept / (1 - p) + residual, (hidden,), weight, bias, EPS)

    exact_out, exact_grads, _ = run_op(masked, cast_inputs(inputs, torch.float64), {}, grad_out)
    tolerance = 1e-4 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(out.double(), exact_out, rtol=tolerance, atol=tolerance)
    for name, grad in grads.items():
        scale = exact_grads[name].abs().max().item()
        torch.testing.assert_close(grad.double(), exact_grads[name], rtol=tolerance, atol=tolerance * scale, msg=name)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("op, make_inputs, hidden, options, sums_of", [
    ("layer_norm", layer_norm_inputs, 768, {"eps": EPS}, 3),
    ("bias_gelu", gelu_inputs, 3072, {}, 1),
    ("embedding_layer_norm", embedding_inputs, 768, {"eps": EPS}, 4),  # weight, bias, two token-type rows
])
def test_grad_sums_added_by_many_programs_equal_the_reduced_partials(op, make_inputs, hidden, options, sums_of, dtype):
    # Every persistent program adds its column sums into the same buffer with atomics: the
    # parameters' gradients must equal the fixed-order reduction's to fp32 rounding.
    inputs = cast_inputs(make_inputs(hidden), dtype)
    _, reduced, grad_out = run_op(getattr(triton_ops, op), inputs, options)
    sums = torch.zeros(sums_of * hidden, device="cuda")
    _, summed, _ = run_op(getattr(triton_ops, op), inputs, {**options, "grad_sums": sums}, grad_out)
    assert sums.abs().sum() > 0  # the atomic path ran
    tolerance = 1e-4 if dtype == torch.float32 else 1e-2  # bf16 gradients: one rounding of differently ordered fp32 sums
    for name, grad in summed.items():
        scale = reduced[name].float().abs().max().item()
        torch.testing.assert_close(grad.float(), reduced[name].float(), rtol=tolerance, atol=tolerance * scale, msg=name)
