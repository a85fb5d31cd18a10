"""Pretraining step (forward, backward, AdamW): fastbert vs its torch-reference path vs transformers.

Identical batches (synthetic: lengths uniform in [seq/2, seq], 15% of real tokens masked, NSP
labels; packed: real prepared pairs, see :func:`workloads.packed_pretraining_batches`),
identical initial weights, dropout at the config default, fused AdamW on both sides.
fastbert gets the flat layout, transformers the batch padded to its longest sequence. On the
GPU both run under bf16 autocast with fp32 weights, and also: fastbert's whole step replayed
from a CUDA graph, torch.compile of fastbert's torch ops and of transformers. The CPU headline
(issue 4) is ``mini-b32-s128``. ``tests/train/test_gpu_suite_dry_run.py`` runs every GPU case
and implementation on the CPU, shrunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pytest
import torch

from benchmarks import workloads
from benchmarks.workloads import (
    COMPILED, GRAPHED, IMPLEMENTATIONS, TRANSFORMERS_COMPILED, TwinBatch, compiled_train_step, compiled_transformers_step,
    graphed_train_step, input_layout, load_model, packed_pretraining_batches, pretraining_batches, pretraining_flops,
    save_initial_weights, train_step,
)
from fastbert.model import BertConfig

DISTINCT_BATCHES = 4
GPU_ONLY = ("fastbert-torch", GRAPHED, COMPILED, TRANSFORMERS_COMPILED)
GPU_ONLY_REASON = ("on a CPU fastbert already runs its torch reference ops, CUDA graphs need CUDA, "
                   "and compiling takes minutes on two cores")


@dataclass(frozen=True)
class PretrainCase:
    preset: str
    batch_size: int  # sequences; rows of seq_len tokens when packed
    seq_len: int
    headline: bool = False
    warmup: int | None = None  # None: the suite's default (conftest.ROUNDS)
    rounds: int | None = None
    compiled_baseline: bool = False  # also time torch.compile of fastbert's torch ops and of transformers (a compilation each)
    packed: bool = False  # real prepared pairs (workloads.PACKED_DATA) packed into batch_size rows of seq_len tokens

    def __str__(self) -> str:
        return f"{self.preset}-b{self.batch_size}-s{self.seq_len}" + ("-packed" if self.packed else "")


CASES = {
    # BERT-base on a CPU is dominated by AdamW over 110M parameters: a few rounds suffice.
    "cpu": [PretrainCase("mini", 32, 128, headline=True, rounds=8), PretrainCase("base", 4, 128, warmup=1, rounds=3)],
    # BERT-base at s128 from a launch-bound batch to BERT's own, and BERT-large on real data
    # packed into rows of 512 (MLPerf's setting), within the GPU session's minutes. The graphed
    # variant captures during its first warmup call; the compiled baselines (about a minute
    # of compilation each) run on the batch of 128 that the targets name.
    "gpu": [
        PretrainCase("base", 32, 128, headline=True, warmup=5, rounds=30),
        PretrainCase("base", 128, 128, headline=True, warmup=5, rounds=20, compiled_baseline=True),
        PretrainCase("base", 256, 128, headline=True, warmup=3, rounds=15),
        PretrainCase("large", 16, 512, headline=True, warmup=3, rounds=15, packed=True),
    ],
}
IMPLEMENTATIONS_TIMED = (*IMPLEMENTATIONS, GRAPHED, COMPILED, TRANSFORMERS_COMPILED)


def case_skip_reason(case: PretrainCase, impl: str) -> str | None:
    """Why ``impl`` is not timed on ``case`` whatever the device (None: it is)."""
    if impl in (COMPILED, TRANSFORMERS_COMPILED) and not case.compiled_baseline:
        return "torch.compile baselines are timed on one case only (each case compiles anew)"
    if case.packed and not (workloads.PACKED_DATA / "metadata.json").is_file():
        return f"no prepared shards at {workloads.PACKED_DATA}: run bash benchmarks/gpu_data.sh first"
    return None


def case_batches(case: PretrainCase, config: BertConfig) -> list[TwinBatch]:
    if case.packed:
        return packed_pretraining_batches(workloads.PACKED_DATA, DISTINCT_BATCHES, case.batch_size, case.seq_len)
    return pretraining_batches(DISTINCT_BATCHES, case.batch_size, case.seq_len // 2, case.seq_len, config.vocab_size)


def build_step(case: PretrainCase, impl: str, directory: str, batches: list[TwinBatch],
               device: torch.device) -> tuple[Callable[[TwinBatch], None], list[TwinBatch]]:
    """The timed step of ``impl`` and the batches it takes (on the device where it reads them there)."""
    model = load_model("pretraining", impl, directory, device)
    autocast = torch.bfloat16 if device.type == "cuda" else None
    # Static shapes for graphs and fastbert's compiled step: a row per sequence (the most a batch holds).
    rows = max(b.sequences for b in batches)
    if impl == GRAPHED:  # host batches, padded to the case's full shape inside the timed step
        return graphed_train_step(model, autocast, rows, case.seq_len), batches
    if impl == COMPILED:
        return compiled_train_step(model, autocast, rows, case.seq_len), batches
    if impl == TRANSFORMERS_COMPILED:
        return compiled_transformers_step(model, autocast, case.seq_len), batches
    return train_step(model, input_layout(impl), autocast), [b.to(device) for b in batches]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Per case, built once: the initial-weights directory and the batches, shared by every implementation."""
    cache: dict[PretrainCase, tuple[BertConfig, str, list]] = {}

    def get(case: PretrainCase):
        if case not in cache:
            config = BertConfig.preset(case.preset)
            directory = str(tmp_path_factory.mktemp(str(case)))
            save_initial_weights("pretraining", config, directory)
            cache[case] = (config, directory, case_batches(case, config))
        return cache[case]

    return get


@pytest.mark.parametrize("impl", IMPLEMENTATIONS_TIMED)
def test_pretraining_step(case: PretrainCase, impl: str, prepared, measure, device: torch.device):
    if impl in GPU_ONLY and device.type == "cpu":
        pytest.skip(GPU_ONLY_REASON)
    reason = case_skip_reason(case, impl)
    if reason:
        pytest.skip(reason)
    config, directory, batches = prepared(case)
    step, batches = build_step(case, impl, directory, batches, device)
    role = {"fastbert": "candidate", GRAPHED: "variant"}.get(impl, "baseline")
    measure(
        step, batches,
        group=f"pretrain {case}", impl=impl, role=role,
        warmup=case.warmup, rounds=case.rounds, headline=case.headline,
        real_tokens=sum(b.real_tokens for b in batches) / len(batches),
        sequences=sum(b.sequences for b in batches) / len(batches),
        flops=sum(pretraining_flops(config, b) for b in batches) / len(batches),
    )
