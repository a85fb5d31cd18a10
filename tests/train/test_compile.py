"""``compile=True``: the local engine runs torch.compile of the model; training equals eager."""

from __future__ import annotations

import pytest
import torch

from fastbert import BertConfig, BertForPreTraining
from fastbert.errors import UserError
from fastbert.train.config import EngineConfig, OptimizerConfig
from fastbert.train.engines import LocalEngine

from test_cuda_graphs import flat_batch


def losses(compile: bool) -> list[float]:
    torch.manual_seed(0)
    config = BertConfig.preset("tiny", vocab_size=300, max_position_embeddings=64,
                               hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    engine = LocalEngine(BertForPreTraining(config), EngineConfig(optim=OptimizerConfig(lr=1e-3, warmup_steps=0),
                                                                 total_steps=10, compile=compile))
    # Lengths change every batch: dynamic shapes must not recompile per batch.
    batches = [flat_batch([9 + s, 4, 12 - s % 3, 6], seed=s) for s in range(10)]
    return [engine.train_step(batch).loss.item() for batch in batches]


@pytest.mark.slow
def test_compiled_training_equals_eager_over_ten_steps():
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = losses(compile=True)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # it really compiled
    assert compiled == pytest.approx(losses(compile=False), rel=1e-4, abs=1e-5)


def test_compile_is_refused_where_it_cannot_run():
    with pytest.raises(UserError, match="compile works with the local engine"):
        EngineConfig(compile=True, cuda_graphs=True)
    with pytest.raises(UserError, match="compile works with the local engine"):
        EngineConfig(compile=True, deepspeed_config={"zero_optimization": {"stage": 0}})
