"""The time-to-quality benchmark's measuring parts: transformers is scored exactly as fastbert is, and crossings are read right."""

from __future__ import annotations

import pytest
import torch

from benchmarks.bench_time_to_quality import time_to_reach, transformers_evaluation
from fastbert.data.dataset import PretrainingDataset
from fastbert.model import BertConfig, BertForPreTraining
from fastbert.tokenizer import load_tokenizer
from fastbert.train.config import EngineConfig
from fastbert.train.engines import LocalEngine
from fastbert.train.evaluation import HeldOutEvaluation, held_out_batches


def test_transformers_is_scored_on_the_same_masks_as_fastbert(tiny_held_out_data, tmp_path):
    transformers = pytest.importorskip("transformers")
    dataset = PretrainingDataset(tiny_held_out_data)
    tokenizer = load_tokenizer(tiny_held_out_data.parent / "tokenizer")
    batches = held_out_batches(dataset, tokenizer, batch_size=16, max_pairs=48, mlm_probability=0.15)
    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig.preset("tiny", vocab_size=dataset.vocab_size))
    model.save_pretrained(tmp_path / "initial")
    hf_model = transformers.BertForPreTraining.from_pretrained(tmp_path / "initial", attn_implementation="sdpa")

    ours = HeldOutEvaluation(LocalEngine(model, EngineConfig()), batches)(0)
    theirs = transformers_evaluation(hf_model, batches, tokenizer.pad_id)()
    for key in ("mlm_loss", "mlm_acc", "nsp_loss", "nsp_acc", "nsp_majority", "pairs"):
        assert theirs[key] == pytest.approx(ours[key], rel=1e-4), key
    assert hf_model.training  # scoring left it ready to train on


def test_time_to_reach_interpolates_between_evaluations():
    curve = [{"seconds": 0, "mlm_loss": 10.0}, {"seconds": 60, "mlm_loss": 8.0}, {"seconds": 120, "mlm_loss": 7.0}]
    assert time_to_reach(curve, 8.0) == 60
    assert time_to_reach(curve, 7.5) == pytest.approx(90)
    assert time_to_reach(curve, 9.0) == pytest.approx(30)
    assert time_to_reach(curve, 6.0) is None
