"""How much work one training step gives the host: aten ops dispatched and Triton kernels launched.

On the H200 the BERT-base step was bound by the host launching kernels, not by the GPU
(benchmarks/results/2026-11-26-h200), so the count of launches is the number to cut. It is
deterministic and needs no GPU: this script counts, on the CPU, one whole training step
(forward, backward, clipping, the fused AdamW update, through fastbert's LocalEngine on
every side) of

* ``fastbert-triton``: fastbert's GPU path, its fused ops as Triton kernels (run by the
  interpreter here, counted as launches);
* ``fastbert-torch``: fastbert on its torch reference ops;
* ``fastbert-triton-varlen``: the same, with attention counted as what a GPU with
  flash-attn runs there: one varlen FlashAttention launch forward and one backward. The
  CPU has no varlen kernel, so the padded stand-in still computes, hidden from the count
  (a model of the GPU path, not a measurement of it);
* ``transformers-sdpa``: transformers' BertForPreTraining on the same batch, padded;
* ``...-bf16``: the varlen and transformers rows again under bf16 autocast, the precision a
  GPU step runs in: autocast's casts (weights to bf16 for each matmul, their gradients back)
  are launches too. CPU autocast's cast policy stands in for CUDA's, which casts the same
  matmul operands (a model again).

Two numbers per implementation: *dispatched ops* (every non-view aten op plus every Triton
launch: the host's per-op overhead) and *launches* (the same without allocations such as
``empty_like``, which the caching allocator serves without a kernel: what the GPU queue
sees). A few aten ops launch more than one kernel; views launch none. Attention dropout is 0, fastbert's
pretraining default, on every side: with it, fastbert's CPU attention would draw its
mask with ops the GPU path does not run. Hidden dropout stays at BERT's 0.1. Per-layer
counts are the difference between a one- and a two-layer model; the rest is per step.

    python benchmarks/step_ops.py [--out DIR] [--presets mini base]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton decorates the kernels (CPU only)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from benchmarks.op_count import OpCounter  # noqa: E402
from benchmarks.workloads import pretraining_batches  # noqa: E402
from fastbert.model import Batch, BertConfig, BertForPreTraining  # noqa: E402
from fastbert.train.config import EngineConfig, OptimizerConfig  # noqa: E402
from fastbert.train.engines import LocalEngine  # noqa: E402

IMPLEMENTATIONS = ("fastbert-triton", "fastbert-triton-varlen", "fastbert-torch", "transformers-sdpa",
                   "fastbert-triton-varlen-bf16", "transformers-sdpa-bf16")
BF16 = "-bf16"
BATCH, MIN_LEN, MAX_LEN = 2, 24, 32  # counts do not depend on the batch's size, only its layout


ALLOCATIONS = frozenset({"aten.empty", "aten.empty_like", "aten.new_empty", "aten.empty_strided", "aten.new_empty_strided"})


@dataclass
class StepCount:
    impl: str
    preset: str
    layers: int
    ops: Counter  # by op name (aten overloads merged) and Triton kernel name

    @property
    def dispatched(self) -> int:
        return sum(self.ops.values())

    @property
    def launches(self) -> int:
        return sum(n for name, n in self.ops.items() if name not in ALLOCATIONS)


@contextlib.contextmanager
def counting_triton_launches(counts: Counter):
    """Count ``kernel[grid](...)`` calls, compiled or interpreted, by kernel name."""
    from triton.runtime import interpreter, jit

    patched = []
    for cls in (jit.JITFunction, interpreter.InterpretedFunction):
        original = cls.run

        def run(self, *args, _original=original, **kwargs):
            counts[getattr(self, "__name__", None) or self.fn.__name__] += 1
            # One launch on a GPU; the interpreter's own tensor work is not the model's.
            with torch.utils._python_dispatch._disable_current_modes():
                return _original(self, *args, **kwargs)

        cls.run = run
        patched.append((cls, original))
    try:
        yield counts
    finally:
        for cls, original in patched:
            cls.run = original


@contextlib.contextmanager
def attention_as_varlen_kernels(counts: Counter):
    """Count fastbert's padded CPU attention as the varlen kernels a GPU runs instead: one
    launch forward, one backward; the stand-in's own ops (pad, SDPA, unpad) go uncounted."""
    from fastbert.model import attention

    stand_in = attention._padded_sdpa
    hidden = torch.utils._python_dispatch._disable_current_modes

    class VarlenAttention(torch.autograd.Function):
        @staticmethod
        def forward(ctx, qkv, layout, dropout_p):
            counts["varlen_attention_fwd"] += 1
            with hidden(), torch.enable_grad():
                leaf = qkv.detach().requires_grad_()
                out = stand_in(leaf, layout, dropout_p)
            ctx.graph = (leaf, out)
            return out.detach()

        @staticmethod
        def backward(ctx, grad_out):
            counts["varlen_attention_bwd"] += 1
            leaf, out = ctx.graph
            with hidden():
                (grad_qkv,) = torch.autograd.grad(out, leaf, grad_out)
            return grad_qkv, None, None

    attention._padded_sdpa = VarlenAttention.apply
    try:
        yield
    finally:
        attention._padded_sdpa = stand_in


