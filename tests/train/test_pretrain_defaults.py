"""Fresh pretraining runs without attention dropout (FlashAttention-eligible); BERT's 0.1 is one setting away."""

from __future__ import annotations

import json

from fastbert.train.config import PretrainConfig
from fastbert.train.pretrain import run_pretraining


def exported_attention_dropout(data, out, **overrides) -> float:
    config = PretrainConfig(model="tiny", max_steps=1, batch_size=4, num_workers=0, **overrides)
    run_pretraining(config, data, out, progress=False)
    return json.loads((out / "model" / "config.json").read_text())["attention_probs_dropout_prob"]


def test_fresh_pretraining_defaults_to_no_attention_dropout(tiny_pretraining_data, tmp_path):
    assert exported_attention_dropout(tiny_pretraining_data, tmp_path / "default") == 0.0
    classic = {"model_overrides": {"attention_probs_dropout_prob": 0.1}}
    assert exported_attention_dropout(tiny_pretraining_data, tmp_path / "classic", **classic) == 0.1
