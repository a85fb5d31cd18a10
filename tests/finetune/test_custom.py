"""The generic tasks on a user's own files: every format, label names, bad rows, end to end."""

from __future__ import annotations

import csv
import json
import sys

import pytest

from fastbert.errors import InputError, UserError
from fastbert.finetune.config import FinetuneConfig
from fastbert.finetune.custom import Columns, label_names, table_examples
from fastbert.finetune.examples import LabelNames
from fastbert.finetune.tables import read_table
from fastbert.finetune.tasks import CLASSIFICATION, MULTIPLE_CHOICE, REGRESSION

ROWS = [
    {"premise": 'He said "yes", twice.', "hypothesis": "He agreed.", "verdict": "entails"},
    {"premise": "It rained all day.", "hypothesis": "The ground is dry.", "verdict": "contradicts"},
    {"premise": "She plays chess.", "hypothesis": "She plays a game.", "verdict": "entails"},
    {"premise": "The shop is closed.", "hypothesis": "It is Sunday.", "verdict": "neutral"},
]
PAIR = Columns(("premise", "hypothesis"), "verdict")


def write_rows(path, rows):
    """``rows`` in the file format of ``path``'s extension, as pandas / the json module / pyarrow write it."""
    columns = list(rows[0])
    if path.suffix == ".csv":
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, columns)
            writer.writeheader()
            writer.writerows(rows)
    elif path.suffix == ".tsv":
        path.write_text("\n".join("\t".join(map(str, r)) for r in [columns, *[r.values() for r in rows]]) + "\n")
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        pyarrow = pytest.importorskip("pyarrow")
        import pyarrow.parquet

        pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_every_format_gives_the_same_examples(tmp_path, suffix):
    table = read_table(write_rows(tmp_path / f"train{suffix}", ROWS))
    labels = label_names(table, PAIR)
    assert labels == LabelNames(("contradicts", "entails", "neutral"))
    examples = table_examples(table, CLASSIFICATION, PAIR, labels)
    assert [(e.text_a, e.text_b, e.label) for e in examples] == [
        (r["premise"], r["hypothesis"], labels.id_of(r["verdict"])) for r in ROWS
    ]


def test_integer_labels_sort_as_numbers(tmp_path):
    rows = [{"text": f"t{i}", "label": value} for i, value in enumerate([10, 2, 1, 2])]
    table = read_table(write_rows(tmp_path / "train.jsonl", rows))
    assert label_names(table, Columns(("text",), "label")).names == ("1", "2", "10")


def test_regression_and_multiple_choice_columns(tmp_path):
    scores = read_table(write_rows(tmp_path / "s.csv", [{"a": "x", "b": "y", "score": "3.25"}]))
    (example,) = table_examples(scores, REGRESSION, Columns(("a", "b"), "score"), None)
    assert example.label == 3.25
    choices = read_table(write_rows(tmp_path / "c.jsonl", [{"q": "Sky?", "c0": "blue", "c1": "green", "c2": "red", "answer": 0}]))
    (example,) = table_examples(choices, MULTIPLE_CHOICE, Columns(("q", "c0", "c1", "c2"), "answer"), None)
    assert (example.context, example.endings, example.label) == ("Sky?", ("blue", "green", "red"), 0)


def test_a_file_to_predict_may_lack_labels(tmp_path):
    table = read_table(write_rows(tmp_path / "test.csv", [{"premise": "A.", "hypothesis": "B."}]))
    (example,) = table_examples(table, CLASSIFICATION, PAIR, LabelNames(("x", "y")), labelled=False)
    assert example.label is None and example.index == "0"
    with pytest.raises(InputError, match="no column.s. verdict"):
        table_examples(table, CLASSIFICATION, PAIR, LabelNames(("x", "y")))


BAD_FILES = [
    ("train.csv", 'premise,hypothesis,verdict\nA,B,entails\n"C, D",entails\n', 3, "expected 3 comma-separated columns, found 2"),
    ("train.tsv", "premise\thypothesis\tverdict\nA\tB\tentails\n\nC\t \tentails\n", 4, "column 'hypothesis': expected text, found empty text"),
    ("train.jsonl", '{"premise": "A", "hypothesis": "B", "verdict": "x"}\n{"premise": "A", "hypothesis": "B"\n', 2, "not valid JSON"),
    ("train.jsonl", '{"premise": "A", "hypothesis": 7, "verdict": "x"}\n', 1, "column 'hypothesis': expected text, found a int"),
    ("train.jsonl", '["A", "B", "x"]\n', 1, "expected a JSON object, found list"),
    ("train.csv", "premise,hypothesis\nA,B\n", 1, "no column(s) verdict; found premise, hypothesis"),
    ("train.csv", "premise,hypothesis,verdict\nA,B,\n", 2, "expected a class name or integer, found ''"),
]


@pytest.mark.parametrize(("name", "text", "line", "message"), BAD_FILES)
def test_bad_rows_name_file_and_line(tmp_path, name, text, line, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InputError) as info:
        table = read_table(path)
        table_examples(table, CLASSIFICATION, PAIR, label_names(table, PAIR))
    assert str(info.value).startswith(f"{path}:{line}: ") and message in str(info.value)


