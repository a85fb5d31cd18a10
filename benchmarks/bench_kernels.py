"""GPU benchmark of the fused kernels: Triton vs torch eager vs torch.compile of the reference.

    python benchmarks/bench_kernels.py [--out DIR] [--reps N] [--no-compile]

For each op, bf16, tokens x hidden, and direction (forward, backward, both) it reports the
median time over many CUDA-event-timed repeats and the achieved bandwidth: the bytes an
ideal fused kernel must move (see :func:`ideal_bytes`) divided by the time, also as a
fraction of a measured device-to-device copy. A summary table is printed last; the rows
go to ``DIR/bench_kernels.json`` with the device and versions.

Training settings: LayerNorm with residual, x_bias and dropout 0.1 (BERT's post-attention
and post-FFN block); embeddings with dropout 0.1 and BERT-base tables; GELU on the
4 x hidden feed-forward activation.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

TOKENS = (8192, 32768, 65536)
HIDDEN = (768, 1024)
DTYPE = torch.bfloat16
DROPOUT = 0.1
VOCAB, POSITIONS, TOKEN_TYPES = 30522, 512, 2
DIRECTIONS = ("forward", "backward", "both")
OPS = ("layer_norm", "bias_gelu", "embedding_layer_norm")


@dataclass
class Row:
    op: str
    tokens: int
    hidden: int
    direction: str
    impl: str
    ms: float
    gbps: float
    copy_fraction: float


def ideal_bytes(op: str, direction: str, tokens: int, hidden: int, element_size: int = 2) -> int:
    """Bytes a fused kernel cannot avoid moving (parameter vectors ignored).

    layer_norm forward reads x and the residual and writes y and the pre-norm sum that
    backward needs, plus fp32 mean and rstd; backward reads dy and that sum and writes
    dx and dresidual. bias_gelu works on [tokens, 4 hidden]: forward reads x and writes
    y, backward reads dy and x and writes dx. embedding_layer_norm forward gathers one
    word row per token (the small tables stay in cache) and writes y, plus three int64
    ids; backward reads dy, regathers the word rows and writes dense gradients of the
    three tables.
    """
    n = tokens * hidden * element_size
    stats = 2 * 4 * tokens
    ids = 3 * 8 * tokens
    per_direction = {
        "layer_norm": {"forward": 4 * n + stats, "backward": 4 * n + stats},
        "bias_gelu": {"forward": 2 * 4 * n, "backward": 3 * 4 * n},
        "embedding_layer_norm": {
            "forward": 2 * n + ids + stats,
            "backward": 2 * n + ids + stats + (VOCAB + POSITIONS + TOKEN_TYPES) * hidden * element_size,
        },
    }[op]
    if direction == "both":
        return per_direction["forward"] + per_direction["backward"]
    return per_direction[direction]


def format_table(rows: list[Row]) -> str:
    """The summary: one line per (op, tokens, hidden, direction), impls side by side."""
    impls = list(dict.fromkeys(r.impl for r in rows))
    header = f"{'op':<22}{'tokens':>8}{'hidden':>8}  {'direction':<10}" + "".join(
        f"{impl + ' ms':>14}{impl + ' GB/s':>15}" for impl in impls
    ) + f"{'copy frac':>11}{'speedup':>9}"
    lines = [header, "-" * len(header)]
    groups: dict[tuple, dict[str, Row]] = {}
    for r in rows:
        groups.setdefault((r.op, r.tokens, r.hidden, r.direction), {})[r.impl] = r
    for (op, tokens, hidden, direction), by_impl in groups.items():
        cells = "".join(
            f"{by_impl[i].ms:>14.3f}{by_impl[i].gbps:>15.0f}" if i in by_impl else f"{'-':>14}{'-':>15}" for i in impls
        )
        triton, eager = by_impl.get("triton"), by_impl.get("eager")
        frac = f"{triton.copy_fraction:>11.2f}" if triton else f"{'-':>11}"
        speedup = f"{eager.ms / triton.ms:>8.2f}x" if triton and eager else f"{'-':>9}"
        lines.append(f"{op:<22}{tokens:>8}{hidden:>8}  {direction:<10}{cells}{frac}{speedup}")
    return "\n".join(lines)


def cuda_time(fn: Callable[[], object], warmup: int, reps: int) -> float:
    """Median milliseconds of ``fn`` over ``reps`` CUDA-event-timed calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for start, end in zip(starts, ends):
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends))


def copy_bandwidth_gbps(warmup: int, reps: int) -> float:
    """Device-to-device copy bandwidth (read + write) of a 512 MiB bf16 tensor."""
    x = torch.randn(256 * 2**20, device="cuda", dtype=DTYPE)
    ms = cuda_time(lambda: torch.empty_like(x).copy_(x), warmup, reps)
    return 2 * x.numel() * x.element_size() / ms / 1e6


