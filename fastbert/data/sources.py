"""Where pretraining documents come from: BERT's format, plain text, jsonl, parquet, HuggingFace datasets.

Every reader yields one document's text at a time, so memory holds a read buffer and one
document, never a corpus. Text files may be compressed (``.gz``, ``.bz2``, ``.zst``; the
last needs the ``zstd`` extra). Turning a document's text into sentences is
:func:`split_sentences`'s job, done in the tokenizing workers because the splitter is
the expensive part:

- ``lines``: every non-blank line is a sentence (BERT's format);
- ``sentencex``: the `sentencex <https://pypi.org/project/sentencex/>`_ splitter (the ``text``
  extra): maintained, rule-based with a compiled core (about 13 MB/s on one core here,
  against pysbd's few hundred kB/s and no release since 2021), ~300 languages, no model
  download.

Every problem with an input is an :class:`~fastbert.errors.InputError` naming the file
and, where it applies, the line (or row).
"""

from __future__ import annotations

import bz2
import gzip
import importlib
import io
import json
import re
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, UserError

FORMATS = ("bert", "text", "jsonl", "parquet", "hf")
SENTENCE_MODES = ("lines", "sentencex")
DOCUMENT_UNITS = ("block", "file")
READ_BYTES = 1 << 20  # text is decoded and split in pieces of about this size

# One or more blank (whitespace-only) lines end a document.
_BLANK_LINES = re.compile(r"\n(?:[^\S\n]*\n)+")
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class CorpusFormat:
    """How to read the inputs: which reader, how documents end, how sentences are found."""

    reader: str = "bert"  # one of FORMATS; 'bert' is 'text' with blank-line blocks and one sentence per line
    sentences: str = "lines"  # one of SENTENCE_MODES
    documents: str = "block"  # text files only: a blank-line block or a whole file is one document
    text_column: str = "text"  # jsonl, parquet, hf: the field holding a document's text
    hf_split: str = "train"  # hf: the split of a DatasetDict or a Hub dataset
    language: str = "en"  # sentencex's language code

    @classmethod
    def for_reader(cls, reader: str, sentences: str | None = None, **fields) -> CorpusFormat:
        """BERT's format has one sentence per line; every other reader splits sentences with sentencex by default."""
        return cls(reader, sentences or ("lines" if reader == "bert" else "sentencex"), **fields)

    def validate(self) -> None:
        for name, value, allowed in (("--format", self.reader, FORMATS), ("--sentences", self.sentences, SENTENCE_MODES),
                                     ("--documents", self.documents, DOCUMENT_UNITS)):
            if value not in allowed:
                raise UserError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        if self.reader == "bert" and (self.sentences != "lines" or self.documents != "block"):
            raise UserError("--format bert is one sentence per line, a blank line between documents; "
                            "for other text use --format text")
        if self.sentences == "sentencex":
            import_extra("sentencex", "text", "--sentences sentencex")
        if self.reader == "parquet":
            import_extra("pyarrow.parquet", "parquet", "--format parquet")
        if self.reader == "hf":
            import_extra("datasets", "hf", "--format hf")


def import_extra(module: str, extra: str, needed_by: str):
    """Import an optional dependency, or stop with one line naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.split(".")[0]
        raise UserError(f"{needed_by} needs the optional package {package}: pip install 'fastbert[{extra}]'") from None


def split_sentences(text: str, corpus_format: CorpusFormat) -> list[str]:
    """A document's sentences, stripped, blank ones dropped (sentencex's keep their inner whitespace collapsed)."""
    if corpus_format.sentences == "lines":
        return [sentence for sentence in (line.strip() for line in text.split("\n")) if sentence]
    from sentencex import segment

    return [_WHITESPACE.sub(" ", piece).strip() for piece in segment(corpus_format.language, text) if not piece.isspace()]


def iter_documents(inputs: list[str], corpus_format: CorpusFormat) -> Iterator[str]:
    """Every input's documents in order (a document never spans two inputs), as text."""
    read = {"bert": _text_documents, "text": _text_documents, "jsonl": _jsonl_documents,
            "parquet": _parquet_documents, "hf": _hf_documents}[corpus_format.reader]
    for source in inputs:
        yield from read(source, corpus_format)


