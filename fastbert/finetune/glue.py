"""Readers for CoLA's raw release and GLUE's sentence(-pair) TSV files.

The files are tab-separated with quoting off: sentences contain bare ``"`` characters that
a CSV reader would treat as quotes and use to merge rows.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from ..errors import InputError


@dataclass(frozen=True)
class SentenceExample:
    """One sentence or sentence pair with its gold label (a class id, or a float score)."""

    text_a: str
    text_b: str | None
    label: int | float


@dataclass(frozen=True)
class TsvLayout:
    """Where a task's fields sit in its TSV rows."""

    num_columns: int
    text_a: int
    label: int
    text_b: int | None = None
    header: bool = True
    labels: tuple[str, ...] | None = None
    """Label strings in class-id order; None for a regression score."""
    score_range: tuple[float, float] = (0.0, 5.0)
    """Allowed scores for a regression task."""


def read_tsv(path: str | os.PathLike, layout: TsvLayout) -> list[SentenceExample]:
    """All rows of ``path``; a malformed row raises :class:`InputError` naming its line."""
    with open(path, encoding="utf-8-sig", newline="") as f:  # utf-8-sig: MRPC starts with a BOM
        lines = f.read().split("\n")
    if lines and lines[-1] == "":  # the newline after the last row (some files have none)
        lines.pop()
    first = 1 if layout.header else 0
    if layout.header and not lines:
        raise InputError(path, "empty file; expected a header line")
    return [_parse_row(path, number, line.rstrip("\r"), layout) for number, line in enumerate(lines[first:], first + 1)]


def _parse_row(path: str | os.PathLike, line: int, row: str, layout: TsvLayout) -> SentenceExample:
    fields = row.split("\t")
    if len(fields) != layout.num_columns:
        raise InputError(path, f"expected {layout.num_columns} tab-separated columns, found {len(fields)}", line)
    text_a = _sentence(path, line, fields[layout.text_a])
    text_b = None if layout.text_b is None else _sentence(path, line, fields[layout.text_b])
    raw_label = fields[layout.label].strip()
    if layout.labels is not None:
        if raw_label not in layout.labels:
            raise InputError(path, f"label {raw_label!r} is not one of {', '.join(layout.labels)}", line)
        return SentenceExample(text_a, text_b, layout.labels.index(raw_label))
    low, high = layout.score_range
    try:
        score = float(raw_label)
    except ValueError:
        score = math.nan
    if not low <= score <= high:  # also rejects nan
        raise InputError(path, f"score {raw_label!r} is not a number in [{low:g}, {high:g}]", line)
    return SentenceExample(text_a, text_b, score)


def _sentence(path: str | os.PathLike, line: int, text: str) -> str:
    if not text.strip():
        raise InputError(path, "empty sentence", line)
    return text
