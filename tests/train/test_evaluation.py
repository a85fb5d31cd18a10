"""Held-out evaluation: fixed masks, the metrics' definitions, and training left untouched (resume too)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from fastbert.data.dataset import PretrainingDataset
from fastbert.errors import UserError
from fastbert.model import BertConfig, BertForPreTraining
from fastbert.tokenizer import load_tokenizer
from fastbert.train.config import EngineConfig, PretrainConfig
from fastbert.train.engines import LocalEngine
from fastbert.train.evaluation import HeldOutEvaluation, held_out_batches
from fastbert.train.pretrain import run_pretraining
from fastbert.train.run_dir import StartMode


def without_seconds(metrics: dict) -> dict:
    """Held-out metrics without the evaluation's wall time."""
    return {k: v for k, v in metrics.items() if k != "seconds"}


def tiny_engine(seed: int, vocab_size: int) -> LocalEngine:
    torch.manual_seed(seed)
    return LocalEngine(BertForPreTraining(BertConfig.preset("tiny", vocab_size=vocab_size)), EngineConfig())


def test_fixed_masks_give_identical_numbers_for_identical_weights(tiny_held_out_data):
    dataset = PretrainingDataset(tiny_held_out_data)
    tokenizer = load_tokenizer(tiny_held_out_data.parent / "tokenizer")
    batches = held_out_batches(dataset, tokenizer, batch_size=16, max_pairs=48, mlm_probability=0.15)
    # Built again (another batch size): the same pairs with the same masked tokens.
    again = held_out_batches(dataset, tokenizer, batch_size=7, max_pairs=48, mlm_probability=0.15)
    labels = torch.cat([b.targets["labels"] for b in batches])
    assert torch.equal(labels, torch.cat([b.targets["labels"] for b in again]))
    assert sum(b.num_sequences for b in batches) == 48 and (labels != -100).any()

    first = without_seconds(HeldOutEvaluation(tiny_engine(1, dataset.vocab_size), batches)(0))
    assert without_seconds(HeldOutEvaluation(tiny_engine(1, dataset.vocab_size), batches)(0)) == first  # bit for bit
    # Other batch boundaries change only the float summation order.
    assert without_seconds(HeldOutEvaluation(tiny_engine(1, dataset.vocab_size), again)(0)) == pytest.approx(first, rel=1e-6)
    other = without_seconds(HeldOutEvaluation(tiny_engine(2, dataset.vocab_size), batches)(0))
    assert other["mlm_loss"] != first["mlm_loss"]  # the numbers do depend on the weights
    assert first["pairs"] == 48 and first["mlm_perplexity"] == pytest.approx(math.exp(first["mlm_loss"]))
    assert 0 <= first["mlm_acc"] <= 1 and 0 <= first["nsp_acc"] <= 1
    not_next = torch.cat([b.targets["next_sentence_label"] for b in batches]).double().mean().item()
    assert first["nsp_majority"] == pytest.approx(max(not_next, 1 - not_next))
    # The loss of predicting the label balance itself: the best an NSP-blind model can do.
    prior = torch.full((48,), not_next, dtype=torch.float64)
    labels = torch.cat([b.targets["next_sentence_label"] for b in batches]).double()
    assert first["nsp_prior_loss"] == pytest.approx(torch.nn.functional.binary_cross_entropy(prior, labels).item())


def test_held_out_losses_are_the_models_own_over_the_whole_set(tiny_held_out_data):
    dataset = PretrainingDataset(tiny_held_out_data)
    tokenizer = load_tokenizer(tiny_held_out_data.parent / "tokenizer")
    (batch,) = held_out_batches(dataset, tokenizer, batch_size=64, max_pairs=40, mlm_probability=0.15)
    engine = tiny_engine(3, dataset.vocab_size)
    outputs = engine.forward(batch)
    metrics = HeldOutEvaluation(engine, [batch])(0)
    assert metrics["mlm_loss"] == pytest.approx(float(outputs.mlm_loss), rel=1e-5)
    assert metrics["nsp_loss"] == pytest.approx(float(outputs.nsp_loss), rel=1e-5)
    # Several batches: means over all masked tokens, not means of batch means.
    split = held_out_batches(dataset, tokenizer, batch_size=9, max_pairs=40, mlm_probability=0.15)
    assert without_seconds(HeldOutEvaluation(engine, split)(0)) == pytest.approx(without_seconds(metrics), rel=1e-5)


