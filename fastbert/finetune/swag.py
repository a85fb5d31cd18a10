"""SWAG (multiple choice): the reader of the official CSV release.

Columns of the release: (an unnamed index,) video-id, fold-ind, startphrase, sent1, sent2,
gold-source, ending0..ending3, label. Each choice becomes ``[CLS] sent1 [SEP] sent2 ending [SEP]``.
"""

from __future__ import annotations

import csv
import os

from ..errors import InputError
from .examples import ChoiceExample

NUM_CHOICES = 4
REQUIRED_COLUMNS = ("sent1", "sent2", *(f"ending{i}" for i in range(NUM_CHOICES)), "label")


def read_swag(path: str | os.PathLike) -> list[ChoiceExample]:
    """All rows of a SWAG CSV; a malformed row raises :class:`InputError` naming its line."""
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(path, f"header lacks column(s) {', '.join(missing)}", 1)
        columns = len(reader.fieldnames)
        return [_parse_row(path, reader.line_num, row, columns) for row in reader]


def _parse_row(path: str | os.PathLike, line: int, row: dict[str, str | None], columns: int) -> ChoiceExample:
    if None in row or any(row[c] is None for c in REQUIRED_COLUMNS):  # DictReader's marks for extra/missing fields
        raise InputError(path, f"expected {columns} comma-separated columns", line)
    if not row["sent1"].strip():
        raise InputError(path, "empty sent1", line)
    endings = tuple(row[f"ending{i}"] for i in range(NUM_CHOICES))
    if not all(e.strip() for e in endings):
        raise InputError(path, "empty ending", line)
    label = row["label"].strip()
    if label not in {str(i) for i in range(NUM_CHOICES)}:
        raise InputError(path, f"label {label!r} is not one of 0..{NUM_CHOICES - 1}", line)
    return ChoiceExample(row["sent1"], row["sent2"], endings, int(label))
