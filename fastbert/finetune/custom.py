"""The generic tasks on a user's own data: examples from the named columns of a table.

* classification: one or two text columns and a label column of class names (strings or
  integers). The classes are those of the training data, in sorted order, unless the data
  names them itself (a datasets ClassLabel); they become the model's id2label.
* regression: one or two text columns and a numeric label.
* multiple choice: the first text column is the context, every further one a choice; the
  label is the index (from 0) of the right choice.

A table without the label column can only be predicted, not trained or scored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .examples import ChoiceExample, LabelNames, SentenceExample
from .tables import Row, Table
from .tasks import MULTIPLE_CHOICE, REGRESSION


@dataclass(frozen=True)
class Columns:
    """Where a user's table holds the texts and the label."""

    text: tuple[str, ...]
    label: str

    def check(self, table: Table, labelled: bool) -> None:
        wanted = [*self.text, *([self.label] if labelled else [])]
        missing = [name for name in wanted if name not in table.columns]
        if missing:
            raise table.error(None, f"no column(s) {', '.join(missing)}; found {', '.join(table.columns)}")


def label_names(table: Table, columns: Columns) -> LabelNames:
    """A classification task's classes: the data's own names, else the labels the training table uses."""
    if table.label_names is not None:
        return table.label_names
    columns.check(table, labelled=True)
    return LabelNames.of_values({_label_name(table, row, columns.label) for row in table.rows})


def table_examples(table: Table, kind: str, columns: Columns, labels: LabelNames | None, labelled: bool = True) -> list:
    """The examples of ``table``; ``labelled=False`` (a table to predict) lets the label column be absent."""
    if not table.rows:
        raise table.error(None, "no data rows")
    columns.check(table, labelled)
    has_labels = columns.label in table.columns
    examples = []
    for position, row in enumerate(table.rows):
        texts = [_text(table, row, name) for name in columns.text]
        label = _label(table, row, kind, columns, labels) if has_labels else None
        if labelled and label is None:
            raise table.error(row, f"no label in column {columns.label!r}")
        if kind == MULTIPLE_CHOICE:
            examples.append(ChoiceExample(texts[0], "", tuple(texts[1:]), label, str(position)))
        else:
            examples.append(SentenceExample(texts[0], texts[1] if len(texts) > 1 else None, label, str(position)))
    return examples


def _text(table: Table, row: Row, column: str) -> str:
    value = row.values.get(column)
    if not isinstance(value, str) or not value.strip():
        found = "empty text" if isinstance(value, str) or value is None else f"a {type(value).__name__}"
        raise table.error(row, f"column {column!r}: expected text, found {found}")
    return value


def _label(table: Table, row: Row, kind: str, columns: Columns, labels: LabelNames | None) -> int | float | None:
    value = row.values.get(columns.label)
    if value is None or value == "":
        return None
    if kind == REGRESSION:
        try:
            score = float(value)
        except (TypeError, ValueError):
            score = math.nan
        if isinstance(value, bool) or not math.isfinite(score):
            raise table.error(row, f"label {value!r} is not a finite number")
        return score
    if kind == MULTIPLE_CHOICE:
        choices = len(columns.text) - 1
        index = _integer(value)
        if index is None or not 0 <= index < choices:
            raise table.error(row, f"label {value!r} is not a choice index 0..{choices - 1}")
        return index
    if table.label_names is not None:  # ids of the data's own class names; -1 marks an unlabelled row
        index = _integer(value)
        if index == -1:
            return None
        if index is None or not 0 <= index < len(labels.names):
            raise table.error(row, f"label {value!r} is not a class id 0..{len(labels.names) - 1}")
        return index
    name = _label_name(table, row, columns.label)
    label = labels.id_of(name)
    if label is None:
        raise table.error(row, f"label {name!r} is not one of the training labels ({labels.describe()})")
    return label


def _label_name(table: Table, row: Row, column: str) -> str:
    value = row.values.get(column)
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value).strip() == "":
        raise table.error(row, f"column {column!r}: expected a class name or integer, found {value!r}")
    return str(value).strip()


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None
