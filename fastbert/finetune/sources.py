"""A run's examples by split, read and checked before any training starts.

Named tasks read their release files from ``--data-dir``; the generic tasks read the
user's files (``--train-file``/``--validation-file``) or a ``datasets`` dataset, with the
columns the command line names. Either way a bad row fails here, in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .config import FinetuneConfig
from .custom import Columns, label_names, table_examples
from .examples import LabelNames
from .tables import Table, read_table
from .tasks import CLASSIFICATION, Task


@dataclass
class TaskData:
    train: list
    devs: dict[str, list]
    """Dev examples by split name; the first split picks the best epoch."""
    label_names: LabelNames | None
    """The classes in id order (classification tasks)."""
    predict: dict[str, list] = field(default_factory=dict)
    """Examples to predict (labels optional) by the name of the submission file to write."""
    sources: dict[str, str] = field(default_factory=dict)
    """Where the train and dev splits came from (a file, or dataset:split), for errors that name them."""

    @property
    def num_labels(self) -> int:
        """Outputs per sequence of a sequence-classification head (1: regression)."""
        return len(self.label_names.names) if self.label_names is not None else 1


def load_task_data(task: Task, config: FinetuneConfig) -> TaskData:
    if not task.custom:
        paths = task.files(config.data_dir)
        sources = {name: str(path) for name, path in paths.items()}
        train = task.read(paths.pop("train"))[: config.max_train_examples]
        data = TaskData(train, {name: task.read(path) for name, path in paths.items()}, task.label_names, sources=sources)
        if config.predict_test:
            data.predict |= {name: task.read(path, labelled=False) for name, path in task.test_paths(config.data_dir).items()}
        if config.predict_file is not None:
            data.predict[Path(config.predict_file).stem] = task.read(config.predict_file, labelled=False)
        return data

    columns = Columns(config.text_columns, config.label_column)
    if config.dataset is not None:
        from .hub import load_dataset_tables  # datasets is an optional extra

        splits = {"train": config.train_split, "validation": config.validation_split}
        tables: dict[str, Table] = load_dataset_tables(
            config.dataset, config.dataset_config, splits | ({"test": "test"} if config.predict_test else {}), columns)
    else:
        tables = {"train": read_table(config.train_file), "validation": read_table(config.validation_file)}
    labels = label_names(tables["train"], columns) if task.kind == CLASSIFICATION else None
    train = table_examples(tables.pop("train"), task.kind, columns, labels)[: config.max_train_examples]
    data = TaskData(train, {"validation": table_examples(tables.pop("validation"), task.kind, columns, labels)}, labels)
    data.sources = ({name: f"{config.dataset}:{split}" for name, split in splits.items()} if config.dataset is not None
                    else {"train": str(config.train_file), "validation": str(config.validation_file)})
    if "test" in tables:
        data.predict["test"] = table_examples(tables["test"], task.kind, columns, labels, labelled=False)
    if config.predict_file is not None:
        data.predict[Path(config.predict_file).stem] = table_examples(
            read_table(config.predict_file), task.kind, columns, labels, labelled=False)
    return data

