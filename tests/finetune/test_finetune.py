"""`fastbert finetune` end to end: a short CoLA run from MiniLM, and bad input."""

from __future__ import annotations

import json

import pytest
import torch

from fastbert.cli import main


def test_cola_finetune_beats_chance_and_exports_a_transformers_model(minilm_dir, shared_data, tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "finetune", "--task", "cola", "--data-dir", str(shared_data / "cola"), "--init", str(minilm_dir),
        "--out", str(out), "--epochs", "1", "--max-seq-len", "64", "--max-train-examples", "1000",
        "--batch-size", "16", "--lr", "1e-4", "--seed", "1",
    ]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    (run,) = results["runs"]
    assert set(run["best"]["eval"]) == {"in_domain", "out_of_domain"}
    assert run["best"]["eval"]["in_domain"]["mcc"] > 0
    assert run["epochs"][0]["train_steps"] == 63 and run["train_tokens_per_s"] > 0
    assert results["summary"]["in_domain"]["mcc"]["mean"] == run["best"]["eval"]["in_domain"]["mcc"]
    assert "in_domain" in capsys.readouterr().out

    transformers = pytest.importorskip("transformers")
    hf = transformers.BertForSequenceClassification.from_pretrained(out / "model").eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(out / "model")
    sentences = ["The sailors rode the breeze clear of the rocks.", "The more books I read."]
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    from fastbert.model import BertForSequenceClassification

    ours = BertForSequenceClassification.from_pretrained(out / "model").eval()
    with torch.no_grad():
        expected = ours(**batch).logits
        torch.testing.assert_close(hf(**batch).logits, expected, rtol=1e-4, atol=1e-4)


def test_bad_row_exits_2_naming_file_and_line(minilm_dir, tmp_path, capsys):
    data = tmp_path / "cola"
    data.mkdir()
    good = "gj04\t1\t\tThe sailors rode the breeze.\n"
    (data / "in_domain_train.tsv").write_text(good * 3 + "gj04\tyes\t\tBad label here.\n")
    (data / "in_domain_dev.tsv").write_text(good)
    (data / "out_of_domain_dev.tsv").write_text(good)
    code = main(["finetune", "--task", "cola", "--data-dir", str(data), "--init", str(minilm_dir), "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err == f"fastbert: error: {data / 'in_domain_train.tsv'}:4: label 'yes' is not one of 0, 1"


def test_missing_files_exit_2(minilm_dir, tmp_path, capsys):
    code = main(["finetune", "--task", "rte", "--data-dir", str(tmp_path), "--init", str(minilm_dir), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "rte: missing" in capsys.readouterr().err