# ---- text files ------------------------------------------------------------------------------
def _text_documents(path: str, corpus_format: CorpusFormat) -> Iterator[str]:
    if corpus_format.documents == "file":
        text = "".join(_decoded_pieces(Path(path)))
        if text.strip():
            yield text
        return
    carry = ""
    for piece in _decoded_pieces(Path(path)):
        blocks = _BLANK_LINES.split(carry + piece)
        carry = blocks.pop()  # may continue in the next piece
        yield from (block for block in blocks if not block.isspace() and block)
    if carry.strip():
        yield carry


def _decoded_pieces(path: Path) -> Iterator[str]:
    """The file as UTF-8 text in pieces that end at line ends; checks it is present, non-empty and not blank-only."""
    empty = blank_only = True
    with _open_binary(path) as stream:
        line = 1
        for data in _read_lines_in_pieces(path, stream):
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as err:
                at = line + data.count(b"\n", 0, err.start)
                raise InputError(path, f"not UTF-8 (byte 0x{data[err.start]:02x}: {err.reason})", line=at) from None
            empty, blank_only = False, blank_only and text.isspace()
            line += data.count(b"\n")
            yield text
    if empty:
        raise InputError(path, "corpus file is empty")
    if blank_only:
        raise InputError(path, "corpus file has only blank lines")


def _read_lines_in_pieces(path: Path, stream) -> Iterator[bytes]:
    line = 1
    while True:
        data = _read_or_fail(path, stream, READ_BYTES, line)
        if not data:
            return
        if not data.endswith(b"\n"):
            data += _read_or_fail(path, stream, -1, line, whole_line=True)
        line += data.count(b"\n")
        yield data


def _read_or_fail(path: Path, stream, size: int, line: int, whole_line: bool = False) -> bytes:
    """One read; a damaged compressed stream becomes an InputError naming where it broke."""
    try:
        return stream.readline() if whole_line else stream.read(size)
    except (OSError, EOFError, zlib.error) as err:
        if _compression(path) == "uncompressed":
            raise InputError(path, f"cannot read corpus file ({err})") from None
        raise InputError(path, f"corrupt {_compression(path)} data after line {line - 1} ({err})") from None
    except Exception as err:  # zstandard.ZstdError has no common base with the above
        if type(err).__name__ == "ZstdError":
            raise InputError(path, f"corrupt zstd data after line {line - 1} ({err})") from None
        raise


COMPRESSIONS = {".gz": "gzip", ".bz2": "bzip2", ".zst": "zstd", ".zstd": "zstd"}


def _compression(path: Path) -> str:
    return COMPRESSIONS.get(path.suffix, "uncompressed")


@contextmanager
def _open_binary(path: Path) -> Iterator:
    """The file's bytes, decompressed by its suffix."""
    try:
        raw = open(path, "rb")
    except FileNotFoundError:
        raise InputError(path, "corpus file not found") from None
    except IsADirectoryError:
        raise InputError(path, "is a directory, expected a corpus file (use a glob such as DIR/*.txt)") from None
    except OSError as err:
        raise InputError(path, f"cannot read corpus file ({err.strerror})") from None
    with raw:
        compression = _compression(path)
        if compression == "gzip":
            stream = gzip.GzipFile(fileobj=raw, mode="rb")
        elif compression == "bzip2":
            stream = bz2.BZ2File(raw, mode="rb")
        elif compression == "zstd":
            zstandard = import_extra("zstandard", "zstd", f"{path} (zstd-compressed)")
            stream = io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw), READ_BYTES)
        else:
            stream = raw
        with stream:
            yield stream


# ---- jsonl -----------------------------------------------------------------------------------
def _jsonl_documents(path: str, corpus_format: CorpusFormat) -> Iterator[str]:
    path_ = Path(path)
    column = corpus_format.text_column
    records = 0
    with _open_binary(path_) as stream:
        for number, raw in enumerate(_lines(path_, stream), start=1):
            if raw.isspace() or not raw:
                continue
            try:
                record = json.loads(raw)
            except UnicodeDecodeError as err:
                raise InputError(path_, f"not UTF-8 ({err.reason})", line=number) from None
            except json.JSONDecodeError as err:
                raise InputError(path_, f"not JSON ({err.msg} at column {err.colno})", line=number) from None
            records += 1
            yield _text_field(path_, record, column, line=number)
    if records == 0:
        raise InputError(path_, "no JSON records (the file is empty or blank)")