def pretrain(data: Path, out: Path, held_out: Path | None, resume: bool = False, **settings) -> dict:
    config = PretrainConfig(model="tiny", max_steps=6, log_every=1, batch_size=4, num_workers=0, seed=5,
                            eval_data=None if held_out is None else str(held_out), eval_pairs=64, **settings)
    run_pretraining(config, data, out, progress=False, start=StartMode(resume=resume))
    return read_metrics(out)


def read_metrics(out: Path) -> dict:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"loss": {r["step"]: r["loss"] for r in records if "loss" in r},
            "eval": {r["step"]: r["eval"] for r in records if "eval" in r}}


def test_evaluation_changes_no_training_loss_and_a_resumed_run_evaluates_the_same(tiny_pretraining_data, tiny_held_out_data, tmp_path):
    # Dropout is on (hidden 0.1): any draw from the training RNG by the evaluation would show.
    plain = pretrain(tiny_pretraining_data, tmp_path / "plain", None)
    evaluated = pretrain(tiny_pretraining_data, tmp_path / "eval", tiny_held_out_data, eval_every=2, save_every=3)
    assert evaluated["loss"] == plain["loss"]
    assert sorted(evaluated["eval"]) == [2, 4, 6]
    assert evaluated["eval"][6]["mlm_loss"] < evaluated["eval"][2]["mlm_loss"]

    # Killed after the checkpoint at step 3, then resumed: the same losses and held-out numbers.
    out = tmp_path / "eval"
    shutil.rmtree(out / "checkpoints" / "step_00000006")
    (out / "checkpoints" / "latest").write_text("step_00000003\n")
    resumed = pretrain(tiny_pretraining_data, out, tiny_held_out_data, resume=True, eval_every=2, save_every=3)
    assert resumed["loss"] == evaluated["loss"]
    assert {s: without_seconds(e) for s, e in resumed["eval"].items()} == {s: without_seconds(e) for s, e in evaluated["eval"].items()}


def test_held_out_settings_are_checked_at_start(tiny_pretraining_data, tmp_path):
    with pytest.raises(UserError, match="eval_every is set but there are no held-out pairs"):
        pretrain(tiny_pretraining_data, tmp_path / "a", None, eval_every=2)
    with pytest.raises(UserError, match="eval_pairs must be an integer >= 1"):
        PretrainConfig(eval_pairs=0)
    other = tmp_path / "other"  # pairs prepared with another tokenizer
    shutil.copytree(tiny_pretraining_data, other)
    metadata = json.loads((other / "metadata.json").read_text())
    metadata["tokenizer"]["hash"] = "0" * 16
    (other / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(UserError, match="prepared with another tokenizer"):
        pretrain(tiny_pretraining_data, tmp_path / "b", other)


def test_the_datas_own_validation_split_is_evaluated_without_eval_data(shared_data, tiny_pretraining_data, tmp_path):
    from fastbert.data.prepare import PrepareSettings, prepare_pretraining_data

    # Twenty Wikipedia documents prepared with three held out: the run evaluates on exactly those.
    text = (shared_data / "corpus" / "wiki_00.txt").read_text(encoding="utf-8")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text[: text.index("\n\n", 550_000) + 2], encoding="utf-8")
    data = tmp_path / "with-validation"
    prepare_pretraining_data([str(corpus)], tiny_pretraining_data.parent / "tokenizer", data,
                             PrepareSettings(max_seq_len=32, validation_documents=3))
    automatic = pretrain(data, tmp_path / "auto", None, eval_every=3)
    # Naming the same directory as eval_data picks its validation split too: the same numbers.
    named = pretrain(data, tmp_path / "named", data, eval_every=3)
    assert sorted(automatic["eval"]) == [3, 6]
    assert {s: without_seconds(e) for s, e in automatic["eval"].items()} == {s: without_seconds(e) for s, e in named["eval"].items()}
    validation_pairs = PretrainingDataset(data, "validation")
    assert automatic["eval"][6]["pairs"] == min(64, len(validation_pairs))