def build(impl: str, config: BertConfig, directory: Path) -> torch.nn.Module:
    torch.manual_seed(0)
    BertForPreTraining(config).save_pretrained(directory)
    if impl == "transformers-sdpa":
        import transformers

        return transformers.BertForPreTraining.from_pretrained(directory, attn_implementation="sdpa").train()
    model = BertForPreTraining.from_pretrained(directory).train()
    model.backends.use(kernels="triton" if impl.startswith("fastbert-triton") else "torch")
    return model


def step_batch(impl: str, vocab_size: int) -> Batch:
    twin = pretraining_batches(1, BATCH, MIN_LEN, MAX_LEN, vocab_size)[0]
    if impl.startswith("transformers"):
        padded = dict(twin.padded)
        return Batch(padded.pop("input_ids"), padded, twin.real_tokens, twin.sequences)
    return twin.flat


def count_step(impl: str, preset: str, layers: int, scratch: Path) -> StepCount:
    config = BertConfig.preset(preset, num_hidden_layers=layers, attention_probs_dropout_prob=0.0)
    model_impl = impl.removesuffix(BF16)
    model = build(model_impl, config, scratch / f"{preset}-{layers}")
    engine_config = EngineConfig(optim=OptimizerConfig(warmup_steps=0), total_steps=10, bf16=impl.endswith(BF16))
    engine = LocalEngine(model, engine_config, torch.device("cpu"))
    batch = step_batch(model_impl, config.vocab_size)
    triton: Counter = Counter()
    varlen = attention_as_varlen_kernels(triton) if model_impl.endswith("-varlen") else contextlib.nullcontext()
    with varlen:
        engine.train_step(batch)  # warm-up: lazy state (optimizer moments) is not per-step work
        triton.clear()
        with counting_triton_launches(triton), OpCounter() as ops:
            engine.train_step(batch)
    return StepCount(impl, preset, layers, ops.by_op() + triton)


def per_layer_and_step(impl: str, preset: str, scratch: Path) -> dict:
    """Counts for the preset's full depth, from a one- and a two-layer model."""
    one, two = (count_step(impl, preset, n, scratch) for n in (1, 2))
    layers = BertConfig.preset(preset).num_hidden_layers
    row = {"impl": impl, "preset": preset, "layers": layers}
    for measure in ("dispatched", "launches"):
        per_layer = getattr(two, measure) - getattr(one, measure)
        row[measure] = {"per_layer": per_layer, "per_step": getattr(one, measure) + (layers - 1) * per_layer}
    layer_ops = two.ops.copy()
    layer_ops.subtract(one.ops)
    row["layer_ops"] = dict(sorted(((k, v) for k, v in layer_ops.items() if v), key=lambda kv: -kv[1]))
    fixed_ops = one.ops.copy()
    fixed_ops.subtract(layer_ops)  # once a step whatever the depth: embeddings, heads, losses, the update
    row["fixed_ops"] = dict(sorted(((k, v) for k, v in fixed_ops.items() if v), key=lambda kv: -kv[1]))
    row["triton_per_layer"] = sum(v for k, v in layer_ops.items() if not k.startswith("aten."))
    return row


SUMMARY = ("One training step (forward, backward, clip, AdamW) counted on the CPU: launches are non-view, "
           "non-allocation aten ops plus Triton launches; dispatched ops include allocations. The CPU attention "
           "path (pad, SDPA, unpad) stands in for the GPU's varlen FlashAttention; the -varlen row counts that "
           "attention as the GPU's two launches (a model of the GPU path); -bf16 rows run the step under bf16 "
           "autocast, as a GPU does, so that its casts count, each against transformers in the same precision.")


def markdown(rows: list[dict]) -> list[str]:
    lines = ["| preset | implementation | launches per layer | launches per step | vs transformers "
             "| dispatched ops per layer | per step | vs transformers |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    # Each row against transformers in the same precision.
    baseline = {(r["preset"], r["impl"].endswith(BF16)): r for r in rows if r["impl"].startswith("transformers-sdpa")}
    for r in rows:
        cells = []
        for measure in ("launches", "dispatched"):
            base = baseline.get((r["preset"], r["impl"].endswith(BF16)))
            ratio = f"{r[measure]['per_step'] / base[measure]['per_step']:.2f}x" if base else "–"
            cells += [str(r[measure]["per_layer"]), str(r[measure]["per_step"]), ratio]
        lines.append(f"| {r['preset']} | {r['impl']} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="folder for step_ops.json")
    parser.add_argument("--presets", nargs="+", default=["mini", "base"])
    parser.add_argument("--implementations", nargs="+", default=list(IMPLEMENTATIONS), choices=IMPLEMENTATIONS)
    args = parser.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        rows = [per_layer_and_step(impl, preset, Path(tmp)) for preset in args.presets for impl in args.implementations]
    if args.out:
        from fastbert import atomic

        atomic.write_json(args.out / "step_ops.json", {"torch": torch.__version__, "batch": [BATCH, MIN_LEN, MAX_LEN], "rows": rows})
        atomic.write_text(args.out / "step_ops.md", "\n".join([SUMMARY, "", *markdown(rows)]) + "\n")
    print("\n".join(markdown(rows)))


if __name__ == "__main__":
    main()
