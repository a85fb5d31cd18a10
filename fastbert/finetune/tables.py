"""A user's data file as rows of named values: CSV, TSV, JSON lines or parquet.

CSV follows the usual quoting (``"a, b"``, ``""`` for a quote). TSV is split on tabs with
quoting off, as GLUE's files are, so bare ``"`` characters stay text. JSON lines hold one
object per line. Parquet goes through pyarrow (the ``parquet`` extra). Empty lines are
skipped. A bad line is one :class:`InputError` naming the file and line (parquet: the row).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError, UserError
from .examples import LabelNames

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".parquet": "parquet"}


@dataclass(frozen=True)
class Row:
    values: dict[str, Any]
    number: int
    """Line in a text file, or row from 1 (parquet, datasets)."""


@dataclass(frozen=True)
class Table:
    """Rows of one file or dataset split, each able to say where it came from."""

    source: str
    """The file, or ``NAME[split]`` for a dataset."""
    columns: tuple[str, ...]
    rows: list[Row]
    counts_lines: bool = True
    """Whether Row.number is a line of a text file (else a row number)."""
    label_names: LabelNames | None = None
    """Class names the data's own schema gives its label ids (a datasets ClassLabel)."""

    def error(self, row: Row | None, message: str) -> InputError:
        if row is None:
            return InputError(self.source, message, 1 if self.counts_lines else None)
        if self.counts_lines:
            return InputError(self.source, message, row.number)
        return InputError(self.source, f"row {row.number}: {message}")


def file_format(path: str | os.PathLike) -> str:
    """The format of a data file by its extension; anything else is a one-line error."""
    try:
        return FORMATS[Path(path).suffix.lower()]
    except KeyError:
        raise UserError(f"{path}: unknown data file type; expected one of {', '.join(FORMATS)}") from None


def read_table(path: str | os.PathLike) -> Table:
    """Every row of a CSV, TSV, JSON lines or parquet file."""
    kind = file_format(path)
    if not Path(path).is_file():
        raise UserError(f"{path}: no such file")
    return {"csv": _read_delimited, "tsv": _read_delimited, "jsonl": _read_jsonl, "parquet": _read_parquet}[kind](Path(path))


def _read_delimited(path: Path) -> Table:
    tsv = path.suffix.lower() == ".tsv"
    name = "tab" if tsv else "comma"
    with open(path, encoding="utf-8-sig", newline="") as f:
        try:
            if tsv:
                numbered = [(n, line.rstrip("\r\n").split("\t")) for n, line in _numbered_lines(path, f) if line.strip("\r\n")]
            else:
                reader = csv.reader(f)
                numbered = [(reader.line_num, fields) for fields in reader if fields]
        except UnicodeDecodeError as err:
            raise InputError(path, f"not UTF-8 ({err.reason})") from None
        except csv.Error as err:
            raise InputError(path, f"not valid CSV ({err})", reader.line_num) from None
    if not numbered:
        raise InputError(path, "empty file; expected a header line")
    (_, header), *body = numbered
    rows = []
    for number, fields in body:
        if len(fields) != len(header):
            raise InputError(path, f"expected {len(header)} {name}-separated columns, found {len(fields)}", number)
        rows.append(Row(dict(zip(header, fields)), number))
    return Table(str(path), tuple(header), rows)


def _read_jsonl(path: Path) -> Table:
    rows, columns = [], {}
    with open(path, encoding="utf-8") as f:
        for number, line in _numbered_lines(path, f):
            if not line.strip():
                continue
            try:
                values = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(path, f"not valid JSON ({err.msg})", number) from None
            if not isinstance(values, dict):
                raise InputError(path, f"expected a JSON object, found {type(values).__name__}", number)
            columns.update(dict.fromkeys(values))
            rows.append(Row(values, number))
    return Table(str(path), tuple(columns), rows)


def _numbered_lines(path: Path, f):
    number = 0
    try:
        for number, line in enumerate(f, 1):
            yield number, line
    except UnicodeDecodeError as err:
        raise InputError(path, f"not UTF-8 ({err.reason})", number + 1) from None


def _read_parquet(path: Path) -> Table:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise UserError(f"{path}: reading parquet needs pyarrow: pip install 'fastbert[parquet]'") from None
    try:
        data = pyarrow.parquet.read_table(path)
    except (pyarrow.ArrowException, OSError) as err:
        raise InputError(path, f"not a readable parquet file ({err})") from None
    rows = [Row(values, number) for number, values in enumerate(data.to_pylist(), 1)]
    return Table(str(path), tuple(data.column_names), rows, counts_lines=False)
