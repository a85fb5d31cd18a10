"""The CPU pretraining step of two checkouts, in separate processes run alternately (A, B, A, B).

A claimed regression between two commits on a shared, loaded CPU is checked here before
anyone optimises: each process builds ``test_pretraining.py``'s fastbert step from its own
tree's ``benchmarks/workloads.py`` (same preset, seed and batches), reports wall and CPU
time per step, page faults and the load average it ran under, and the dispatched ops
(name, shapes, strides, dtype) of one step. Identical op signatures mean the two sides do
the same work, so a time difference is the machine, not the code.

    python benchmarks/ab_step.py /path/to/old /path/to/new [--rounds 2] [--steps 6] [--threads 2]

Each tree must be a fastbert checkout (run with ``PYTHONPATH=<tree>`` from its root; the
process prints which ``fastbert`` it imported).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections import Counter
from pathlib import Path


def worker(args: argparse.Namespace) -> None:
    import resource
    import tempfile
    import time

    import torch

    torch.set_num_threads(args.threads)
    import fastbert
    from fastbert.train.host_memory import keep_freed_host_memory

    # As the training engine does on a CPU: otherwise glibc's dynamic mmap threshold makes
    # either side's page faults depend on its allocation history, not on its work.
    keep_freed_host_memory()
    from benchmarks.workloads import load_model, pretraining_batches, save_initial_weights, train_step
    from fastbert.model import BertConfig
    from torch.utils._python_dispatch import TorchDispatchMode

    class Signatures(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.counts: Counter[str] = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if not func.is_view:
                shapes = [(tuple(a.shape), a.stride(), str(a.dtype)) for a in args if isinstance(a, torch.Tensor)]
                self.counts[f"{func} {shapes}"] += 1
            return func(*args, **(kwargs or {}))

    config = BertConfig.preset(args.preset)
    directory = tempfile.mkdtemp()
    save_initial_weights("pretraining", config, directory)
    batches = pretraining_batches(4, args.batch, args.seq // 2, args.seq, config.vocab_size)
    model = load_model("pretraining", "fastbert", directory, torch.device("cpu"))
    step = train_step(model, "flat")
    for batch in batches[:2]:
        step(batch)
    with Signatures() as signatures:
        step(batches[2])
    wall, cpu = [], []
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for i in range(args.steps):
        t, c = time.perf_counter(), time.process_time()
        step(batches[i % len(batches)])
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) // args.steps
    print(json.dumps(dict(
        fastbert=fastbert.__file__,
        dropout=[config.hidden_dropout_prob, config.attention_probs_dropout_prob],
        wall=statistics.median(wall), cpu=statistics.median(cpu), minor_faults=faults,
        ops=dict(signatures.counts),
    )))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="*", type=Path)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--preset", default="mini")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if len(args.trees) != 2:
        parser.error("give two checkouts: A B")
    passed = [f"--{k}={getattr(args, k)}" for k in ("steps", "threads", "preset", "batch", "seq")]
    runs: dict[Path, list[dict]] = {tree: [] for tree in args.trees}
    for r in range(args.rounds):
        for tree in args.trees:
            load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
            env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
            done = subprocess.run([sys.executable, __file__, "--worker", *passed], cwd=tree, env=env,
                                  capture_output=True, text=True, check=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            runs[tree].append(result)
            print(f"round {r + 1} {tree}: wall {result['wall']:.3f} s  cpu {result['cpu']:.3f} s  "
                  f"faults/step {result['minor_faults']}  load {' '.join(load)}  ({result['fastbert']}, "
                  f"dropout {result['dropout']})", flush=True)
    a, b = (Counter(runs[tree][0]["ops"]) for tree in args.trees)
    print(f"ops per step: A {sum(a.values())}, B {sum(b.values())}; signatures only in one side:")
    for key in sorted(set(a) | set(b)):
        if a[key] != b[key]:
            print(f"  A {a[key]:3d}  B {b[key]:3d}  {key[:200]}")
    for tree in args.trees:
        print(f"{tree}: median over rounds wall {statistics.median(r['wall'] for r in runs[tree]):.3f} s, "
              f"cpu {statistics.median(r['cpu'] for r in runs[tree]):.3f} s")


if __name__ == "__main__":
    main()
