"""benchmarks/op_count.py: ops counted by name, views and aliases apart."""

from __future__ import annotations

import torch

from benchmarks.op_count import OpCounter


def test_counts_ops_by_name_and_skips_views():
    x = torch.randn(4, 6)
    with OpCounter() as ops:
        x.view(24)
        x.t()
        x[1:3]
        x.detach()
        x.unbind(0)
        y = x + 1
        y.mul_(2)
        y.t().reshape(24)  # not contiguous: reshape copies
        y.sum()
    assert ops.counts == {"aten.add.Tensor": 1, "aten.mul_.Tensor": 1, "aten.clone.default": 1, "aten.sum.default": 1}
    assert ops.total == 4
    assert ops.by_op() == {"aten.add": 1, "aten.mul_": 1, "aten.clone": 1, "aten.sum": 1}


def test_a_foreach_op_counts_once_and_host_reads_show():
    tensors = [torch.randn(3) for _ in range(5)]
    with OpCounter() as ops:
        torch._foreach_mul_(tensors, 2.0)
        tensors[0].sum().item()
    assert ops.counts == {"aten._foreach_mul_.Scalar": 1, "aten.sum.default": 1, "aten._local_scalar_dense.default": 1}


def test_bytes_add_up_what_each_op_reads_and_writes():
    x, y = torch.randn(100), torch.randn(100)
    with OpCounter() as ops:
        x.add_(y)  # reads x and y, writes x
        x.view(10, 10)
        torch._foreach_mul([x, y], 2.0)  # reads two, returns two
        torch._foreach_mul_([x, y], 2.0)  # reads two, writes them
        torch.mul(x, y, out=y)  # reads two, writes one
    assert ops.bytes == 3 * 400 + 4 * 400 + 4 * 400 + 3 * 400


def test_counts_what_autograd_dispatches():
    w = torch.randn(3, 3, requires_grad=True)
    with OpCounter() as ops:
        (w @ w).sum().backward()
    assert ops.counts["aten.mm.default"] == 3  # forward and two gradient matmuls
    assert ops.total > 3
