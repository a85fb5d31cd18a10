"""``fastbert demo`` with a tiny budget: every artefact exists and the model loads in transformers."""

from __future__ import annotations

import json

import pytest

from fastbert.cli import main
from fastbert.demo import is_sentence, prose_paragraphs


def test_demo_runs_end_to_end_on_the_stdlib_docstrings(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--max-steps", "20", "--batch-size", "8", "--vocab-size", "2000"]) == 0

    corpus = (out / "corpus" / "stdlib_docstrings.txt").read_text(encoding="utf-8")
    documents = [d for d in corpus.split("\n\n") if d.strip()]
    assert len(documents) > 100 and all(len(d.splitlines()) >= 2 for d in documents)
    records = [json.loads(line) for line in (out / "train" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [10, 20]
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "MLM accuracy" in report and "NSP accuracy" in report and "20 (stopped by max_steps)" in report

    transformers = pytest.importorskip("transformers")
    model = transformers.BertForPreTraining.from_pretrained(out / "train" / "model")
    tokenizer = transformers.BertTokenizerFast.from_pretrained(out / "train" / "model")
    assert model.config.vocab_size == tokenizer.vocab_size == 2000

    # Rerunning into the same directory replaces the earlier demo (so `make demo` is idempotent).
    small_corpus = tmp_path / "small.txt"
    small_corpus.write_text("\n\n".join(documents[:60]) + "\n", encoding="utf-8")
    assert main(["demo", "--out", str(out), "--corpus", str(small_corpus), "--max-steps", "2", "--batch-size", "4",
                 "--vocab-size", "600"]) == 0
    assert "2 (stopped by max_steps)" in (out / "report.md").read_text(encoding="utf-8")
    assert not (out / "corpus").exists()


def test_demo_refuses_a_used_output_directory(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["demo", "--out", str(tmp_path)]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err


def test_docstring_prose_keeps_sentences_and_drops_code():
    doc = "Return the sum.\n\nExample:\n\n>>> add(1, 2)\n3\n\nArgs:\n    a: first\n    b: second\n\nIt works on ints and floats alike."
    assert prose_paragraphs(doc) == ["Return the sum.", "Example:", "It works on ints and floats alike."]
    assert is_sentence("It works on ints and floats alike.")
    assert not is_sentence("Return the sum.")  # too short to teach NSP anything
    assert not is_sentence("x = {1: 2, 3: 4} + [5, 6]")
