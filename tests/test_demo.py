"""``fastbert demo`` with a tiny budget: sized to the machine, held-out numbers, every artefact, a model transformers loads."""

from __future__ import annotations

import json
import re
import time

import pytest

from fastbert.cli import main
from fastbert.demo import NSP_STEPS, StepTiming, demo_steps, first_occurrences, is_sentence, plan_steps, prose_paragraphs
from fastbert.train.engines import LocalEngine


def test_demo_runs_end_to_end_sized_to_a_slow_machine(tmp_path, monkeypatch):
    # A machine slower than any seen: every step takes 0.15 s more. The demo must time that and
    # plan its steps to end inside the budget (by max_steps, never by the clock).
    step = LocalEngine.train_step

    def slow_step(self, batch):
        time.sleep(0.15)
        return step(self, batch)

    monkeypatch.setattr(LocalEngine, "train_step", slow_step)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--minutes", "0.3", "--batch-size", "8", "--vocab-size", "2000",
                 "--held-out-pairs", "96"]) == 0

    corpus = (out / "corpus" / "train.txt").read_text(encoding="utf-8")
    documents = [d for d in corpus.split("\n\n") if d.strip()]
    held_out = [d for d in (out / "corpus" / "held_out.txt").read_text(encoding="utf-8").split("\n\n") if d.strip()]
    assert len(documents) > 1000 and all(len(d.splitlines()) >= 2 for d in documents)  # the stdlib's ~480 and torch's
    assert len(held_out) == (len(documents) + len(held_out)) // 10
    train_sentences = {s for d in documents for s in d.splitlines()}
    assert not any(s in train_sentences for d in held_out for s in d.splitlines())  # nothing held out was trained on
    report = (out / "report.md").read_text(encoding="utf-8")
    timed = float(re.search(r"timed ([0-9.]+) s per step", report).group(1))
    planned = int(re.search(r"([0-9]+) steps fill the 0.3-minute budget", report).group(1))
    assert timed >= 0.15  # the slow step was measured
    assert "model: BERT-mini" in report and "standard library and torch" in report
    assert f"fewer than the {NSP_STEPS} in which held-out NSP learnt" in report  # the user's short budget rules, and says so
    assert planned * timed <= 18 or planned == 20  # and the steps fit the budget (20 is the floor)
    assert f"{planned} (stopped by max_steps" in report
    records = [json.loads(line) for line in (out / "train" / "metrics.jsonl").read_text().splitlines()]
    evaluations = [r for r in records if "eval" in r]
    assert [r["step"] for r in records if "loss" in r][-1] == planned
    assert len(evaluations) >= 5 and evaluations[-1]["step"] == planned
    assert "held-out" in report and "MLM loss" in report and "NSP accuracy" in report

    transformers = pytest.importorskip("transformers")
    model = transformers.BertForPreTraining.from_pretrained(out / "train" / "model")
    tokenizer = transformers.BertTokenizerFast.from_pretrained(out / "train" / "model")
    assert model.config.vocab_size == tokenizer.vocab_size == 2000

    # Rerunning into the same directory replaces the earlier demo (so `make demo` is idempotent).
    small_corpus = tmp_path / "small.txt"
    small_corpus.write_text("\n\n".join(documents[:60]) + "\n", encoding="utf-8")
    assert main(["demo", "--out", str(out), "--corpus", str(small_corpus), "--max-steps", "2", "--batch-size", "4",
                 "--vocab-size", "600"]) == 0
    assert "2 (stopped by max_steps; --max-steps)" in (out / "report.md").read_text(encoding="utf-8")
    rerun_corpus = (out / "corpus" / "train.txt").read_text(encoding="utf-8")
    assert len([d for d in rerun_corpus.split("\n\n") if d.strip()]) == 54  # the small corpus less its held-out tenth


def test_demo_refuses_a_used_output_directory(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["demo", "--out", str(tmp_path)]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err


@pytest.mark.parametrize("lr", ["0", "-1e-3", "nan"])
def test_demo_refuses_a_learning_rate_that_is_not_positive(tmp_path, capsys, lr):
    assert main(["demo", "--out", str(tmp_path / "demo"), f"--lr={lr}"]) == 2
    assert f"--lr must be a positive number, got {float(lr)}" in capsys.readouterr().err


def test_demo_refuses_a_negative_held_out_sample(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--held-out-pairs", "-5"]) == 2
    assert "--held-out-pairs must be 0 (all) or more, got -5" in capsys.readouterr().err


def test_a_repeated_sentence_stays_in_its_first_document_only():
    documents = [["A one.", "A two.", "A three."], ["B one.", "A two.", "B two."], ["A one.", "C one."], ["A three.", "B two."]]
    assert first_occurrences(documents) == [["A one.", "A two.", "A three."], ["B one.", "B two."]]


def test_docstring_prose_keeps_sentences_and_drops_code():
    doc = "Return the sum.\n\nExample:\n\n>>> add(1, 2)\n3\n\nArgs:\n    a: first\n    b: second\n\nIt works on ints and floats alike."
    assert prose_paragraphs(doc) == ["Return the sum.", "Example:", "It works on ints and floats alike."]
    assert is_sentence("It works on ints and floats alike.")
    assert not is_sentence("Return the sum.")  # too short to teach NSP anything
    assert not is_sentence("x = {1: 2, 3: 4} + [5, 6]")


def test_planned_steps_scale_with_the_measured_step_time():
    fast = plan_steps(300, StepTiming(step_seconds=0.3, eval_seconds=2.0))
    assert fast == int(0.95 * (300 - 6 * 2.0) / 0.3)
    assert plan_steps(300, StepTiming(step_seconds=1.2, eval_seconds=8.0)) == int(0.95 * (300 - 6 * 8.0) / 1.2)
    assert plan_steps(10, StepTiming(step_seconds=5.0, eval_seconds=8.0)) == 20  # never fewer than 20 steps


def test_without_a_budget_from_the_user_the_demo_trains_the_steps_nsp_needs():
    # A machine 4x slower than the fastest seen fits ~230 of mini's steps in 5 minutes: the
    # demo trains NSP_STEPS instead (longer, so that NSP learns); a faster one keeps its budget's
    # steps when they are more; an explicit --minutes is obeyed either way.
    slow = plan_steps(300, StepTiming(step_seconds=1.2, eval_seconds=8.0))
    fast = plan_steps(300, StepTiming(step_seconds=0.1, eval_seconds=1.0))
    assert slow < NSP_STEPS < fast
    assert demo_steps(slow, user_budget=False) == NSP_STEPS and demo_steps(fast, user_budget=False) == fast
    assert demo_steps(slow, user_budget=True) == slow
