"""Pretraining step (forward, backward, AdamW): fastbert vs its torch-reference path vs transformers.

Identical batches (lengths uniform in [seq/2, seq], 15% of real tokens masked, NSP
labels), identical initial weights, dropout at the config default, fused AdamW
on both sides. fastbert gets the flat layout, transformers the batch padded to its
longest sequence. On the GPU both run under bf16 autocast with fp32 weights.
The CPU headline (issue 4) is ``mini-b32-s128``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from benchmarks.workloads import (
    COMPILED, GRAPHED, IMPLEMENTATIONS, compiled_train_step, graphed_train_step, input_layout, load_model,
    pretraining_batches, pretraining_flops, save_initial_weights, train_step,
)
from fastbert.model import BertConfig

DISTINCT_BATCHES = 4


@dataclass(frozen=True)
class PretrainCase:
    preset: str
    batch_size: int
    seq_len: int
    headline: bool = False
    warmup: int | None = None  # None: the suite's default (conftest.ROUNDS)
    rounds: int | None = None
    compiled_baseline: bool = False  # also time torch.compile of the reference (a compilation per case)

    def __str__(self) -> str:
        return f"{self.preset}-b{self.batch_size}-s{self.seq_len}"


CASES = {
    # BERT-base on a CPU is dominated by AdamW over 110M parameters: a few rounds suffice.
    "cpu": [PretrainCase("mini", 32, 128, headline=True, rounds=8), PretrainCase("base", 4, 128, warmup=1, rounds=3)],
    # Four implementations per case within the GPU suite's time: 5 warmup calls (the
    # graphed variant captures during its first), 30 timed rounds.
    "gpu": [
        PretrainCase("base", 32, 128, headline=True, warmup=5, rounds=30, compiled_baseline=True),
        # BERT's own batch (256 x 128) halved: enough work per step that launches stop dominating.
        PretrainCase("base", 128, 128, headline=True, warmup=5, rounds=20),
        PretrainCase("base", 8, 512, warmup=5, rounds=30),
        PretrainCase("large", 8, 512, headline=True, warmup=5, rounds=20),
    ],
}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Per case, built once: the initial-weights directory and the batches, shared by every implementation."""
    cache: dict[PretrainCase, tuple[BertConfig, str, list]] = {}

    def get(case: PretrainCase):
        if case not in cache:
            config = BertConfig.preset(case.preset)
            directory = str(tmp_path_factory.mktemp(str(case)))
            save_initial_weights("pretraining", config, directory)
            batches = pretraining_batches(DISTINCT_BATCHES, case.batch_size, case.seq_len // 2, case.seq_len, config.vocab_size)
            cache[case] = (config, directory, batches)
        return cache[case]

    return get


@pytest.mark.parametrize("impl", [*IMPLEMENTATIONS, GRAPHED, COMPILED])
def test_pretraining_step(case: PretrainCase, impl: str, prepared, measure, device: torch.device):
    if impl in ("fastbert-torch", GRAPHED, COMPILED) and device.type == "cpu":
        pytest.skip("on a CPU fastbert already runs its torch reference ops, CUDA graphs need CUDA, "
                    "and compiling takes minutes on two cores")
    if impl == COMPILED and not case.compiled_baseline:
        pytest.skip("torch.compile baseline timed on the first GPU case only (each case compiles anew)")
    config, directory, batches = prepared(case)
    model = load_model("pretraining", impl, directory, device)
    autocast = torch.bfloat16 if device.type == "cuda" else None
    if impl == GRAPHED:  # host batches, padded to the case's full shape inside the timed step
        step = graphed_train_step(model, autocast, case.batch_size, case.seq_len)
    elif impl == COMPILED:
        step = compiled_train_step(model, autocast, case.batch_size, case.seq_len)
    else:
        step = train_step(model, input_layout(impl), autocast)
        batches = [b.to(device) for b in batches]
    role = {"fastbert": "candidate", GRAPHED: "variant"}.get(impl, "baseline")
    measure(
        step, batches,
        group=f"pretrain {case}", impl=impl, role=role,
        warmup=case.warmup, rounds=case.rounds, headline=case.headline,
        real_tokens=sum(b.real_tokens for b in batches) / len(batches),
        sequences=case.batch_size,
        flops=sum(pretraining_flops(config, b) for b in batches) / len(batches),
    )
