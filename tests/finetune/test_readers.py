"""Task readers on the shared GLUE/CoLA copies and on hand-made bad files."""

from __future__ import annotations

import pytest

from fastbert.errors import InputError, UserError
from fastbert.finetune.swag import read_swag
from fastbert.finetune.tasks import TASKS, get_task

# Row counts from shared/data/README.md.
EXPECTED_ROWS = {
    ("cola", "cola"): {"train": 8551, "in_domain": 527, "out_of_domain": 516},
    ("sst2", "glue/SST-2"): {"train": 67349, "dev": 872},
    ("mrpc", "glue/MRPC"): {"train": 3668, "dev": 408},
    ("rte", "glue/RTE"): {"train": 2490, "dev": 277},
    ("stsb", "glue/STS-B"): {"train": 5749, "dev": 1500},
}


@pytest.mark.parametrize(("task_name", "folder"), list(EXPECTED_ROWS))
def test_shared_data_row_counts(shared_data, task_name, folder):
    task = get_task(task_name)
    counts = {split: len(task.read(path)) for split, path in task.files(shared_data / folder).items()}
    assert counts == EXPECTED_ROWS[(task_name, folder)]


def test_label_distributions_match_readme(shared_data):
    cola = get_task("cola").read(shared_data / "cola" / "in_domain_train.tsv")
    assert sum(e.label for e in cola) == 6023
    assert all(e.text_b is None for e in cola)
    rte = get_task("rte").read(shared_data / "glue" / "RTE" / "train.tsv")
    assert sum(e.label == 0 for e in rte) == 1249  # "entailment" is class 0, as in transformers
    mrpc = get_task("mrpc").read(shared_data / "glue" / "MRPC" / "train.tsv")
    assert sum(e.label for e in mrpc) == 2474
    stsb = get_task("stsb").read(shared_data / "glue" / "STS-B" / "train.tsv")
    assert abs(sum(e.label for e in stsb) / len(stsb) - 2.701) < 5e-4
    assert stsb[0].text_a and stsb[0].text_b


def test_bare_quotes_do_not_merge_rows(shared_data):
    examples = get_task("mrpc").read(shared_data / "glue" / "MRPC" / "dev.tsv")
    assert examples[0].text_b.startswith('" The foodservice')


STSB_HEADER = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
BAD_ROWS = [
    ("cola", "gj04\t1\t\tFine sentence.\ngj04\t1\tOnly three columns\n", 2, "expected 4 tab-separated columns, found 3"),
    ("cola", "gj04\t2\t\tA sentence.\n", 1, "label '2' is not one of 0, 1"),
    ("cola", "gj04\t1\t\tFine.\ngj04\t0\t*\t   \n", 2, "empty sentence"),
    ("rte", "index\tsentence1\tsentence2\tlabel\n0\tA.\tB.\tcontradiction\n", 2, "label 'contradiction'"),
    ("stsb", STSB_HEADER + "0\tg\tf\ty\to\tn\tn\tA.\tB.\tabc\n", 2, "score 'abc' is not a number"),
    ("stsb", STSB_HEADER + "0\tg\tf\ty\to\tn\tn\tA.\tB.\t7.5\n", 2, "not a number in [0, 5]"),
    ("stsb", "index\tsentence1\tsentence2\n", 1, "the header lacks column(s) score"),
]


@pytest.mark.parametrize(("task_name", "text", "line", "message"), BAD_ROWS)
def test_bad_rows_name_file_and_line(tmp_path, task_name, text, line, message):
    path = tmp_path / "bad.tsv"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        get_task(task_name).read(path)
    assert str(info.value).startswith(f"{path}:{line}: ")
    assert message in str(info.value)


def test_swag_reader(tmp_path, swag_header):
    path = tmp_path / "val.csv"
    path.write_text(
        swag_header
        + '0,v1,5,"She opens the door, then","She opens the door, then",she,gold,walks in.,flies.,"sings, loudly.",melts.,0\n'
        + "1,v2,6,He sits. He,He sits.,He,gen,eats.,runs.,jumps.,reads.,3\n"
    )
    examples = read_swag(path)
    assert [e.label for e in examples] == [0, 3]
    assert examples[0].context == "She opens the door, then"
    assert examples[0].endings == ("walks in.", "flies.", "sings, loudly.", "melts.")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("1,v2,6,x,He sits.,He,gen,eats.,runs.,jumps.,reads.,4\n", "label '4'"),
        ("1,v2,6,x,He sits.,He,gen,eats.,runs.,jumps.\n", "expected 12 comma-separated columns"),
        ("1,v2,6,x,He sits.,He,gen,eats.,,jumps.,reads.,1\n", "empty ending"),
    ],
)
def test_swag_bad_rows(tmp_path, row, message, swag_header):
    path = tmp_path / "train.csv"
    path.write_text(swag_header + row)
    with pytest.raises(InputError, match=message) as info:
        read_swag(path)
    assert str(info.value).startswith(f"{path}:2: ")


def test_every_named_task_reports_its_files(tmp_path):
    named = [task for task in TASKS.values() if not task.custom]
    assert {t.name for t in TASKS.values() if t.custom} == {"classification", "regression", "multiple-choice"}
    for task in named:
        with pytest.raises(UserError, match="missing"):
            task.files(tmp_path)
        if task.layout is not None:
            with pytest.raises(UserError, match="missing .*test"):
                task.test_paths(tmp_path)
