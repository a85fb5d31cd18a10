"""Gradient accumulation in fine-tuning: k micro-batches of b make the update of one batch of k x b."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

SENTENCES = ["Kim left.", "Left Kim the.", "We ate the cake.", "Ate we it the.", "She sings.", "Sings she the a."]


def _cola(folder, rows):
    folder.mkdir()
    text = "".join(f"gj04\t{i % 2}\t\t{SENTENCES[i % len(SENTENCES)]} {i}\n" for i in range(rows))
    for name in ("in_domain_train.tsv", "in_domain_dev.tsv", "out_of_domain_dev.tsv"):
        (folder / name).write_text(text)
    return folder


def _weights(out):
    return load_file(out / "model" / "model.safetensors")


def test_accumulated_update_equals_the_large_batch_update(tiny_bert_dir, tmp_path, finetune_cli):
    # fp32 on the CPU, no dropout (tiny_bert_dir): 48 items make 4 updates either way.
    data = _cola(tmp_path / "cola", 48)
    common = ["--task", "cola", "--data-dir", data, "--init", tiny_bert_dir, "--epochs", "1", "--seed", "3"]
    accumulated = finetune_cli(tmp_path / "accumulated", *common, "--batch-size", "4", "--grad-accum-steps", "3")
    large = finetune_cli(tmp_path / "large", *common, "--batch-size", "12")
    assert [e["train_steps"] for e in accumulated["runs"][0]["epochs"]] == [4]
    assert [e["train_steps"] for e in large["runs"][0]["epochs"]] == [4]
    ours, theirs = _weights(tmp_path / "accumulated"), _weights(tmp_path / "large")
    start = load_file(tiny_bert_dir / "model.safetensors")
    assert not torch.equal(ours["bert.encoder.layer.0.attention.self.query.weight"], start["encoder.layer.0.attention.self.query.weight"])
    for name, tensor in ours.items():
        torch.testing.assert_close(tensor, theirs[name], rtol=0, atol=1e-6, msg=name)
    assert accumulated["runs"][0]["epochs"][0]["train_loss"] == pytest.approx(large["runs"][0]["epochs"][0]["train_loss"], rel=1e-5)


def test_epochs_and_schedule_count_optimizer_steps(tiny_bert_dir, tmp_path, finetune_cli):
    # 50 items in micro-batches of 4: 13 micro-batches, 4 whole windows of 3 (the 13th is dropped).
    data = _cola(tmp_path / "cola", 50)
    results = finetune_cli(tmp_path / "out", "--task", "cola", "--data-dir", data, "--init", tiny_bert_dir,
                           "--batch-size", "4", "--grad-accum-steps", "3")
    epochs = results["runs"][0]["epochs"]
    assert [e["train_steps"] for e in epochs] == [4, 4]
    assert epochs[0]["lr_end"] > 0 and epochs[1]["lr_end"] == 0.0  # linear decay reaches 0 at the last update
