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
    IMPLEMENTATIONS, input_layout, load_model, pretraining_batches, pretraining_flops,
    save_initial_weights, train_step,
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

    def __str__(self) -> str:
        return f"{self.preset}-b{self.batch_size}-s{self.seq_len}"


CASES = {
    # BERT-base on a CPU is dominated by AdamW over 110M parameters: a few rounds suffice.
    "cpu": [PretrainCase("mini", 32, 128, headline=True, rounds=8), PretrainCase("base", 4, 128, warmup=1, rounds=3)],
    "gpu": [
        PretrainCase("mini", 64, 128),
        PretrainCase("base", 32, 128, headline=True),
        PretrainCase("base", 8, 512),
        PretrainCase("large", 8, 512, headline=True),
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


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_pretraining_step(case: PretrainCase, impl: str, prepared, measure, device: torch.device):
    if impl == "fastbert-torch" and device.type == "cpu":
        pytest.skip("on a CPU fastbert already runs its torch reference ops")
    config, directory, batches = prepared(case)
    model = load_model("pretraining", impl, directory, device)
    step = train_step(model, input_layout(impl), torch.bfloat16 if device.type == "cuda" else None)
    batches = [b.to(device) for b in batches]
    measure(
        step, batches,
        group=f"pretrain {case}", impl=impl, role="candidate" if impl == "fastbert" else "baseline",
        warmup=case.warmup, rounds=case.rounds, headline=case.headline,
        real_tokens=sum(b.real_tokens for b in batches) / len(batches),
        sequences=case.batch_size,
        flops=sum(pretraining_flops(config, b) for b in batches) / len(batches),
    )
