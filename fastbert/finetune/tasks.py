"""The fine-tuning tasks: where their files are, how to read them, what head and metrics they use."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from .glue import TsvLayout, read_tsv
from .squad import read_squad
from .swag import NUM_CHOICES, read_swag

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
    train_file: str
    dev_files: tuple[tuple[str, str], ...]
    """(split name, file) pairs; the first split's first metric picks the best epoch."""
    metrics: tuple[str, ...]
    layout: TsvLayout | None = None
    """Column layout of the TSV tasks."""
    version_2: bool = False
    """SQuAD v2: questions may have no answer."""

    @property
    def num_labels(self) -> int:
        """Outputs of the task head per sequence."""
        if self.kind == CLASSIFICATION:
            return len(self.layout.labels)
        return {REGRESSION: 1, SPAN: 2, MULTIPLE_CHOICE: 1}[self.kind]

    @property
    def num_choices(self) -> int:
        return NUM_CHOICES if self.kind == MULTIPLE_CHOICE else 1

    def read(self, path: str | os.PathLike) -> list:
        """The examples of one file of this task."""
        if self.layout is not None:
            return read_tsv(path, self.layout)
        return read_squad(path) if self.kind == SPAN else read_swag(path)

    def files(self, data_dir: str | os.PathLike) -> dict[str, Path]:
        """The task's files in ``data_dir`` by split name ("train" first); raises if one is missing."""
        names = {"train": self.train_file, **dict(self.dev_files)}
        paths = {split: Path(data_dir) / name for split, name in names.items()}
        missing = [str(p) for p in paths.values() if not p.is_file()]
        if missing:
            raise UserError(
                f"{self.name}: missing {', '.join(missing)} (fetch it with `fastbert data download`)"
            )
        return paths


_BINARY = ("0", "1")
_GLUE_DEV = (("dev", "dev.tsv"),)

TASKS: dict[str, Task] = {
    task.name: task
    for task in [
        Task(
            "cola", CLASSIFICATION, "in_domain_train.tsv",
            (("in_domain", "in_domain_dev.tsv"), ("out_of_domain", "out_of_domain_dev.tsv")),
            ("mcc", "accuracy"),
            TsvLayout(num_columns=4, text_a=3, label=1, header=False, labels=_BINARY),
        ),
        Task("sst2", CLASSIFICATION, "train.tsv", _GLUE_DEV, ("accuracy",),
             TsvLayout(num_columns=2, text_a=0, label=1, labels=_BINARY)),
        Task("mrpc", CLASSIFICATION, "train.tsv", _GLUE_DEV, ("f1", "accuracy"),
             TsvLayout(num_columns=5, text_a=3, text_b=4, label=0, labels=_BINARY)),
        Task("rte", CLASSIFICATION, "train.tsv", _GLUE_DEV, ("accuracy",),
             TsvLayout(num_columns=4, text_a=1, text_b=2, label=3, labels=("entailment", "not_entailment"))),
        Task("stsb", REGRESSION, "train.tsv", _GLUE_DEV, ("pearson", "spearman"),
             TsvLayout(num_columns=10, text_a=7, text_b=8, label=9)),
        Task("squad", SPAN, "train-v1.1.json", (("dev", "dev-v1.1.json"),), ("exact_match", "f1")),
        Task("squad_v2", SPAN, "train-v2.0.json", (("dev", "dev-v2.0.json"),), ("exact_match", "f1"), version_2=True),
        Task("swag", MULTIPLE_CHOICE, "train.csv", (("dev", "val.csv"),), ("accuracy",)),
    ]
}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise UserError(f"unknown task {name!r}; expected one of {', '.join(TASKS)}") from None
