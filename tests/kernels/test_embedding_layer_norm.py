"""Triton dropout(LayerNorm(word[ids] + token_type[tt] + position[pos])) against the fp64 reference."""

import pytest
import torch

from fastbert.kernels import triton_ops
from kernel_checks import check_against_reference

VOCAB = 37  # fewer ids than tokens, so ids repeat and their gradients must be summed
MAX_POSITIONS = 40
DTYPES = [torch.float32, torch.float16]
EPS = 1e-12


def tables(hidden: int) -> dict[str, torch.Tensor]:
    return {
        "word_embeddings": torch.randn(VOCAB, hidden),
        "token_type_embeddings": torch.randn(2, hidden),
        "position_embeddings": torch.randn(MAX_POSITIONS, hidden),
        "weight": torch.randn(hidden),
        "bias": torch.randn(hidden),
    }


def flat_ids(tokens: int) -> dict[str, torch.Tensor]:
    """The unpadded layout: one id per real token, positions restarting per sequence."""
    return {
        "input_ids": torch.randint(0, VOCAB, (tokens,)),
        "token_type_ids": torch.randint(0, 2, (tokens,)),
        "position_ids": torch.randint(0, MAX_POSITIONS, (tokens,)),
    }


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("hidden", [64, 384, 768, 1000])
@pytest.mark.parametrize("tokens", [1, 7, 130])
def test_flat_ids_match_reference(tokens, hidden, dtype):
    check_against_reference("embedding_layer_norm", {**flat_ids(tokens), **tables(hidden)}, dtype, eps=EPS)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_padded_batch_with_broadcast_positions_matches_reference(dtype):
    batch, length = 10, 13
    inputs = {
        "input_ids": torch.randint(0, VOCAB, (batch, length)),
        "token_type_ids": torch.randint(0, 2, (batch, length)),
        "position_ids": torch.arange(length)[None, :],  # [1, T] as transformers passes it
        **tables(384),
    }
    check_against_reference("embedding_layer_norm", inputs, dtype, eps=EPS)


def test_int32_ids_match_reference():
    ids = {name: t.to(torch.int32) for name, t in flat_ids(130).items()}
    check_against_reference("embedding_layer_norm", {**ids, **tables(768)}, torch.float32, eps=EPS)


def test_every_token_the_same_id():
    # Worst case for the table-gradient scatter: all rows land in one table row.
    ids = {name: torch.zeros(130, dtype=torch.long) for name in ("input_ids", "token_type_ids", "position_ids")}
    check_against_reference("embedding_layer_norm", {**ids, **tables(64)}, torch.float32, eps=EPS)


def test_refuses_tables_of_different_widths():
    t = tables(64)
    with pytest.raises(ValueError, match="position_embeddings has width 32"):
        triton_ops.embedding_layer_norm(
            *flat_ids(3).values(), t["word_embeddings"], t["token_type_embeddings"],
            torch.randn(MAX_POSITIONS, 32), t["weight"], t["bias"], EPS,
        )


@pytest.fixture
def deterministic_algorithms():
    previous = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


@pytest.fixture
def torch_scatters(monkeypatch):
    """Counts the table gradients that torch's embedding backward scatters (the fallback path)."""
    from fastbert.kernels import triton_embedding_layer_norm as module

    calls = []
    original = module._table_grad
    monkeypatch.setattr(module, "_table_grad", lambda *args: calls.append(1) or original(*args))
    return calls


def test_default_mode_adds_into_the_tables_in_the_kernel(torch_scatters):
    check_against_reference("embedding_layer_norm", {**flat_ids(130), **tables(384)}, torch.float32, eps=EPS)
    assert torch_scatters == []


@pytest.mark.usefixtures("deterministic_algorithms")
def test_deterministic_mode_scatters_through_torch_and_matches_reference(torch_scatters):
    check_against_reference("embedding_layer_norm", {**flat_ids(130), **tables(384)}, torch.float32, eps=EPS)
    assert len(torch_scatters) == 3


def test_many_token_types_fall_back_to_torch_scatter_and_match_reference(torch_scatters):
    inputs = {**flat_ids(130), **tables(384)}
    inputs["token_type_ids"] = torch.randint(0, 11, (130,))  # more types than the kernel sums in registers
    inputs["token_type_embeddings"] = torch.randn(11, 384)
    check_against_reference("embedding_layer_norm", inputs, torch.float32, eps=EPS)
    assert len(torch_scatters) == 3


