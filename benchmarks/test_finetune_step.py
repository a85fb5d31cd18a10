"""Sequence-classification training step: fastbert vs its torch-reference path vs transformers.

CoLA-like batches (short sentence pairs, lengths uniform in 8-64 tokens) on
identical weights; fastbert gets the flat layout, transformers the padded one. AdamW on
both sides, dropout at the config default, bf16 autocast on the GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pytest
import torch

from benchmarks.workloads import (
    GRAPHED, IMPLEMENTATIONS, classification_batches, graphed_train_step, input_layout, load_model,
    save_initial_weights, train_step,
)
from fastbert.model import BertConfig

DISTINCT_BATCHES = 4


@dataclass(frozen=True)
class FinetuneCase:
    preset: str
    batch_size: int
    min_len: int
    max_len: int

    def __str__(self) -> str:
        return f"{self.preset}-b{self.batch_size}-len{self.min_len}-{self.max_len}"


CASES = {"cpu": [FinetuneCase("mini", 32, 8, 64)], "gpu": [FinetuneCase("base", 32, 8, 64)]}


def build_step(case: FinetuneCase, impl: str, directory: str, device: torch.device) -> tuple[Callable, list]:
    """The timed step of ``impl`` (weights from ``directory``) and the batches it takes."""
    model = load_model("classification", impl, directory, device)
    autocast = torch.bfloat16 if device.type == "cuda" else None
    batches = classification_batches(DISTINCT_BATCHES, case.batch_size, case.min_len, case.max_len)
    if impl == GRAPHED:  # host batches, padded to a row length of max_len inside the timed step
        return graphed_train_step(model, autocast, case.batch_size, case.max_len), batches
    return train_step(model, input_layout(impl), autocast), [b.to(device) for b in batches]


@pytest.mark.parametrize("impl", [*IMPLEMENTATIONS, GRAPHED])
def test_classification_step(case: FinetuneCase, impl: str, measure, device: torch.device, tmp_path):
    if impl in ("fastbert-torch", GRAPHED) and device.type == "cpu":
        pytest.skip("on a CPU fastbert already runs its torch reference ops, and CUDA graphs need CUDA")
    save_initial_weights("classification", BertConfig.preset(case.preset), str(tmp_path))
    step, batches = build_step(case, impl, str(tmp_path), device)
    measure(step, batches, group=f"finetune step {case}", impl=impl,
            role={"fastbert": "candidate", GRAPHED: "variant"}.get(impl, "baseline"),
            real_tokens=sum(b.real_tokens for b in batches) / len(batches), sequences=case.batch_size)
