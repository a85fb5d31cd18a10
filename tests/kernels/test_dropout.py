"""Dropout inside the fused kernels: rate, reproducibility, and a backward that replays
exactly the forward's mask (checked against references built from the recovered mask)."""

import math

import pytest
import torch

from fastbert.kernels import reference, triton_ops
from kernel_checks import assert_close_to_reference, cast_inputs, run_op

P = 0.3
ROWS, HIDDEN = 130, 1000
EPS = 1e-12


def embedding_inputs() -> dict[str, torch.Tensor]:
    return {
        "input_ids": torch.randint(0, 37, (ROWS,)),
        "token_type_ids": torch.randint(0, 2, (ROWS,)),
        "position_ids": torch.randint(0, 40, (ROWS,)),
        "word_embeddings": torch.randn(37, HIDDEN),
        "token_type_embeddings": torch.randn(2, HIDDEN),
        "position_embeddings": torch.randn(40, HIDDEN),
        "weight": torch.randn(HIDDEN),
        "bias": torch.randn(HIDDEN),
    }


def layer_norm_inputs() -> dict[str, torch.Tensor]:
    return {
        "x": torch.randn(ROWS, HIDDEN),
        "weight": torch.randn(HIDDEN),
        "bias": torch.randn(HIDDEN),
        "residual": torch.randn(ROWS, HIDDEN),
        "x_bias": torch.randn(HIDDEN),
    }


def layer_norm_mask(seed: int) -> torch.Tensor:
    """The mask layer_norm draws after ``torch.manual_seed(seed)`` for a [ROWS, HIDDEN] input.

    Normalising dropout(ones) leaves each row two values: kept elements above the row mean
    (positive with weight 1, bias 0) and dropped ones below it.
    """
    torch.manual_seed(seed)
    out = triton_ops.layer_norm(torch.ones(ROWS, HIDDEN), torch.ones(HIDDEN), torch.zeros(HIDDEN), EPS, dropout_p=P)
    return out > 0


def assert_keep_fraction_plausible(mask: torch.Tensor) -> None:
    sigma = math.sqrt(P * (1 - P) / mask.numel())
    assert abs(mask.double().mean().item() - (1 - P)) < 5 * sigma


def test_mask_lanes_and_rows_are_independent():
    # One random word serves four neighbouring columns: each column of a group must take a
    # different word (no two lanes alike) and each row its own groups.
    kept = layer_norm_mask(seed=4).double()
    limit = 5 / math.sqrt(ROWS * (HIDDEN // 4))
    for lane in range(4):
        assert_keep_fraction_plausible(kept[:, lane::4].bool())
    for a, b in ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3), (3, 4)):  # (3, 4): across a group boundary
        columns = kept[:, a : HIDDEN - 4 : 4].flatten(), kept[:, b : HIDDEN - 4 + b - a : 4].flatten()
        assert abs(torch.corrcoef(torch.stack(columns))[0, 1].item()) < limit, (a, b)
    rows = kept[:-1].flatten(), kept[1:].flatten()
    assert abs(torch.corrcoef(torch.stack(rows))[0, 1].item()) < 5 / math.sqrt(ROWS * HIDDEN)


def test_embedding_dropout_rate_and_backward_replay():
    inputs = cast_inputs(embedding_inputs(), torch.float32)
    torch.manual_seed(0)
    out, grads, grad_out = run_op(triton_ops.embedding_layer_norm, inputs, {"eps": EPS, "dropout_p": P})
    kept = out != 0  # a LayerNorm output of random inputs is never exactly 0
    assert_keep_fraction_plausible(kept)

    def masked_reference(**kw):
        return reference.embedding_layer_norm(**kw, eps=EPS) * kept / (1 - P)

    exact_out, exact_grads, _ = run_op(masked_reference, cast_inputs(inputs, torch.float64), {}, grad_out)
    assert_close_to_reference("output", out, exact_out)
    for name, grad in grads.items():
        assert_close_to_reference(f"d{name}", grad, exact_grads[name])