@pytest.mark.parametrize("types", [1, 3])
def test_odd_token_type_counts_match_reference(types):
    inputs = {**flat_ids(130), **tables(768)}
    inputs["token_type_ids"] = torch.randint(0, types, (130,))
    inputs["token_type_embeddings"] = torch.randn(types, 768)
    check_against_reference("embedding_layer_norm", inputs, torch.float32, eps=EPS)


def test_reference_takes_the_triton_arguments():
    # The public function hands both implementations the same positional arguments.
    import inspect

    from fastbert.kernels import reference

    assert inspect.signature(reference.embedding_layer_norm) == inspect.signature(triton_ops.embedding_layer_norm)


def _eln_backward(inputs: dict, grad: torch.Tensor, grad_sums: torch.Tensor | None, backwards: int = 1) -> dict:
    leaves = {k: v.clone().requires_grad_() if v.is_floating_point() else v for k, v in inputs.items()}
    out = triton_ops.embedding_layer_norm(**leaves, eps=EPS, dropout_p=0.1, seed=torch.tensor([7]), grad_sums=grad_sums)
    for i in range(backwards):
        out.backward(grad, retain_graph=i + 1 < backwards)
    return leaves


PARAMETERS = ("word_embeddings", "token_type_embeddings", "position_embeddings", "weight", "bias")


def test_grad_sums_take_the_parameter_gradients_without_a_reduction_launch():
    from benchmarks.op_count import OpCounter

    torch.manual_seed(0)
    inputs, grad = {**flat_ids(2000), **tables(64)}, torch.randn(2000, 64)  # enough rows for several programs
    reduced = _eln_backward(inputs, grad, None)
    sums = torch.zeros(4 * 64)
    with OpCounter() as ops:
        summed = _eln_backward(inputs, grad, sums)
    assert "aten.sum" not in ops.by_op(), ops.by_op()
    for name in PARAMETERS:
        torch.testing.assert_close(summed[name].grad, reduced[name].grad, rtol=1e-5, atol=1e-5, msg=name)
    # The gradients are the buffer itself (weight, bias, then the two token-type rows), not copies.
    for start, name in ((0, "weight"), (64, "bias"), (128, "token_type_embeddings")):
        assert summed[name].grad.data_ptr() == sums[start:].data_ptr(), name


def test_grad_sums_serve_one_backward_and_deterministic_mode_never_uses_them(deterministic_algorithms):
    torch.manual_seed(0)
    inputs, grad = {**flat_ids(2000), **tables(64)}, torch.randn(2000, 64)
    torch.use_deterministic_algorithms(False)
    once = _eln_backward(inputs, grad, None)
    twice = _eln_backward(inputs, grad, torch.zeros(4 * 64), backwards=2)  # a retained graph, run again
    for name in PARAMETERS:
        torch.testing.assert_close(twice[name].grad, 2 * once[name].grad, rtol=1e-5, atol=1e-5, msg=name)
    torch.use_deterministic_algorithms(True, warn_only=True)  # the fixture restores the previous mode
    sums = torch.zeros(4 * 64)
    deterministic = _eln_backward(inputs, grad, sums)
    assert not sums.any()  # the partial sums were reduced in their fixed order instead
    for name in PARAMETERS:
        torch.testing.assert_close(deterministic[name].grad, once[name].grad, rtol=1e-5, atol=1e-5, msg=name)


def test_grad_sums_with_many_token_types_take_the_layer_norm_gradients(torch_scatters):
    # Too many types for the kernel to sum: torch scatters that table, the buffer takes the rest.
    torch.manual_seed(0)
    inputs, grad = {**flat_ids(2000), **tables(64)}, torch.randn(2000, 64)
    inputs["token_type_ids"] = torch.randint(0, 11, (2000,))
    inputs["token_type_embeddings"] = torch.randn(11, 64)
    reduced = _eln_backward(inputs, grad, None)
    sums = torch.zeros(13 * 64)
    summed = _eln_backward(inputs, grad, sums)
    assert len(torch_scatters) == 6  # three tables, each backward
    for name in PARAMETERS:
        torch.testing.assert_close(summed[name].grad, reduced[name].grad, rtol=1e-5, atol=1e-5, msg=name)
    assert summed["weight"].grad.data_ptr() == sums.data_ptr() and not sums[128:].any()


def test_refuses_grad_sums_of_the_wrong_size_or_dtype():
    t = tables(64)
    for bad in (torch.zeros(2 * 64), torch.zeros(4 * 64, dtype=torch.float64)):
        with pytest.raises(ValueError, match="grad_sums must be a contiguous fp32 vector of 256"):
            triton_ops.embedding_layer_norm(*flat_ids(3).values(), *t.values(), EPS, grad_sums=bad)
