"""The CPU-checkable parts of benchmarks/bench_kernels.py (the timing itself needs a GPU)."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_kernels.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_kernels", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while decorating
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without CUDA")
def test_exits_with_a_clear_message_without_cuda(bench, tmp_path):
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        bench.main(["--out", str(tmp_path)])
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("op", ["layer_norm", "bias_gelu", "embedding_layer_norm"])
def test_ideal_bytes_add_up_and_scale_with_tokens(bench, op):
    fwd, bwd, both = (bench.ideal_bytes(op, d, 8192, 768) for d in ("forward", "backward", "both"))
    assert both == fwd + bwd
    assert bench.ideal_bytes(op, "forward", 16384, 768) == 2 * fwd
    # Every direction moves at least one read and one write of the activation.
    assert min(fwd, bwd) >= 2 * 8192 * 768 * 2


def test_layer_norm_bytes_count_four_activation_tensors(bench):
    tokens, hidden = 32768, 1024
    assert bench.ideal_bytes("layer_norm", "forward", tokens, hidden) == 4 * tokens * hidden * 2 + 8 * tokens


def test_summary_table_puts_impls_side_by_side(bench):
    rows = [
        bench.Row("layer_norm", 8192, 768, "forward", "triton", 0.5, 400.0, 0.13),
        bench.Row("layer_norm", 8192, 768, "forward", "eager", 1.0, 200.0, 0.07),
        bench.Row("bias_gelu", 8192, 768, "both", "triton", 2.0, 300.0, 0.1),
    ]
    lines = bench.format_table(rows).splitlines()
    assert "triton ms" in lines[0] and "eager GB/s" in lines[0]
    assert len(lines) == 4
    assert lines[2].startswith("layer_norm") and lines[2].endswith("2.00x")
    assert lines[3].startswith("bias_gelu") and lines[3].rstrip().endswith("-")


@pytest.mark.parametrize("op", ["layer_norm", "bias_gelu", "embedding_layer_norm"])
def test_every_direction_runs_the_op(bench, monkeypatch, op):
    # The CUDA timer is swapped for a call counter; everything else runs as on a GPU.
    calls = []

    def count_calls(fn, warmup, reps):
        for _ in range(warmup + reps):
            fn()
        calls.append(warmup + reps)
        return 1.0

    monkeypatch.setattr(bench, "cuda_time", count_calls)
    from fastbert.kernels import reference

    inputs, options = bench.make_inputs(op, 16, 64, device="cpu", dtype=torch.float32)
    times = bench.time_directions(getattr(reference, op), inputs, options, warmup=1, reps=2)
    assert times == {"forward": 1.0, "backward": 1.0, "both": 1.0} and calls == [3, 3, 3]


@pytest.mark.parametrize("op", ["layer_norm", "bias_gelu", "embedding_layer_norm"])
def test_compiled_baseline_survives_the_replayed_backward(bench, monkeypatch, op):
    # The H200 run's compiled baseline died on the second backward of one graph (donated
    # buffers). aot_eager goes through the same AOTAutograd path without code generation.
    import torch._functorch.config as functorch_config

    monkeypatch.setattr(functorch_config, "donated_buffer", True)  # the default; restored after the test
    monkeypatch.setattr(bench, "cuda_time", lambda fn, warmup, reps: [fn() for _ in range(3)] and 1.0)
    inputs, options = bench.make_inputs(op, 300, 64, device="cpu", dtype=torch.float32)
    bench.mark_token_dim_dynamic(inputs, 300)
    times = bench.time_directions(bench.compiled_reference(op, backend="aot_eager"), inputs, options, warmup=1, reps=2)
    assert times == {"forward": 1.0, "backward": 1.0, "both": 1.0}
