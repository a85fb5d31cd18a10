"""benchmarks/step_ops.py, the host-work count of one training step, on the tiny preset."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from benchmarks.op_count import OpCounter
from benchmarks.step_ops import counting_triton_launches, per_layer_and_step


def test_counts_the_triton_path_per_layer_and_per_step(tmp_path):
    pytest.importorskip("transformers")
    rows = {impl: per_layer_and_step(impl, "tiny", tmp_path) for impl in ("fastbert-triton", "transformers-sdpa")}
    ours, theirs = rows["fastbert-triton"], rows["transformers-sdpa"]
    # Per layer: two residual LayerNorms and one bias+GELU, forward and backward.
    assert ours["triton_per_layer"] == 6 and theirs["triton_per_layer"] == 0
    assert {k: v for k, v in ours["layer_ops"].items() if not k.startswith("aten.")} == {
        "_layer_norm_fwd_kernel": 2, "_layer_norm_bwd_kernel": 2, "_bias_gelu_fwd_kernel": 1, "_bias_gelu_bwd_kernel": 1}
    # The dropout kernels' seeds are drawn once per forward, not once per kernel.
    assert not any(k.startswith("aten.randint") for k in ours["layer_ops"]), ours["layer_ops"]
    for row in rows.values():
        layers = row["layers"]
        for measure in ("launches", "dispatched"):
            assert 0 < row[measure]["per_layer"] * layers < row[measure]["per_step"]
        assert row["launches"]["per_step"] <= row["dispatched"]["per_step"]
    # The interpreter's own tensor work (hundreds of ops per kernel) is not counted.
    assert ours["dispatched"]["per_layer"] < 2 * theirs["dispatched"]["per_layer"]


def test_the_interpreter_does_not_leak_into_the_count():
    from fastbert.kernels import triton_ops

    x = torch.randn(7, 64)
    launches = Counter()
    with counting_triton_launches(launches), OpCounter() as ops:
        triton_ops.bias_gelu(x, torch.zeros(64), "none")
    assert launches == {"_bias_gelu_fwd_kernel": 1}
    assert ops.total <= 3  # the output's allocation and a reshape or two, not the interpreter's work
