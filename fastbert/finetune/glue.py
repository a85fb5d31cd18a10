"""Readers for CoLA's raw release and GLUE's sentence(-pair) TSV files.

The files are tab-separated with quoting off: sentences contain bare ``"`` characters that
a CSV reader would treat as quotes and use to merge rows. Fields are found by their header
names, so one layout reads a task's train, dev and test files although their columns differ
(MNLI's dev files carry five annotator labels that train lacks; test files have no label).
CoLA's raw files have no header; their layout names the columns instead.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from ..errors import InputError
from .examples import LabelNames, SentenceExample


@dataclass(frozen=True)
class TsvLayout:
    """Which named columns of a task's TSV files hold the texts, the label and the row id."""

    text_a: str
    label: str
    text_b: str | None = None
    labels: LabelNames | None = None
    """The class names in id order; None for a regression score."""
    score_range: tuple[float, float] = (0.0, 5.0)
    """Allowed scores for a regression task."""
    index: str | None = "index"
    """Column holding the row id of test files, written into submissions."""
    headerless: tuple[str, ...] | None = None
    """Column names of files without a header line (CoLA's raw release); a file whose first
    line names ``text_a`` has a header all the same (GLUE's CoLA test.tsv)."""


def read_tsv(path: str | os.PathLike, layout: TsvLayout, labelled: bool = True) -> list[SentenceExample]:
    """All rows of ``path``; a malformed row raises :class:`InputError` naming its line.

    ``labelled=False`` reads a file to predict: its label column may be missing (GLUE's test files).
    """
    with open(path, encoding="utf-8-sig", newline="") as f:  # utf-8-sig: MRPC starts with a BOM
        lines = f.read().split("\n")
    if lines and lines[-1] == "":  # the newline after the last row (some files have none)
        lines.pop()
    if not lines:
        raise InputError(path, "empty file")
    first = lines[0].rstrip("\r").split("\t")
    has_header = layout.headerless is None or layout.text_a in first
    names = first if has_header else list(layout.headerless)
    wanted = [layout.text_a, *([layout.text_b] if layout.text_b else []), *([layout.label] if labelled else [])]
    missing = [name for name in wanted if name not in names]
    if missing:
        raise InputError(path, f"the header lacks column(s) {', '.join(missing)}; found {', '.join(names)}", 1)
    column = {name: names.index(name) for name in names}
    start = 1 if has_header else 0
    return [
        _parse_row(path, number, line.rstrip("\r").split("\t"), len(names), column, layout)
        for number, line in enumerate(lines[start:], start + 1)
    ]


def _parse_row(path, line: int, fields: list[str], width: int, column: dict[str, int], layout: TsvLayout) -> SentenceExample:
    if len(fields) != width:
        raise InputError(path, f"expected {width} tab-separated columns, found {len(fields)}", line)
    text_a = _sentence(path, line, fields[column[layout.text_a]])
    text_b = None if layout.text_b is None else _sentence(path, line, fields[column[layout.text_b]])
    index = fields[column[layout.index]] if layout.index in column else None
    if layout.label not in column:
        return SentenceExample(text_a, text_b, None, index)
    raw_label = fields[column[layout.label]].strip()
    if layout.labels is not None:
        label = layout.labels.id_of(raw_label)
        if label is None:
            raise InputError(path, f"label {raw_label!r} is not one of {layout.labels.describe()}", line)
        return SentenceExample(text_a, text_b, label, index)
    low, high = layout.score_range
    try:
        score = float(raw_label)
    except ValueError:
        score = math.nan
    if not low <= score <= high:  # also rejects nan
        raise InputError(path, f"score {raw_label!r} is not a number in [{low:g}, {high:g}]", line)
    return SentenceExample(text_a, text_b, score, index)


def _sentence(path: str | os.PathLike, line: int, text: str) -> str:
    if not text.strip():
        raise InputError(path, "empty sentence", line)
    return text
