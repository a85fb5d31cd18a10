"""Sweep the fused kernels' launch heuristics on a GPU and print the best setting per op.

    python benchmarks/tune_kernels.py [--tokens 32768] [--hidden 768] [--out DIR]

The heuristics live in ``fastbert.kernels._utils``: elements per tile (``BLOCK_R`` rows x
the padded row), persistent backward programs per SM, and warps per program. Each
setting is timed forward and backward (CUDA events, median of repeats) on BERT's
training shapes in bf16, next to the torch reference, so a change of defaults is backed
by a measurement on the card it was made for.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from pathlib import Path

import torch

TILE_ELEMENTS = (2048, 4096, 8192)
PROGRAMS_PER_SM = (2, 8, 32)
WARPS = (4, 8, 16)
OP_MODULES = ("triton_layer_norm", "triton_bias_gelu", "triton_embedding_layer_norm")


def cuda_median_ms(fn, warmup: int = 3, reps: int = 20) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def workloads(tokens: int, hidden: int, ops, dev: torch.device, dt: torch.dtype = torch.bfloat16):
    """(forward thunk, inputs needing gradients) per op, with BERT's training settings."""

    def param(*shape, dtype=torch.float32):
        return torch.randn(*shape, device=dev, dtype=dtype).requires_grad_()

    x, residual = param(tokens, hidden, dtype=dt), param(tokens, hidden, dtype=dt)
    w, b, xb = param(hidden), param(hidden), param(hidden)
    h4, b4 = param(tokens, 4 * hidden, dtype=dt), param(4 * hidden)
    ids = torch.randint(0, 30522, (tokens,), device=dev)
    tts = torch.randint(0, 2, (tokens,), device=dev)
    pos = torch.randint(0, 512, (tokens,), device=dev)
    word, tte, pe = param(30522, hidden), param(2, hidden), param(512, hidden)
    return {
        "layer_norm": (lambda: ops.layer_norm(x, w, b, 1e-12, residual, 0.1, xb), (x, residual, w, b, xb)),
        "bias_gelu": (lambda: ops.bias_gelu(h4, b4, "none"), (h4, b4)),
        "embedding_layer_norm": (
            lambda: ops.embedding_layer_norm(ids, tts, pos, word, tte, pe, w, b, 1e-12, 0.1),
            (word, tte, pe, w, b),
        ),
    }


def time_op(make, inputs) -> tuple[float, float]:
    forward_ms = cuda_median_ms(lambda: make())
    out = make()
    grad = torch.randn_like(out)
    backward_ms = cuda_median_ms(lambda: torch.autograd.grad(out, inputs, grad, retain_graph=True))
    return forward_ms, backward_ms


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=32768)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("tune_kernels.py needs a CUDA device", file=sys.stderr)
        return 2

    import fastbert.kernels._utils as utils
    from fastbert.kernels import reference, triton_ops

    op_modules = [getattr(__import__("fastbert.kernels", fromlist=[m]), m) for m in OP_MODULES]
    rows = []
    for name, (make, inputs) in workloads(args.tokens, args.hidden, reference, torch.device("cuda")).items():
        fwd, bwd = time_op(make, inputs)
        rows.append(dict(op=name, impl="torch", tile=None, programs_per_sm=None, warps=None, fwd_ms=fwd, bwd_ms=bwd))
    for tile, per_sm, warps in itertools.product(TILE_ELEMENTS, PROGRAMS_PER_SM, WARPS):
        utils._GPU_TILE_ELEMENTS, utils._PROGRAMS_PER_SM = tile, per_sm
        for module in op_modules:
            module.num_warps = lambda _elements, w=warps: w
        for name, (make, inputs) in workloads(args.tokens, args.hidden, triton_ops, torch.device("cuda")).items():
            fwd, bwd = time_op(make, inputs)
            rows.append(dict(op=name, impl="triton", tile=tile, programs_per_sm=per_sm, warps=warps, fwd_ms=fwd, bwd_ms=bwd))
        print(f"tile {tile} programs/SM {per_sm} warps {warps}: done", flush=True)

    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "tune_kernels.json").write_text(json.dumps(
            {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "tokens": args.tokens,
             "hidden": args.hidden, "rows": rows}, indent=1))
    print(f"\n{'op':22} {'impl':6} {'tile':>5} {'p/SM':>4} {'warps':>5} {'fwd ms':>8} {'bwd ms':>8}")
    for name in ("layer_norm", "bias_gelu", "embedding_layer_norm"):
        ours = [r for r in rows if r["op"] == name and r["impl"] == "triton"]
        shown = [r for r in rows if r["op"] == name and r["impl"] == "torch"]
        shown += sorted(ours, key=lambda r: r["bwd_ms"])[:3] + sorted(ours, key=lambda r: r["fwd_ms"])[:2]
        for r in shown:
            print(f"{r['op']:22} {r['impl']:6} {r['tile'] or '':>5} {r['programs_per_sm'] or '':>4} "
                  f"{r['warps'] or '':>5} {r['fwd_ms']:8.3f} {r['bwd_ms']:8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
