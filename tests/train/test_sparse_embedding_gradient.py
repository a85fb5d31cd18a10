"""On a CPU the engine takes the word table's gradient as sparse rows into a kept dense buffer.

The point is speed (no fresh [vocab, hidden] zero-fill per step); what must hold is that the
update is the one the dense gradient gives, with accumulation and a tied MLM decoder too.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from fastbert import BertConfig, BertForPreTraining, BertForSequenceClassification
from fastbert.model import BertInputs
from fastbert.model.inputs import Batch
from fastbert.train.config import EngineConfig, OptimizerConfig
from fastbert.train.engines import LocalEngine
from fastbert.train.engines.optim import build_optimizer

VOCAB = 300


def config() -> BertConfig:
    return BertConfig.preset("tiny", vocab_size=VOCAB, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def batch(kind: str, seed: int) -> Batch:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 12, (4,), generator=g)
    total = int(lengths.sum())
    ids = torch.randint(5, 60, (total,), generator=g)  # a few rows of the table, some repeated
    inputs = BertInputs.from_flat(
        ids, F.pad(lengths.cumsum(0), (1, 0)).to(torch.int32), int(lengths.max()),
        torch.cat([torch.arange(int(n)) for n in lengths]), torch.randint(0, 2, (total,), generator=g),
    )
    if kind == "classification":
        targets = {"labels": torch.randint(0, 2, (4,), generator=g)}
    else:
        labels = torch.where(torch.rand(total, generator=g) < 0.3, ids, -100)
        labels[0] = ids[0]
        targets = {"labels": labels, "next_sentence_label": torch.randint(0, 2, (4,), generator=g)}
    return Batch(inputs, targets, num_tokens=total, num_sequences=4)


@pytest.mark.parametrize("clip", [1.0, 1e-3], ids=["clip-1", "clipping-every-step"])
@pytest.mark.parametrize("kind", ["classification", "pretraining"])
def test_sparse_rows_give_the_dense_update(kind, clip):
    torch.manual_seed(0)
    model = (BertForSequenceClassification if kind == "classification" else BertForPreTraining)(config())
    twin = copy.deepcopy(model)
    # At 1e-3 every update is clipped, so the norm taken over the touched rows only must be the whole gradient's.
    optim = OptimizerConfig(lr=1e-3, warmup_steps=0, grad_clip=clip)
    engine = LocalEngine(model, EngineConfig(optim=optim, total_steps=10, grad_accum_steps=2), torch.device("cpu"))
    table = engine.module.bert.embeddings.word_embeddings.weight
    arrivals: list[bool] = []
    table.register_hook(lambda grad: arrivals.append(grad.is_sparse))
    buffer = table.grad.data_ptr() if table.grad is not None else None

    twin_optimizer = build_optimizer(twin, optim, torch.device("cpu"))
    batches = [batch(kind, seed) for seed in range(6)]
    for step in range(3):
        for micro in batches[2 * step : 2 * step + 2]:
            engine.train_step(micro)
            (twin(micro.inputs, **micro.targets).loss / 2).backward()
        twin_norm = torch.nn.utils.clip_grad_norm_(twin.parameters(), clip)
        assert twin_norm > clip or clip == 1.0
        torch.testing.assert_close(engine._grad_norm, twin_norm, rtol=1e-5, atol=0)
        twin_optimizer.step()
        twin_optimizer.zero_grad()
        for group in twin_optimizer.param_groups:
            group["lr"] = engine.get_lr()

    if kind == "classification":
        assert len(arrivals) == 6 and all(arrivals)  # the rows arrived sparse
        assert table.grad.data_ptr() == buffer and not table.grad.any()  # into one buffer, zeroed for the next step
    else:  # tied to the MLM decoder, whose gradient is dense anyway: the dense path, unchanged
        assert len(arrivals) == 6 and not any(arrivals) and buffer is None
    # Duplicate rows are summed in another order than the dense backward's, and Adam turns a
    # near-zero gradient's last-bit difference into up to lr x a few 1e-4: hence atol 1e-6 at lr 1e-3.
    for (name, ours), theirs in zip(engine.module.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6, msg=lambda m: f"{name}: {m}")


def test_a_frozen_table_stays_as_it_was():
    torch.manual_seed(0)
    model = BertForSequenceClassification(config())
    model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    before = model.bert.embeddings.word_embeddings.weight.clone()
    engine = LocalEngine(model, EngineConfig(optim=OptimizerConfig(lr=1e-2, warmup_steps=0), total_steps=10), torch.device("cpu"))
    for seed in range(3):
        engine.train_step(batch("classification", seed))
    table = engine.module.bert.embeddings.word_embeddings.weight
    assert table.grad is None
    torch.testing.assert_close(table, before, rtol=0, atol=0)
