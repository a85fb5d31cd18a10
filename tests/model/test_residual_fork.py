"""linear_with_residual: autograd's gradients, with the fork's sum folded into the matmul."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from benchmarks.op_count import OpCounter
from fastbert.model.residual_fork import linear_with_residual, share_rows


def _leaves(*tensors):
    return [t.detach().clone().requires_grad_() for t in tensors]


def _loss(out, residual):
    # Different functions of the two outputs, so a swapped or dropped gradient shows.
    return out.sin().sum() + (residual * residual.cos()).sum()


@pytest.mark.parametrize("with_bias", [True, False])
def test_gradients_equal_autograds_of_linear_plus_residual(with_bias):
    torch.manual_seed(0)
    x, w, b = torch.randn(2, 9, 16, dtype=torch.float64), torch.randn(24, 16, dtype=torch.float64), torch.randn(24, dtype=torch.float64)
    ours, theirs = _leaves(x, w, b), _leaves(x, w, b)
    bias = ours[2] if with_bias else None
    torch.autograd.backward(_loss(*linear_with_residual(ours[0], ours[1], bias)))
    _loss(F.linear(theirs[0], theirs[1], theirs[2] if with_bias else None), theirs[0]).backward()
    for mine, reference in zip(ours[: 3 if with_bias else 2], theirs):
        torch.testing.assert_close(mine.grad, reference.grad, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(linear_with_residual, tuple(_leaves(x[0, :3], w[:5], b[:5])))


def test_the_fork_costs_one_addmm_in_backward_not_a_matmul_and_an_add():
    x, w = torch.randn(12, 16, requires_grad=True), torch.randn(8, 16, requires_grad=True)
    out, residual = linear_with_residual(x, w)
    loss = out.sum() + (3 * residual).sum()  # each output used once: the only sum of two gradients is the fork's
    with OpCounter() as ops:
        loss.backward()
    counts = ops.by_op()
    assert counts["aten.addmm"] == 1 and "aten.add" not in counts, counts


def test_an_unused_output_and_a_frozen_weight():
    x, w = torch.randn(5, 4, requires_grad=True), torch.randn(3, 4)  # w needs no gradient
    out, residual = linear_with_residual(x, w)
    out.sum().backward()  # the residual unused: x's gradient is the linear's alone
    torch.testing.assert_close(x.grad, w.sum(0).expand(5, 4))
    x.grad = None
    out, residual = linear_with_residual(x, w)
    (2 * residual).sum().backward()  # the linear unused
    torch.testing.assert_close(x.grad, torch.full((5, 4), 2.0))


def test_under_autocast_the_matmul_runs_in_the_autocast_dtype_and_gradients_keep_their_dtypes():
    torch.manual_seed(0)
    x, w, b = torch.randn(6, 16), torch.randn(8, 16), torch.randn(8)
    for stream_dtype in (torch.bfloat16, torch.float32):  # the residual stream in bf16 (fastbert's policy), or fp32
        ours, theirs = _leaves(x.to(stream_dtype), w, b), _leaves(x.to(stream_dtype), w, b)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, residual = linear_with_residual(*ours)
            assert out.dtype == torch.bfloat16 and residual.dtype == stream_dtype
            mine = _loss(out.float(), residual.float())
            reference = _loss(F.linear(*theirs).float(), theirs[0].float())
        mine.backward()
        reference.backward()
        for a, r in zip(ours, theirs):
            assert a.grad.dtype == r.grad.dtype
            torch.testing.assert_close(a.grad, r.grad, rtol=2e-2, atol=2e-2)


def _blocks(packed: torch.Tensor, rows: list[int], shared: bool) -> list[torch.Tensor]:
    """Row blocks of ``packed`` as leaves: views of one storage (``shared``) or separate copies."""
    parts = [p.detach().clone() for p in packed.split(rows)]
    leaves = [torch.nn.Parameter(p) for p in parts]
    if shared:
        share_rows(*leaves)
    return leaves


@pytest.mark.parametrize("shared", [True, False])
def test_row_blocks_give_each_block_the_stacked_weights_gradient(shared):
    torch.manual_seed(0)
    x, w, b = torch.randn(7, 16, dtype=torch.float64), torch.randn(24, 16, dtype=torch.float64), torch.randn(24, dtype=torch.float64)
    rows = [8, 8, 8]
    weights, biases = _blocks(w, rows, shared), _blocks(b, rows, shared)
    assert (weights[1].untyped_storage().data_ptr() == weights[0].untyped_storage().data_ptr()) == shared
    (xa,), (xb, wb, bb) = _leaves(x), _leaves(x, w, b)
    _loss(*linear_with_residual(xa, weights, biases)).backward()
    _loss(F.linear(xb, wb, bb), xb).backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(torch.cat([p.grad for p in weights]), wb.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(torch.cat([p.grad for p in biases]), bb.grad, rtol=1e-12, atol=1e-12)
    small = [p.detach()[:2].clone().requires_grad_() for p in weights]
    assert torch.autograd.gradcheck(lambda x_, *w_: linear_with_residual(x_, w_), (x[:3].clone().requires_grad_(), *small))


def test_blocks_in_one_storage_are_read_without_a_copy_and_others_are_concatenated():
    weights = _blocks(torch.randn(12, 4), [4, 4, 4], shared=True)
    with OpCounter() as ops:
        linear_with_residual(torch.randn(3, 4), weights)
    assert "aten.cat" not in ops.by_op()
    weights[1].data = weights[1].detach().clone()  # no longer between its neighbours
    with OpCounter() as ops:
        out, _ = linear_with_residual(torch.randn(3, 4), weights)
    assert ops.by_op()["aten.cat"] == 1 and out.shape == (3, 12)


def test_the_attentions_q_k_v_stay_in_one_storage_through_loading_and_moves(tmp_path):
    from fastbert.model import BertConfig, BertForPreTraining

    def packed(model) -> bool:
        attention = model.bert.encoder.layer[0].attention.self
        params = [attention.query.weight, attention.key.weight, attention.value.weight]
        return all(p.untyped_storage().data_ptr() == params[0].untyped_storage().data_ptr() for p in params) and \
            params[1].storage_offset() == params[0].numel()

    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig.preset("tiny"))
    assert packed(model)
    model.save_pretrained(tmp_path)
    loaded = BertForPreTraining.from_pretrained(tmp_path)  # built on the meta device, then to_empty
    assert packed(loaded) and packed(loaded.to(torch.float64))
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        torch.testing.assert_close(a, b.float(), rtol=0, atol=0, msg=name)
    assert "bert.encoder.layer.0.attention.self.key.weight" in loaded.state_dict()  # checkpoint names unchanged
