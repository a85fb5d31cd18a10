"""LAMB on BERT's parameters: the per-tensor loop against the multi-tensor step.

    python -m benchmarks.bench_lamb [--preset base] [--repeats 7] [--threads N]

For each implementation: aten ops dispatched per step (views apart), the bytes those ops
read and write in units of the fp32 parameters' size (a fused step needs 7: read gradients,
weights and both moments, write back the last three), the page faults
of a step (fresh memory the kernel must map), and the wall and CPU time per step, medians of
repeats interleaved across the implementations. The parameters
are ``BertForPreTraining(BertConfig.preset(preset))``'s, in fastbert's weight-decay groups,
with fixed random gradients. Prints a markdown report for ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch

from benchmarks.lamb_reference import PerTensorLamb
from benchmarks.op_count import OpCounter
from fastbert.model import BertConfig, BertForPreTraining
from fastbert.train.lamb import Lamb
from fastbert.train.schedule import parameter_groups

BASELINE = "per-tensor loop"
# "+ found_inf" is the engines' path: the step may be skipped on the device.
IMPLEMENTATIONS = {BASELINE: (PerTensorLamb, False), "multi-tensor": (Lamb, False), "multi-tensor + found_inf": (Lamb, True)}


def lamb_on_bert(impl: str, preset: str = "base", seed: int = 0, device: str | torch.device = "cpu") -> tuple[torch.optim.Optimizer, int]:
    """An optimizer over a fresh BERT's parameters with random gradients, stepped once (its state exists)."""
    cls, found_inf = IMPLEMENTATIONS[impl]
    torch.manual_seed(seed)
    model = BertForPreTraining(BertConfig.preset(preset)).to(device)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    optimizer = cls(parameter_groups(model, 0.01), lr=1e-3, betas=(0.9, 0.999), eps=1e-6)
    if found_inf:
        optimizer.found_inf = torch.zeros((), device=device)
    optimizer.step()
    return optimizer, sum(p.numel() for p in model.parameters())


def count_step(optimizer: torch.optim.Optimizer) -> OpCounter:
    with OpCounter() as ops:
        optimizer.step()
    return ops


def interleaved_medians(optimizers: dict[str, torch.optim.Optimizer], repeats: int) -> dict[str, tuple[float, float, int]]:
    """Per implementation: median wall seconds, CPU seconds and minor page faults of a step."""
    samples: dict[str, list[tuple[float, float, int]]] = {name: [] for name in optimizers}
    for _ in range(repeats):
        for name, optimizer in optimizers.items():
            faults, cpu, wall = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.process_time(), time.perf_counter()
            optimizer.step()
            samples[name].append((time.perf_counter() - wall, time.process_time() - cpu,
                                  resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults))
    return {name: tuple(statistics.median(column) for column in zip(*s)) for name, s in samples.items()}


def cpu_model() -> str:
    lines = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name")), platform.processor())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="base")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    load_before = os.getloadavg()
    optimizers, numel = {}, 0
    for impl in IMPLEMENTATIONS:
        optimizers[impl], numel = lamb_on_bert(impl, args.preset)
    counts = {name: count_step(opt) for name, opt in optimizers.items()}
    medians = interleaved_medians(optimizers, args.repeats)
    load_after = os.getloadavg()

    base_ops, base_time = counts[BASELINE].total, medians[BASELINE][0]
    print(f"# LAMB step on BERT-{args.preset} parameters ({numel / 1e6:.1f} M, fp32)\n")
    print(f"- command: `python -m benchmarks.bench_lamb {' '.join(sys.argv[1:] if argv is None else argv)}`")
    print(f"- machine: {cpu_model()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}")
    print(f"- torch {torch.__version__}, python {platform.python_version()}")
    print(f"- load average (1, 5, 15 min) before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    print(f"- medians of {args.repeats} interleaved steps\n")
    print("| implementation | aten ops / step | ops vs loop | traffic (× weights) | page faults / step "
          "| wall time / step | speedup | CPU time / step |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, ops in counts.items():
        wall, cpu, faults = medians[name]
        print(f"| {name} | {ops.total} | {ops.total / base_ops:.3f} | {ops.bytes / (4 * numel):.1f} | {faults:.0f} "
              f"| {wall * 1e3:.0f} ms | {base_time / wall:.2f}x | {cpu * 1e3:.0f} ms |")
    for name, ops in counts.items():
        print(f"\n{name}, most frequent ops: " + ", ".join(f"{op} {n}" for op, n in ops.by_op().most_common(8)))


if __name__ == "__main__":
    main()
