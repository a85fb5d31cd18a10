"""Held-out MLM + NSP evaluation with fixed masks.

The held-out pairs are masked once, when the evaluation is built, by the training
collator with a seed and epoch of their own (:data:`HELD_OUT_MASK_SEED`): the same tokens
are masked at every evaluation, in every run of any seed, so curves (and runs) compare.
Nothing here draws from a global RNG or the training data order, and the model runs in
eval mode (no dropout), so evaluating never changes what training sees.

MLM loss and accuracy are over all masked tokens of the set (not a mean of batch means),
perplexity is ``exp`` of that loss, NSP loss and accuracy are over its pairs, and
``nsp_majority`` is the accuracy of always giving the more frequent NSP label on them, and
``nsp_prior_loss`` the NSP loss of always predicting the set's label balance (its entropy):
the two bars a model that learnt nothing about NSP scores.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..model.inputs import IGNORE_INDEX, Batch
from .engines import Engine

HELD_OUT_MASK_SEED = 0x5EED
"""Seeds the held-out masks; fixed, so that runs with different training seeds are scored on the same masks."""

SUMS = ("mlm_loss_sum", "mlm_correct", "mlm_count", "nsp_loss_sum", "nsp_correct", "nsp_count", "nsp_not_next")


def held_out_batches(dataset, tokenizer, *, batch_size: int, max_pairs: int | None, mlm_probability: float) -> list[Batch]:
    """The masked batches of ``dataset`` (at most ``max_pairs`` pairs, spread evenly over it), masked once."""
    from ..data.collator import PretrainingCollator

    count = len(dataset) if max_pairs is None else min(max_pairs, len(dataset))
    # Evenly spaced rather than the first pairs: prepared pairs come document by document.
    indices = np.unique(np.linspace(0, len(dataset) - 1, count).round().astype(np.int64)).tolist()
    collator = PretrainingCollator.from_tokenizer(tokenizer, seed=HELD_OUT_MASK_SEED, mlm_probability=mlm_probability)
    return [collator([dataset[i] for i in indices[start:start + batch_size]]) for start in range(0, len(indices), batch_size)]


def pretraining_sums(mlm_logits: torch.Tensor, mlm_labels: torch.Tensor, nsp_logits: torch.Tensor,
                     nsp_labels: torch.Tensor) -> torch.Tensor:
    """float64 [7] in :data:`SUMS` order for one batch; any model's outputs reduce to these
    (fastbert's masked rows, or transformers' logits gathered at the labelled positions)."""
    real = mlm_labels != IGNORE_INDEX
    mlm_logits, mlm_labels = mlm_logits[real].float(), mlm_labels[real]
    nsp_logits = nsp_logits[: nsp_labels.numel()].float()  # static-shape outputs carry dummy rows after the real ones
    return torch.stack([
        F.cross_entropy(mlm_logits, mlm_labels, reduction="sum").double(),
        (mlm_logits.argmax(-1) == mlm_labels).sum().double(),
        torch.tensor(float(mlm_labels.numel()), dtype=torch.float64, device=mlm_logits.device),
        F.cross_entropy(nsp_logits, nsp_labels, reduction="sum").double(),
        (nsp_logits.argmax(-1) == nsp_labels).sum().double(),
        torch.tensor(float(nsp_labels.numel()), dtype=torch.float64, device=nsp_logits.device),
        nsp_labels.sum().double(),
    ])


def summarize(sums: list[float]) -> dict[str, float]:
    """The logged metrics from summed :data:`SUMS`."""
    total = dict(zip(SUMS, sums))
    mlm_loss = total["mlm_loss_sum"] / max(1.0, total["mlm_count"])
    return {
        "mlm_loss": mlm_loss,
        "mlm_acc": total["mlm_correct"] / max(1.0, total["mlm_count"]),
        "mlm_perplexity": math.exp(min(mlm_loss, 700.0)),  # exp overflows float past ~709
        "nsp_loss": total["nsp_loss_sum"] / max(1.0, total["nsp_count"]),
        "nsp_acc": total["nsp_correct"] / max(1.0, total["nsp_count"]),
        # What always answering the more frequent NSP label scores on these pairs: the bar to clear.
        "nsp_majority": max(total["nsp_not_next"], total["nsp_count"] - total["nsp_not_next"]) / max(1.0, total["nsp_count"]),
        # A model can sit just above the majority class by luck of its decision threshold; a loss
        # under the label balance's entropy says its probabilities carry NSP information.
        "nsp_prior_loss": _entropy(total["nsp_not_next"] / max(1.0, total["nsp_count"])),
        "pairs": int(total["nsp_count"]),
    }


def _entropy(p: float) -> float:
    """Cross-entropy, in nats, of predicting probability ``p`` for a label that is 1 a ``p`` share of the time."""
    return -sum(q * math.log(q) for q in (p, 1.0 - p) if q > 0.0)


class HeldOutEvaluation:
    """The loop's evaluation hook: the held-out metrics of the engine's current weights.

    Every rank evaluates the whole set (it is small): under ZeRO-3 every forward is a
    collective, so all ranks must run the same batches.
    """

    def __init__(self, engine: Engine, batches: list[Batch]):
        self.engine = engine
        self.batches = batches

    def __call__(self, step: int, trained: dict[str, Any] | None = None) -> dict[str, float]:
        started = time.perf_counter()
        sums = torch.zeros(len(SUMS), dtype=torch.float64, device=self.engine.device)
        for batch in self.batches:
            outputs = self.engine.forward(batch)
            labels = batch.targets["next_sentence_label"].to(outputs.seq_relationship_logits.device)
            sums += pretraining_sums(outputs.masked_lm_logits, outputs.masked_lm_labels, outputs.seq_relationship_logits, labels)
        return {**summarize(sums.tolist()), "seconds": time.perf_counter() - started}