def make_inputs(op: str, tokens: int, hidden: int, device: str = "cuda", dtype: torch.dtype = DTYPE) -> tuple[dict, dict]:
    """(differentiable-or-index inputs, fixed options) for one op call."""
    def param(*shape):
        return torch.randn(*shape, device=device, dtype=dtype, requires_grad=True)

    if op == "layer_norm":
        inputs = {"x": param(tokens, hidden), "weight": param(hidden), "bias": param(hidden),
                  "residual": param(tokens, hidden), "x_bias": param(hidden)}
        return inputs, {"eps": 1e-12, "dropout_p": DROPOUT}
    if op == "bias_gelu":
        return {"x": param(tokens, 4 * hidden), "bias": param(4 * hidden)}, {}
    ids = {
        "input_ids": text_like_ids(tokens, device),
        "token_type_ids": torch.randint(0, TOKEN_TYPES, (tokens,), device=device),
        "position_ids": torch.randint(0, POSITIONS, (tokens,), device=device),
    }
    tables = {"word_embeddings": param(VOCAB, hidden), "token_type_embeddings": param(TOKEN_TYPES, hidden),
              "position_embeddings": param(POSITIONS, hidden), "weight": param(hidden), "bias": param(hidden)}
    return {**ids, **tables}, {"eps": 1e-12, "dropout_p": DROPOUT}


def text_like_ids(tokens: int, device: torch.device) -> torch.Tensor:
    """Word ids repeating as in masked BERT input (which the table-gradient scatter must
    sum): Zipf-distributed words, [CLS] and [SEP] framing 128-token pairs, 12% [MASK]."""
    generator = torch.Generator().manual_seed(0)
    zipf = 1.0 / (torch.arange(VOCAB, dtype=torch.float64) + 10.0)
    ids = torch.multinomial(zipf, tokens, replacement=True, generator=generator)
    ids[torch.rand(tokens, generator=generator) < 0.12] = 103  # [MASK]
    ids[::128], ids[63::128], ids[127::128] = 101, 102, 102  # [CLS] A [SEP] B [SEP]
    return ids.to(device)


def time_directions(fn: Callable, inputs: dict, options: dict, warmup: int, reps: int) -> dict[str, float]:
    """Median ms of forward, backward (graph kept) and forward + backward."""
    leaves = [t for t in inputs.values() if t.requires_grad]
    out = fn(**inputs, **options)
    grad_out = torch.randn_like(out)

    def forward():
        with torch.no_grad():
            fn(**inputs, **options)

    def backward():
        torch.autograd.grad(out, leaves, grad_out, retain_graph=True)

    def both():
        torch.autograd.grad(fn(**inputs, **options), leaves, grad_out)

    return {name: cuda_time(f, warmup, reps) for name, f in zip(DIRECTIONS, (forward, backward, both))}


def compiled_reference(op: str, backend: str = "inductor") -> Callable:
    """torch.compile of the op's torch reference, fit for :func:`time_directions`.

    That timing replays one backward graph (retain_graph=True); compiled backwards donate
    their saved buffers unless told not to, and then refuse a second backward (the error
    the first H200 run hit).
    """
    from fastbert.kernels import reference

    import torch._functorch.config as functorch_config

    if hasattr(functorch_config, "donated_buffer"):
        functorch_config.donated_buffer = False
    return torch.compile(getattr(reference, op), backend=backend)


def mark_token_dim_dynamic(inputs: dict, tokens: int) -> None:
    """One compiled graph serves every token count (fewer recompiles)."""
    for t in inputs.values():
        if t.shape[0] == tokens:
            torch._dynamo.mark_dynamic(t, 0)


def run(reps: int, warmup: int, compile_reference: bool) -> tuple[list[Row], float]:
    from fastbert.kernels import reference, triton_ops

    copy_gbps = copy_bandwidth_gbps(warmup, reps)
    rows = []
    for op in OPS:
        impls = {"triton": getattr(triton_ops, op), "eager": getattr(reference, op)}
        if compile_reference:
            impls["compiled"] = compiled_reference(op)
        for hidden in HIDDEN:
            for tokens in TOKENS:
                inputs, options = make_inputs(op, tokens, hidden)
                mark_token_dim_dynamic(inputs, tokens)
                for impl, fn in impls.items():
                    for direction, ms in time_directions(fn, inputs, options, warmup, reps).items():
                        gbps = ideal_bytes(op, direction, tokens, hidden) / ms / 1e6
                        rows.append(Row(op, tokens, hidden, direction, impl, ms, gbps, gbps / copy_gbps))
                    print(f"  {op} tokens={tokens} hidden={hidden} {impl}: done", flush=True)
                del inputs
                torch.cuda.empty_cache()
    return rows, copy_gbps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="folder for bench_kernels.json")
    parser.add_argument("--reps", type=int, default=50, help="timed repeats per measurement (median reported)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("bench_kernels: needs a CUDA GPU; torch.cuda.is_available() is False")

    rows, copy_gbps = run(args.reps, args.warmup, not args.no_compile)
    import triton

    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": platform.python_version(),
        "command": " ".join(["python", "benchmarks/bench_kernels.py", *(argv if argv is not None else sys.argv[1:])]),
        "dtype": str(DTYPE),
        "copy_gbps": copy_gbps,
        "rows": [asdict(r) for r in rows],
    }
    if args.out:
        from fastbert import atomic

        atomic.write_json(args.out / "bench_kernels.json", report)  # never a half-written report
    print(f"\n{report['device']}, torch {report['torch']}, triton {report['triton']}, {DTYPE}; "
          f"device-to-device copy {copy_gbps:.0f} GB/s")
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