def test_bad_values_per_kind(tmp_path):
    validation = read_table(write_rows(tmp_path / "dev.csv", [ROWS[0], {**ROWS[1], "verdict": "maybe"}]))
    with pytest.raises(InputError) as info:
        table_examples(validation, CLASSIFICATION, PAIR, LabelNames(("contradicts", "entails", "neutral")))
    assert str(info.value) == f"{tmp_path / 'dev.csv'}:3: label 'maybe' is not one of the training labels (contradicts, entails, neutral)"
    scores = read_table(write_rows(tmp_path / "s.jsonl", [{"a": "x", "score": "high"}]))
    with pytest.raises(InputError, match=r"s\.jsonl:1: label 'high' is not a finite number"):
        table_examples(scores, REGRESSION, Columns(("a",), "score"), None)
    choices = read_table(write_rows(tmp_path / "c.csv", [{"q": "Sky?", "c0": "blue", "c1": "red", "answer": "2"}]))
    with pytest.raises(InputError, match=r"c\.csv:2: label '2' is not a choice index 0..1"):
        table_examples(choices, MULTIPLE_CHOICE, Columns(("q", "c0", "c1"), "answer"), None)


def test_parquet_rows_are_numbered_and_need_pyarrow(tmp_path, monkeypatch):
    path = write_rows(tmp_path / "train.parquet", [ROWS[0], {**ROWS[1], "premise": ""}])
    with pytest.raises(InputError) as info:
        table_examples(read_table(path), CLASSIFICATION, PAIR, LabelNames(("contradicts", "entails")))
    assert str(info.value) == f"{path}: row 2: column 'premise': expected text, found empty text"
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if the parquet extra were not installed
    with pytest.raises(UserError) as info:
        read_table(path)
    assert str(info.value) == f"{path}: reading parquet needs pyarrow: pip install 'fastbert[parquet]'"


def test_unknown_extension_and_missing_file(tmp_path):
    with pytest.raises(UserError, match=r"data\.xlsx: unknown data file type; expected one of .csv, .tsv, .jsonl, .parquet"):
        read_table(tmp_path / "data.xlsx")
    with pytest.raises(UserError, match="no such file"):
        read_table(tmp_path / "absent.csv")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(task="classification", train_file="t.csv"), "needs --train-file and --validation-file"),
        (dict(task="classification", dataset="d", train_file="t.csv", validation_file="v.csv"), "either --dataset or --train-file"),
        (dict(task="regression", train_file="t.csv", validation_file="v.csv", text_columns=("a", "b", "c")), "one or two text columns"),
        (dict(task="multiple-choice", dataset="d", text_columns=("q", "a")), "the context column, then two or more"),
        (dict(task="classification", data_dir="d", dataset="x", text_columns=("a",)), "--data-dir is for the named tasks"),
        (dict(task="mnli", data_dir="d", text_columns=("a",)), "--text-columns: for the classification"),
        (dict(task="mnli"), "--task mnli needs --data-dir"),
        (dict(task="squad", data_dir="d", predict_test=True), "not squad"),
        (dict(task="cola", data_dir="d", grad_accum_steps=0), "--grad-accum-steps must be an integer >= 1"),
    ],
)
def test_settings_are_checked_before_anything_loads(settings, message):
    with pytest.raises(UserError, match=message):
        FinetuneConfig(init="m", out="o", **settings)


def test_classification_from_csv_end_to_end(tiny_bert_dir, tmp_path, finetune_cli):
    train = write_rows(tmp_path / "train.csv", ROWS * 3)
    test = write_rows(tmp_path / "unlabelled.csv", [{"premise": r["premise"], "hypothesis": r["hypothesis"]} for r in ROWS])
    out = tmp_path / "out"
    results = finetune_cli(out, "--task", "classification", "--train-file", train, "--validation-file", train,
                           "--predict-file", test, "--text-columns", "premise,hypothesis", "--label-column", "verdict",
                           "--init", tiny_bert_dir)
    assert set(results["runs"][0]["best"]["eval"]["validation"]) == {"accuracy", "macro_f1"}
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["id2label"] == {"0": "contradicts", "1": "entails", "2": "neutral"}
    assert config["label2id"] == {"contradicts": 0, "entails": 1, "neutral": 2}
    lines = (out / "predictions" / "unlabelled.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction" and [line.split("\t")[0] for line in lines[1:]] == ["0", "1", "2", "3"]
    assert {line.split("\t")[1] for line in lines[1:]} <= {"contradicts", "entails", "neutral"}

    transformers = pytest.importorskip("transformers")
    classify = transformers.pipeline("text-classification", model=str(out / "model"), device="cpu")
    assert classify({"text": "It rained.", "text_pair": "It is wet."})["label"] in {"contradicts", "entails", "neutral"}


def test_regression_and_multiple_choice_end_to_end(tiny_bert_dir, tmp_path, finetune_cli):
    scores = write_rows(tmp_path / "scores.jsonl", [{"a": f"sentence {i}", "b": f"other {i}", "y": i / 2} for i in range(8)])
    results = finetune_cli(tmp_path / "reg", "--task", "regression", "--train-file", scores, "--validation-file", scores,
                           "--text-columns", "a,b", "--label-column", "y", "--init", tiny_bert_dir)
    assert set(results["runs"][0]["best"]["eval"]["validation"]) == {"pearson", "spearman"}
    rows = [{"q": f"Question {i}?", "c0": "yes", "c1": "no", "c2": "maybe", "gold": str(i % 3)} for i in range(8)]
    choices = write_rows(tmp_path / "choices.tsv", rows)
    results = finetune_cli(tmp_path / "mc", "--task", "multiple-choice", "--train-file", choices, "--validation-file", choices,
                           "--predict-file", choices, "--text-columns", "q,c0,c1,c2", "--label-column", "gold", "--init", tiny_bert_dir)
    assert set(results["runs"][0]["best"]["eval"]["validation"]) == {"accuracy"}
    predicted = [line.split("\t")[1] for line in (tmp_path / "mc" / "predictions" / "choices.tsv").read_text().splitlines()[1:]]
    assert len(predicted) == 8 and set(predicted) <= {"0", "1", "2"}
