"""`fastbert finetune` checks its settings and data before training, holds its --out, and a full
disk while exporting is one line."""

from __future__ import annotations

import errno
import json
import logging
import os

import pytest
import torch

from fastbert.cli import main

GOOD = "gj04\t1\t\tThe sailors rode the breeze clear of the rocks.\n"
BAD = "gj04\t0\t*\tThe more books I read.\n"
LONG = "gj04\t1\t\t" + " ".join(["the sailors rode the breeze"] * 12) + ".\n"  # about 60 tokens


@pytest.fixture(scope="module")
def short_model(minilm_dir, tmp_path_factory):
    """A random 2-layer BERT with only 32 positions, and MiniLM's tokenizer."""
    from fastbert.model import BertConfig, BertModel
    from fastbert.tokenizer import load_tokenizer

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("short_bert")
    BertModel(BertConfig.preset("tiny", max_position_embeddings=32)).save_pretrained(path, tokenizer=load_tokenizer(minilm_dir))
    return path


def cola(tmp_path, train, in_domain=GOOD + BAD, out_of_domain=GOOD + BAD):
    data = tmp_path / "cola"
    data.mkdir()
    (data / "in_domain_train.tsv").write_text(train)
    (data / "in_domain_dev.tsv").write_text(in_domain)
    (data / "out_of_domain_dev.tsv").write_text(out_of_domain)
    return data


def finetune(data, init, out, *extra):
    return ["finetune", "--task", "cola", "--data-dir", str(data), "--init", str(init), "--out", str(out),
            "--epochs", "1", "--batch-size", "4", "--max-seq-len", "64", *extra]


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize("extra, message", [
    (["--epochs", "0"], "--epochs must be an integer >= 1, got 0"),
    (["--lr", "nan"], "lr must be a finite number > 0, got nan"),
    (["--beta1", "1.5"], "beta1 must be in [0, 1), got 1.5"),
    (["--weight-decay", "-1"], "weight_decay must be a finite number >= 0, got -1.0"),
    (["--warmup-steps", "-1"], "warmup_steps must be an integer >= 0 or null (use warmup_ratio), got -1"),
    (["--max-seq-len", "4"], "--max-seq-len must be an integer >= 8, got 4"),
    (["--max-train-examples", "0"], "--max-train-examples must be an integer >= 1 or absent (all), got 0"),
    (["--seeds", "1,-2"], "--seeds must be integers >= 0, got -2"),
])
def test_a_bad_setting_is_one_line(short_model, tmp_path, capsys, extra, message):
    assert main(finetune(cola(tmp_path, GOOD * 8), short_model, tmp_path / "out", *extra)) == 2
    assert error_line(capsys) == f"fastbert: error: {message}"


def test_an_empty_dev_split_stops_before_training(short_model, tmp_path, capsys):
    data = cola(tmp_path, GOOD * 8 + BAD * 8, out_of_domain="")
    assert main(finetune(data, short_model, tmp_path / "out")) == 2
    # The GLUE reader refuses an empty file itself, naming it, before anything trains.
    assert error_line(capsys) == f"fastbert: error: {data / 'out_of_domain_dev.tsv'}: empty file"
    assert not (tmp_path / "out").exists()


def test_sequences_longer_than_the_model_are_truncated_with_a_count_or_refused(short_model, tmp_path, capsys, caplog):
    data = cola(tmp_path, GOOD * 6 + LONG + BAD * 5)
    assert main(finetune(data, short_model, tmp_path / "refused", "--long-sequences", "refuse")) == 2
    assert error_line(capsys) == (f"fastbert: error: {data / 'in_domain_train.tsv'}: example 7 has 63 tokens, more than the 32 "
                                  "that fit (--max-seq-len, at most the model's max_position_embeddings); 1 of 12 examples "
                                  "are too long (--long-sequences truncate cuts them)")
    with caplog.at_level(logging.INFO, logger="fastbert.finetune.runner"):
        assert main(finetune(data, short_model, tmp_path / "cut")) == 0  # --max-seq-len 64 > 32 positions: cut at 32
    assert "cola: truncated 1 of 12 train examples to 32 tokens" in caplog.messages
    assert (tmp_path / "cut" / "model" / "model.safetensors").is_file()


def test_an_earlier_run_in_out_needs_overwrite(short_model, tmp_path, capsys):
    data, out = cola(tmp_path, GOOD * 4 + BAD * 4), tmp_path / "out"
    assert main(finetune(data, short_model, out)) == 0
    assert main(finetune(data, short_model, out)) == 2
    assert error_line(capsys) == (f"fastbert: error: {out}: holds an earlier run (metrics.jsonl, model, results.json); "
                                  "add --overwrite to replace it, or choose another --out")
    assert main(finetune(data, short_model, out, "--overwrite", "--seeds", "3,4")) == 0
    assert sorted(os.listdir(out)) == ["results.json", "seed_3", "seed_4"]
    assert [run["seed"] for run in json.loads((out / "results.json").read_text())["runs"]] == [3, 4]


def test_a_full_disk_while_exporting_is_one_line_and_leaves_no_staging(short_model, tmp_path, capsys, monkeypatch):
    import safetensors.torch

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    out = tmp_path / "out"
    assert main(finetune(cola(tmp_path, GOOD * 4 + BAD * 4), short_model, out)) == 2
    assert error_line(capsys).startswith(f"fastbert: error: no space left on device: {out} (the model model: ")
    assert os.listdir(out) == ["metrics.jsonl"]  # no model, no staging, no lock
