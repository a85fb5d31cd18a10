"""benchmarks/step_ops.py, the host-work count of one training step, on the tiny preset."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from benchmarks.op_count import OpCounter
from benchmarks.step_ops import counting_triton_launches, per_layer_and_step


def test_counts_the_triton_path_per_layer_and_per_step(tmp_path):
    pytest.importorskip("transformers")
    rows = {impl: per_layer_and_step(impl, "tiny", tmp_path)
            for impl in ("fastbert-triton", "fastbert-triton-varlen", "transformers-sdpa",
                         "fastbert-triton-varlen-bf16", "transformers-sdpa-bf16")}
    ours, theirs, varlen = rows["fastbert-triton"], rows["transformers-sdpa"], rows["fastbert-triton-varlen"]
    # Per layer: two residual LayerNorms and one bias+GELU, forward and backward.
    assert ours["triton_per_layer"] == 6 and theirs["triton_per_layer"] == 0
    assert {k: v for k, v in ours["layer_ops"].items() if not k.startswith("aten.")} == {
        "_layer_norm_fwd_kernel": 2, "_layer_norm_bwd_kernel": 2, "_bias_gelu_fwd_kernel": 1, "_bias_gelu_bwd_kernel": 1}
    # The dropout kernels' seeds are drawn once per forward, not once per kernel.
    assert not any(k.startswith("aten.randint") for k in ours["layer_ops"]), ours["layer_ops"]
    # A layer's input feeds a linear and the residual: its two gradients are summed inside the
    # input-gradient matmul (addmm), not by an add per fork as autograd would (transformers: 6 adds).
    assert "aten.add" not in ours["layer_ops"], ours["layer_ops"]
    assert theirs["layer_ops"].get("aten.add", 0) >= 2
    # Q, K and V are read as one matrix where they lie (no cat of weights or biases), and the
    # fused kernels add their parameter gradients into one zero-filled buffer per forward: the
    # one reduction left in a layer is the QKV bias's (autograd's LayerNorm and GELU make 3 more).
    assert "aten.cat" not in ours["layer_ops"] and ours["layer_ops"]["aten.sum"] == 1, ours["layer_ops"]
    assert varlen["launches"]["per_layer"] <= theirs["launches"]["per_layer"] / 2
    # The modelled GPU path: attention is one varlen launch each way instead of the CPU
    # stand-in's pad, SDPA and unpad; everything else is the Triton path's.
    assert varlen["layer_ops"]["varlen_attention_fwd"] == varlen["layer_ops"]["varlen_attention_bwd"] == 1
    stand_in = {k: v for k, v in ours["layer_ops"].items() if k not in varlen["layer_ops"]}
    assert any("scaled_dot_product" in k for k in stand_in) and any("index" in k for k in stand_in), stand_in
    assert varlen["launches"]["per_layer"] == ours["launches"]["per_layer"] - sum(stand_in.values()) + 2
    # Per step: the update's scalars (total norm, clip divisor, skip flag, step count) are one
    # Triton launch, not a dozen one-element torch ops; the only reductions left are autograd's
    # for the three biases no fused op owns (MLM decoder, pooler, NSP classifier).
    assert ours["fixed_ops"]["_update_verdict_kernel"] == 1 and "_update_verdict_kernel" not in theirs["fixed_ops"]
    assert not {"aten.isnan", "aten.fmin", "aten.nan_to_num", "aten.clamp_"} & ours["fixed_ops"].keys(), ours["fixed_ops"]
    assert ours["fixed_ops"]["aten.sum"] == 3, ours["fixed_ops"]
    # Under bf16 autocast (a GPU step's precision) a layer adds only casts: its matmul operands
    # to bf16 and their gradients back; and the whole step stays under half of transformers'.
    bf16, theirs_bf16 = rows["fastbert-triton-varlen-bf16"], rows["transformers-sdpa-bf16"]
    casts = bf16["layer_ops"]["aten._to_copy"]
    assert bf16["launches"]["per_layer"] == varlen["launches"]["per_layer"] + casts, bf16["layer_ops"]
    assert theirs_bf16["layer_ops"]["aten._to_copy"] > 2 * casts
    assert bf16["launches"]["per_step"] <= theirs_bf16["launches"]["per_step"] / 2
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
