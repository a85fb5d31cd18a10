"""SWAG (multiple choice): the official CSV release and its four-way input sequences.

Columns of the release: (an unnamed index,) video-id, fold-ind, startphrase, sent1, sent2,
gold-source, ending0..ending3, label. Each choice becomes ``[CLS] sent1 [SEP] sent2 ending [SEP]``.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass

from ..errors import InputError
from .encoding import EncodedSequence, PairEncoder

NUM_CHOICES = 4
REQUIRED_COLUMNS = ("sent1", "sent2", *(f"ending{i}" for i in range(NUM_CHOICES)), "label")


@dataclass(frozen=True)
class SwagExample:
    context: str
    """sent1: the first sentence."""
    start: str
    """sent2: the beginning of the second sentence, which each ending completes."""
    endings: tuple[str, ...]
    label: int


def read_swag(path: str | os.PathLike) -> list[SwagExample]:
    """All rows of a SWAG CSV; a malformed row raises :class:`InputError` naming its line."""
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(path, f"header lacks column(s) {', '.join(missing)}", 1)
        columns = len(reader.fieldnames)
        return [_parse_row(path, reader.line_num, row, columns) for row in reader]


def _parse_row(path: str | os.PathLike, line: int, row: dict[str, str | None], columns: int) -> SwagExample:
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
    return SwagExample(row["sent1"], row["sent2"], endings, int(label))


def build_swag_features(examples: list[SwagExample], encoder: PairEncoder, max_seq_len: int) -> list[list[EncodedSequence]]:
    """Per example, its four choice sequences (in ending order)."""
    firsts = [e.context for e in examples for _ in e.endings]
    seconds = [f"{e.start} {ending}".strip() for e in examples for ending in e.endings]
    flat = encoder.encode(firsts, seconds, max_seq_len)
    return [flat[i : i + NUM_CHOICES] for i in range(0, len(flat), NUM_CHOICES)]
