"""MNLI, QNLI, QQP and WNLI on small files in GLUE's layouts, and GLUE-format predictions.

None of these four is in ../shared/data, so the files are written here with the exact
headers of GLUE's release (download_glue_data.py): MNLI's dev files carry five annotator
labels that train lacks, test files have no label, QQP's row id is ``id``.
"""

from __future__ import annotations

import json

import pytest

from fastbert.errors import InputError
from fastbert.finetune.tasks import get_task

MNLI_PARSES = "sentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\tsentence2_parse"
MNLI_TRAIN = f"index\tpromptID\tpairID\tgenre\t{MNLI_PARSES}\tsentence1\tsentence2\tlabel1\tgold_label\n"
MNLI_DEV = f"index\tpromptID\tpairID\tgenre\t{MNLI_PARSES}\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label\n"
MNLI_TEST = f"index\tpromptID\tpairID\tgenre\t{MNLI_PARSES}\tsentence1\tsentence2\n"
NLI_PAIRS = [
    ("The cat sat on the mat.", "A cat is sitting.", "entailment"),
    ("The cat sat on the mat.", "No animal is on the mat.", "contradiction"),
    ("The cat sat on the mat.", "The cat is black.", "neutral"),
]


def _mnli_row(index, premise, hypothesis, label=None, dev=False):
    fields = [str(index), "31193", f"{index}n", "government", "( x )", "( y )", "(ROOT x)", "(ROOT y)", premise, hypothesis]
    if label is not None:
        fields += [label, label, label, label, label, label] if dev else [label, label]
    return "\t".join(fields) + "\n"


def write_mnli(folder, rows_per_label=2):
    folder.mkdir(exist_ok=True)
    pairs = NLI_PAIRS * rows_per_label
    (folder / "train.tsv").write_text(MNLI_TRAIN + "".join(_mnli_row(i, *p) for i, p in enumerate(pairs)))
    for name in ("dev_matched.tsv", "dev_mismatched.tsv"):
        (folder / name).write_text(MNLI_DEV + "".join(_mnli_row(i, *p, dev=True) for i, p in enumerate(pairs)))
    for name in ("test_matched.tsv", "test_mismatched.tsv"):
        (folder / name).write_text(MNLI_TEST + "".join(_mnli_row(100 + i, a, b) for i, (a, b, _) in enumerate(pairs)))
    return folder


def test_mnli_reads_train_dev_and_test_layouts(tmp_path):
    task = get_task("mnli")
    folder = write_mnli(tmp_path / "MNLI")
    files = task.files(folder)
    assert list(files) == ["train", "matched", "mismatched"]
    train = task.read(files["train"])
    # transformers' MNLI label order: contradiction, entailment, neutral
    assert [e.label for e in train[:3]] == [1, 0, 2]
    assert train[0].text_a == "The cat sat on the mat." and train[0].text_b == "A cat is sitting."
    assert [e.label for e in task.read(files["matched"])] == [e.label for e in train]
    test = task.read(task.test_paths(folder)["MNLI-m"], labelled=False)
    assert [e.label for e in test] == [None] * 6 and test[0].index == "100"
    with pytest.raises(InputError, match="the header lacks column.s. gold_label"):
        task.read(task.test_paths(folder)["MNLI-m"])  # a training or dev file must have labels


def test_qnli_qqp_wnli_layouts(tmp_path):
    qnli = tmp_path / "qnli.tsv"
    qnli.write_text('index\tquestion\tsentence\tlabel\n0\tWhat is "it"?\tIt is a test.\tentailment\n1\tWho?\tNobody.\tnot_entailment\n')
    examples = get_task("qnli").read(qnli)
    assert [(e.text_a, e.label) for e in examples] == [('What is "it"?', 0), ("Who?", 1)]

    qqp = tmp_path / "qqp.tsv"
    qqp.write_text("id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n7\t1\t2\tHow old?\tWhat age?\t1\n8\t3\t4\tWhy?\tWhen?\t0\n")
    examples = get_task("qqp").read(qqp)
    assert [(e.index, e.text_b, e.label) for e in examples] == [("7", "What age?", 1), ("8", "When?", 0)]
    qqp_test = tmp_path / "qqp_test.tsv"
    qqp_test.write_text("id\tquestion1\tquestion2\n0\tHow old?\tWhat age?\n")
    assert get_task("qqp").read(qqp_test, labelled=False)[0].label is None

    wnli = tmp_path / "wnli.tsv"
    wnli.write_text("index\tsentence1\tsentence2\tlabel\n0\tThe trophy did not fit.\tIt was too big.\t1\n1\tA\tB\t2\n")
    with pytest.raises(InputError) as info:
        get_task("wnli").read(wnli)
    assert str(info.value) == f"{wnli}:3: label '2' is not one of 0, 1"


def test_glue_metrics_per_task():
    assert get_task("mnli").metrics == ("accuracy",)
    assert get_task("qnli").metrics == ("accuracy",)
    assert get_task("wnli").metrics == ("accuracy",)
    assert get_task("qqp").metrics == ("f1", "accuracy")


def test_mnli_run_scores_both_dev_sets_and_writes_submissions(tiny_bert_dir, tmp_path, finetune_cli):
    folder = write_mnli(tmp_path / "MNLI")
    out = tmp_path / "out"
    results = finetune_cli(out, "--task", "mnli", "--data-dir", folder, "--init", tiny_bert_dir, "--predict-test")
    best = results["runs"][0]["best"]["eval"]
    assert set(best) == {"matched", "mismatched"} and set(best["matched"]) == {"accuracy"}
    for name in ("MNLI-m", "MNLI-mm"):
        lines = (out / "predictions" / f"{name}.tsv").read_text().splitlines()
        assert lines[0] == "index\tprediction" and len(lines) == 7
        indices, labels = zip(*(line.split("\t") for line in lines[1:]))
        assert indices == tuple(str(100 + i) for i in range(6))
        assert set(labels) <= {"contradiction", "entailment", "neutral"}
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["id2label"] == {"0": "contradiction", "1": "entailment", "2": "neutral"}


def test_qqp_run_reports_f1_and_accuracy(tiny_bert_dir, tmp_path, finetune_cli):
    folder = tmp_path / "QQP"
    folder.mkdir()
    rows = "".join(f"{i}\t{2 * i}\t{2 * i + 1}\tHow do I learn {w}?\tWhat is the way to learn {w}?\t{i % 2}\n"
                   for i, w in enumerate(["python", "french", "piano", "chess", "go", "cooking"]))
    for name in ("train.tsv", "dev.tsv"):
        (folder / name).write_text("id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n" + rows)
    results = finetune_cli(tmp_path / "out", "--task", "qqp", "--data-dir", folder, "--init", tiny_bert_dir)
    dev = results["runs"][0]["best"]["eval"]["dev"]
    assert set(dev) == {"f1", "accuracy"} and 0 <= dev["f1"] <= 1 and 0 <= dev["accuracy"] <= 1