def test_layer_norm_dropout_rate_and_backward_replay():
    kept = layer_norm_mask(seed=1)
    assert_keep_fraction_plausible(kept)
    inputs = cast_inputs(layer_norm_inputs(), torch.float32)
    torch.manual_seed(1)
    out, grads, grad_out = run_op(triton_ops.layer_norm, inputs, {"eps": EPS, "dropout_p": P})

    def masked_reference(x, weight, bias, residual, x_bias):
        return reference.layer_norm((x + x_bias) * kept / (1 - P), weight, bias, EPS, residual)

    exact_out, exact_grads, _ = run_op(masked_reference, cast_inputs(inputs, torch.float64), {}, grad_out)
    assert_close_to_reference("output", out, exact_out)
    for name, grad in grads.items():
        assert_close_to_reference(f"d{name}", grad, exact_grads[name])


def test_layer_norm_dropout_without_residual_or_bias():
    kept = layer_norm_mask(seed=2)
    inputs = cast_inputs({k: v for k, v in layer_norm_inputs().items() if k in ("x", "weight", "bias")}, torch.float32)
    torch.manual_seed(2)
    out, grads, grad_out = run_op(triton_ops.layer_norm, inputs, {"eps": EPS, "dropout_p": P})

    def masked_reference(x, weight, bias):
        return reference.layer_norm(x * kept / (1 - P), weight, bias, EPS)

    exact_out, exact_grads, _ = run_op(masked_reference, cast_inputs(inputs, torch.float64), {}, grad_out)
    assert_close_to_reference("output", out, exact_out)
    for name, grad in grads.items():
        assert_close_to_reference(f"d{name}", grad, exact_grads[name])


@pytest.mark.parametrize("op, make_inputs", [
    ("embedding_layer_norm", embedding_inputs),
    ("layer_norm", layer_norm_inputs),
])
def test_same_seed_same_output_and_new_seed_new_mask(op, make_inputs):
    fn, inputs = getattr(triton_ops, op), make_inputs()
    outputs = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        outputs.append(fn(**inputs, eps=EPS, dropout_p=P))
    assert torch.equal(outputs[0], outputs[1])
    assert not torch.equal(outputs[0], outputs[2])


@pytest.mark.parametrize("op, make_inputs", [
    ("embedding_layer_norm", embedding_inputs),
    ("layer_norm", layer_norm_inputs),
])
def test_zero_probability_is_no_dropout_and_draws_no_seed(op, make_inputs):
    inputs = make_inputs()
    state = torch.get_rng_state()
    out = getattr(triton_ops, op)(**inputs, eps=EPS, dropout_p=0.0)
    assert torch.equal(torch.get_rng_state(), state)
    exact = getattr(reference, op)(**cast_inputs(inputs, torch.float64), eps=EPS)
    assert_close_to_reference("output", out, exact.detach())


@pytest.mark.parametrize("p", [-0.1, 1.0])
def test_refuses_probability_outside_unit_interval(p):
    with pytest.raises(ValueError, match="dropout_p"):
        triton_ops.layer_norm(torch.randn(2, 8), torch.ones(8), torch.zeros(8), EPS, dropout_p=p)


def test_a_seed_from_a_drawn_block_is_read_at_its_offset():
    # The model draws all of a forward's seeds at once and hands each kernel a one-element
    # view: the kernel must read the view's element, forward and in the replayed backward.
    from fastbert.kernels._utils import dropout_seeds

    torch.manual_seed(2)
    block = dropout_seeds(3, P, torch.device("cpu"))
    inputs = cast_inputs(layer_norm_inputs(), torch.float32)
    view = run_op(triton_ops.layer_norm, inputs, {"eps": EPS, "dropout_p": P, "seed": block[1:2]})
    copy, other = (run_op(triton_ops.layer_norm, inputs, {"eps": EPS, "dropout_p": P, "seed": seed}, view[2])
                   for seed in (block[1:2].clone(), block[2:3]))
    assert torch.equal(view[0], copy[0]) and not torch.equal(view[0], other[0])
    for name in view[1]:
        assert torch.equal(view[1][name], copy[1][name]), name
    assert dropout_seeds(3, 0.0, torch.device("cpu")) is None
    with pytest.raises(ValueError, match="one-element int64"):
        triton_ops.layer_norm(inputs["x"], inputs["weight"], inputs["bias"], EPS, dropout_p=P, seed=block)