def _lines(path: Path, stream) -> Iterator[bytes]:
    for data in _read_lines_in_pieces(path, stream):
        lines = data.split(b"\n")
        if not lines[-1]:
            lines.pop()  # the piece ended with a newline
        yield from lines


def _text_field(path: Path, record, column: str, line: int) -> str:
    if not isinstance(record, dict):
        raise InputError(path, f"expected a JSON object with a {column!r} field, got {type(record).__name__}", line=line)
    if column not in record:
        fields = ", ".join(map(repr, list(record)[:10])) or "none"
        raise InputError(path, f"no {column!r} field (fields: {fields}); choose one with --text-column", line=line)
    text = record[column]
    if text is None:
        return ""
    if not isinstance(text, str):
        raise InputError(path, f"{column!r} holds {type(text).__name__}, expected text", line=line)
    return text


# ---- parquet ---------------------------------------------------------------------------------
PARQUET_BATCH_ROWS = 1024


def _parquet_documents(path: str, corpus_format: CorpusFormat) -> Iterator[str]:
    import pyarrow
    import pyarrow.parquet as parquet

    path_ = Path(path)
    if not path_.is_file():
        raise InputError(path_, "parquet file not found")
    try:
        parquet_file = parquet.ParquetFile(path_)
    except (pyarrow.ArrowException, OSError) as err:
        raise InputError(path_, f"not a parquet file ({err})") from None
    column = corpus_format.text_column
    names = parquet_file.schema_arrow.names
    if column not in names:
        raise InputError(path_, f"no column {column!r} (columns: {', '.join(names)}); choose one with --text-column")
    kind = parquet_file.schema_arrow.field(column).type
    if not (pyarrow.types.is_string(kind) or pyarrow.types.is_large_string(kind)):
        raise InputError(path_, f"column {column!r} holds {kind}, expected strings")
    if parquet_file.metadata.num_rows == 0:
        raise InputError(path_, "no rows")
    try:
        for batch in parquet_file.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=[column]):
            yield from (text or "" for text in batch.column(0).to_pylist())
    except (pyarrow.ArrowException, OSError) as err:
        raise InputError(path_, f"corrupt parquet data ({err})") from None


# ---- HuggingFace datasets --------------------------------------------------------------------
HF_BATCH_ROWS = 1024


def _saved_without_rows(path: Path) -> bool:
    state = path / "state.json"
    try:
        return state.is_file() and not json.loads(state.read_text(encoding="utf-8")).get("_data_files")
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def _hf_documents(source: str, corpus_format: CorpusFormat) -> Iterator[str]:
    """A ``save_to_disk`` directory (memory-mapped Arrow), else a local dataset directory or Hub name, streamed."""
    datasets = import_extra("datasets", "hf", "--format hf")
    path = Path(source)
    if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
        if _saved_without_rows(path):  # datasets writes no shard for it, and then cannot load it
            raise InputError(source, "the dataset has no rows")
        dataset = datasets.load_from_disk(str(path))
        if isinstance(dataset, datasets.DatasetDict):
            if corpus_format.hf_split not in dataset:
                raise InputError(path, f"no split {corpus_format.hf_split!r} (splits: {', '.join(dataset)}); "
                                 "choose one with --hf-split")
            dataset = dataset[corpus_format.hf_split]
    else:
        try:
            dataset = datasets.load_dataset(source, split=corpus_format.hf_split, streaming=True)
        except Exception as err:  # datasets raises many types (FileNotFoundError, DatasetNotFoundError, ValueError ...)
            raise InputError(source, f"cannot load this dataset ({type(err).__name__}: {err})") from None
    column = corpus_format.text_column
    names = dataset.column_names
    if names is not None and column not in names:
        raise InputError(source, f"no column {column!r} (columns: {', '.join(names)}); choose one with --text-column")
    if getattr(dataset, "num_rows", None) == 0:  # iterating an empty Arrow dataset fails inside datasets
        raise InputError(source, "the dataset has no rows")
    rows = 0
    for batch in dataset.iter(batch_size=HF_BATCH_ROWS):
        if column not in batch:
            raise InputError(source, f"no column {column!r} (columns: {', '.join(batch)}); choose one with --text-column")
        for text in batch[column]:
            rows += 1
            if text is not None and not isinstance(text, str):
                raise InputError(source, f"row {rows}: {column!r} holds {type(text).__name__}, expected text")
            yield text or ""
    if rows == 0:
        raise InputError(source, "the dataset has no rows")
