"""Corpus files in BERT's pretraining input format: one sentence per line, a blank line between documents.

Every problem with a file (missing, empty, blank-only, not UTF-8) is an
:class:`~fastbert.errors.InputError` naming the file and, where it applies, the line.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

from ..errors import InputError, UserError

Document = list[str]


def expand_corpus_paths(patterns: list[str]) -> list[Path]:
    """Expand globs in order; a plain path is kept as given so a missing file is reported by name."""
    paths: list[Path] = []
    for pattern in patterns:
        if glob.has_magic(pattern):
            matches = sorted(glob.glob(pattern))
            if not matches:
                raise UserError(f"{pattern}: no corpus file matches this pattern")
            paths.extend(Path(match) for match in matches)
        else:
            paths.append(Path(pattern))
    return paths


def read_corpus_text(path: str | os.PathLike) -> str:
    """The whole file as text; raises InputError when it is missing, unreadable, empty or not UTF-8."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(path, "corpus file not found") from None
    except OSError as err:
        raise InputError(path, f"cannot read corpus file ({err.strerror})") from None
    if not data:
        raise InputError(path, "corpus file is empty")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise InputError(path, f"not UTF-8 (byte 0x{data[err.start]:02x}: {err.reason})", line=line) from None
    if not text.strip():
        raise InputError(path, "corpus file has only blank lines")
    return text


def check_corpus_file(path: str | os.PathLike) -> None:
    """Validate a corpus file without keeping its text."""
    read_corpus_text(path)


def split_documents(text: str) -> list[Document]:
    """Documents as lists of stripped sentences; runs of blank lines separate documents."""
    documents: list[Document] = []
    current: Document = []
    for line in text.split("\n"):
        sentence = line.strip()
        if sentence:
            current.append(sentence)
        elif current:
            documents.append(current)
            current = []
    if current:
        documents.append(current)
    return documents


def read_documents(paths: list[Path]) -> list[Document]:
    """All documents of all files in order; a document never spans two files."""
    documents: list[Document] = []
    for path in paths:
        documents.extend(split_documents(read_corpus_text(path)))
    return documents
