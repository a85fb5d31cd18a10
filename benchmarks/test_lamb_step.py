"""LAMB step over BERT's parameters: fastbert's multi-tensor step against the per-tensor loop it replaced.

The op counts of the same steps are printed by ``python -m benchmarks.bench_lamb``; here
each case is timed, with the bytes an ideal fused step moves (read gradients, weights and
both moments; write weights and moments) for the bandwidth column.
"""

from __future__ import annotations

import pytest

from benchmarks.bench_lamb import BASELINE, IMPLEMENTATIONS, lamb_on_bert

CASES = {"cpu": ["base"], "gpu": ["base"]}


@pytest.mark.parametrize("impl", list(IMPLEMENTATIONS))
def test_lamb_step(case: str, impl: str, measure, device):
    optimizer, numel = lamb_on_bert(impl, case, device=device)
    measure(lambda _: optimizer.step(), [None], group=f"lamb step {case}", impl=impl,
            role="baseline" if impl == BASELINE else "candidate" if impl == "multi-tensor" else "variant",
            bytes=7 * 4 * numel)
