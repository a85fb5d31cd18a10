"""The fine-tuning tasks: where their files are, how to read them, what head and metrics they use.

GLUE's tasks, SQuAD and SWAG read the files of their public releases from ``--data-dir``.
The generic tasks (``classification``, ``regression``, ``multiple-choice``) read a user's
own files or a ``datasets`` dataset, with the columns given on the command line
(:mod:`.custom`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from .examples import LabelNames
from .glue import TsvLayout, read_tsv
from .squad import read_squad
from .swag import read_swag

CLASSIFICATION = "classification"
REGRESSION = "regression"
SPAN = "span"
MULTIPLE_CHOICE = "multiple_choice"


@dataclass(frozen=True)
class Task:
    """One fine-tuning task; file names are relative to the task's data directory."""

    name: str
    kind: str
    """classification, regression, span (extractive QA) or multiple_choice."""
    metrics: tuple[str, ...]
    """The dev metrics; the first one picks the best epoch."""
    train_file: str | None = None
    """None: a generic task, whose data the user names (files or a dataset)."""
    dev_files: tuple[tuple[str, str], ...] = ()
    """(split name, file) pairs; the first split's first metric picks the best epoch."""
    test_files: tuple[tuple[str, str], ...] = ()
    """(submission name, file) pairs of the unlabelled test split, as GLUE's leaderboard names them."""
    layout: TsvLayout | None = None
    """Column layout of the TSV tasks."""
    version_2: bool = False
    """SQuAD v2: questions may have no answer."""

    @property
    def custom(self) -> bool:
        """Whether the user names the data (--train-file/--validation-file or --dataset)."""
        return self.train_file is None

    @property
    def label_names(self) -> LabelNames | None:
        """The classes of a GLUE classification task (a generic task's come from its data)."""
        return self.layout.labels if self.layout is not None else None

    def read(self, path: str | os.PathLike, labelled: bool = True) -> list:
        """The examples of one file of this task; ``labelled=False`` reads a file to predict (labels optional)."""
        if self.layout is not None:
            return read_tsv(path, self.layout, labelled)
        return read_squad(path) if self.kind == SPAN else read_swag(path)

    def files(self, data_dir: str | os.PathLike) -> dict[str, Path]:
        """The task's files in ``data_dir`` by split name ("train" first); raises if one is missing."""
        return self._existing(data_dir, {"train": self.train_file, **dict(self.dev_files)})

    def test_paths(self, data_dir: str | os.PathLike) -> dict[str, Path]:
        """The test files by submission name; raises if one is missing."""
        if not self.test_files:
            raise UserError(f"{self.name} has no test split in GLUE's submission format; use --predict-file")
        return self._existing(data_dir, dict(self.test_files))

    def _existing(self, data_dir: str | os.PathLike, names: dict[str, str]) -> dict[str, Path]:
        paths = {split: Path(data_dir) / name for split, name in names.items()}
        missing = [str(p) for p in paths.values() if not p.is_file()]
        if missing:
            raise UserError(f"{self.name}: missing {', '.join(missing)} (fetch it with `fastbert data download`)")
        return paths


def _glue(name, train, devs, tests, metrics, layout, kind=CLASSIFICATION) -> Task:
    return Task(name, kind, metrics, train, devs, tests, layout)


_BINARY = LabelNames(("0", "1"))
_NLI = LabelNames(("entailment", "not_entailment"))
_DEV = (("dev", "dev.tsv"),)

TASKS: dict[str, Task] = {
    task.name: task
    for task in [
        _glue("cola", "in_domain_train.tsv", (("in_domain", "in_domain_dev.tsv"), ("out_of_domain", "out_of_domain_dev.tsv")),
              (("CoLA", "test.tsv"),), ("mcc", "accuracy"),
              TsvLayout("sentence", "label", labels=_BINARY, headerless=("source", "label", "annotation", "sentence"))),
        _glue("sst2", "train.tsv", _DEV, (("SST-2", "test.tsv"),), ("accuracy",), TsvLayout("sentence", "label", labels=_BINARY)),
        _glue("mrpc", "train.tsv", _DEV, (("MRPC", "test.tsv"),), ("f1", "accuracy"),
              TsvLayout("#1 String", "Quality", "#2 String", labels=_BINARY)),
        _glue("qqp", "train.tsv", _DEV, (("QQP", "test.tsv"),), ("f1", "accuracy"),
              TsvLayout("question1", "is_duplicate", "question2", labels=_BINARY, index="id")),
        _glue("stsb", "train.tsv", _DEV, (("STS-B", "test.tsv"),), ("pearson", "spearman"),
              TsvLayout("sentence1", "score", "sentence2"), kind=REGRESSION),
        _glue("mnli", "train.tsv", (("matched", "dev_matched.tsv"), ("mismatched", "dev_mismatched.tsv")),
              (("MNLI-m", "test_matched.tsv"), ("MNLI-mm", "test_mismatched.tsv")), ("accuracy",),
              TsvLayout("sentence1", "gold_label", "sentence2", labels=LabelNames(("contradiction", "entailment", "neutral")))),
        _glue("qnli", "train.tsv", _DEV, (("QNLI", "test.tsv"),), ("accuracy",), TsvLayout("question", "label", "sentence", labels=_NLI)),
        _glue("rte", "train.tsv", _DEV, (("RTE", "test.tsv"),), ("accuracy",), TsvLayout("sentence1", "label", "sentence2", labels=_NLI)),
        _glue("wnli", "train.tsv", _DEV, (("WNLI", "test.tsv"),), ("accuracy",), TsvLayout("sentence1", "label", "sentence2", labels=_BINARY)),
        Task("squad", SPAN, ("exact_match", "f1"), "train-v1.1.json", (("dev", "dev-v1.1.json"),)),
        Task("squad_v2", SPAN, ("exact_match", "f1"), "train-v2.0.json", (("dev", "dev-v2.0.json"),), version_2=True),
        Task("swag", MULTIPLE_CHOICE, ("accuracy",), "train.csv", (("dev", "val.csv"),)),
        Task("classification", CLASSIFICATION, ("accuracy", "macro_f1")),
        Task("regression", REGRESSION, ("pearson", "spearman")),
        Task("multiple-choice", MULTIPLE_CHOICE, ("accuracy",)),
    ]
}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise UserError(f"unknown task {name!r}; expected one of {', '.join(TASKS)}") from None
