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
