"""Every input format gives the pairs that the same text in BERT's format gives; bad inputs are one line."""

import bz2
import gzip
import json
from pathlib import Path

import pytest

from fastbert.cli import main
from fastbert.data.corpus import read_documents
from fastbert.data.sources import CorpusFormat, import_extra, iter_documents, split_sentences
from fastbert.errors import UserError

DOCUMENTS = 12


def prepare(inputs: list, tokenizer_dir: Path, out: Path, *extra: str) -> int:
    return main(["data", "prepare", "--corpus", *map(str, inputs), "--tokenizer", str(tokenizer_dir),
                 "--out", str(out), "--workers", "1", "--max-seq-len", "64", "--seed", "5", *extra])


def shard_bytes(out: Path) -> dict[str, bytes]:
    files = {str(path.relative_to(out)): path.read_bytes() for path in sorted(out.rglob("*.bin"))}
    assert files
    return files


def write_bert(documents: list[list[str]], path: Path) -> Path:
    path.write_text("".join("\n".join(document) + "\n\n" for document in documents), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def documents(corpus_file: Path) -> list[list[str]]:
    return read_documents([corpus_file])[:DOCUMENTS]


@pytest.fixture(scope="module")
def bert_shards(documents, tokenizer_dir, tmp_path_factory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("bert")
    assert prepare([write_bert(documents, root / "corpus.txt")], tokenizer_dir, root / "out") == 0
    return shard_bytes(root / "out")


def jsonl_records(documents) -> list[dict]:
    return [{"id": number, "text": "\n".join(document)} for number, document in enumerate(documents)]


def write_jsonl(documents, path: Path, opener=open) -> Path:
    with opener(path, "wt", encoding="utf-8") as file:
        file.writelines(json.dumps(record) + "\n" for record in jsonl_records(documents))
    return path


def zstd_open(path, mode, encoding):
    zstandard = pytest.importorskip("zstandard")
    return zstandard.open(path, mode, encoding=encoding)


@pytest.mark.parametrize("suffix,opener", [(".gz", gzip.open), (".bz2", bz2.open), (".zst", zstd_open)])
def test_compressed_bert_files(suffix, opener, documents, tokenizer_dir, bert_shards, tmp_path):
    path = tmp_path / f"corpus.txt{suffix}"
    with opener(path, "wt", encoding="utf-8") as file:
        file.write("".join("\n".join(document) + "\n\n" for document in documents))
    assert prepare([path], tokenizer_dir, tmp_path / "out") == 0
    assert shard_bytes(tmp_path / "out") == bert_shards


def test_many_files_by_glob(documents, tokenizer_dir, bert_shards, tmp_path):
    for number in range(0, DOCUMENTS, 5):
        write_bert(documents[number : number + 5], tmp_path / f"part-{number:02d}.txt")
    assert prepare([tmp_path / "part-*.txt"], tokenizer_dir, tmp_path / "out") == 0
    assert shard_bytes(tmp_path / "out") == bert_shards


@pytest.mark.parametrize("compressed", [False, True])
def test_jsonl_with_one_sentence_per_line(compressed, documents, tokenizer_dir, bert_shards, tmp_path):
    path = write_jsonl(documents, tmp_path / ("c.jsonl.gz" if compressed else "c.jsonl"), gzip.open if compressed else open)
    assert prepare([path], tokenizer_dir, tmp_path / "out", "--format", "jsonl", "--sentences", "lines") == 0
    assert shard_bytes(tmp_path / "out") == bert_shards


def test_parquet_column(documents, tokenizer_dir, bert_shards, tmp_path):
    pyarrow = pytest.importorskip("pyarrow")
    import pyarrow.parquet as parquet

    table = pyarrow.table({"body": ["\n".join(document) for document in documents], "id": list(range(DOCUMENTS))})
    parquet.write_table(table, tmp_path / "c.parquet", row_group_size=5)
    assert prepare([tmp_path / "c.parquet"], tokenizer_dir, tmp_path / "out", "--format", "parquet",
                   "--text-column", "body", "--sentences", "lines") == 0
    assert shard_bytes(tmp_path / "out") == bert_shards


def test_huggingface_save_to_disk_and_local_directory(documents, tokenizer_dir, bert_shards, tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list(jsonl_records(documents)).save_to_disk(str(tmp_path / "saved"))
    assert prepare([tmp_path / "saved"], tokenizer_dir, tmp_path / "out", "--format", "hf", "--sentences", "lines") == 0
    assert shard_bytes(tmp_path / "out") == bert_shards
    (tmp_path / "local").mkdir()
    write_jsonl(documents, tmp_path / "local" / "train.jsonl")
    assert prepare([tmp_path / "local"], tokenizer_dir, tmp_path / "out2", "--format", "hf", "--sentences", "lines") == 0
    assert shard_bytes(tmp_path / "out2") == bert_shards


def test_plain_text_split_by_sentencex(documents, tokenizer_dir, tmp_path):
    """Prose in blocks (or one file per document) gives the pairs of BERT's format holding sentencex's sentences."""
    pytest.importorskip("sentencex")
    prose = [" ".join(document) for document in documents]
    (tmp_path / "prose.txt").write_text("".join(text + "\n\n" for text in prose), encoding="utf-8")
    split = CorpusFormat.for_reader("text")
    sentences = [split_sentences(text, split) for text in prose]
    assert sum(map(len, sentences)) > 0.8 * sum(map(len, documents))  # it does find sentences
    write_bert(sentences, tmp_path / "split.txt")
    assert prepare([tmp_path / "split.txt"], tokenizer_dir, tmp_path / "bert") == 0
    assert prepare([tmp_path / "prose.txt"], tokenizer_dir, tmp_path / "blocks", "--format", "text") == 0
    assert shard_bytes(tmp_path / "blocks") == shard_bytes(tmp_path / "bert")
    for number, text in enumerate(prose):
        (tmp_path / f"doc-{number:02d}.txt").write_text(text, encoding="utf-8")
    assert prepare([tmp_path / "doc-*.txt"], tokenizer_dir, tmp_path / "files", "--format", "text",
                   "--documents", "file") == 0
    assert shard_bytes(tmp_path / "files") == shard_bytes(tmp_path / "bert")


def test_bert_blocks_survive_read_boundaries(tmp_path, monkeypatch):
    monkeypatch.setattr("fastbert.data.sources.READ_BYTES", 7)
    path = tmp_path / "c.txt"
    path.write_text("a b\nc d e f\n \n\n\nsecond doc\n\t\nthird\nlast line no newline")
    texts = list(iter_documents([str(path)], CorpusFormat()))
    assert [split_sentences(text, CorpusFormat()) for text in texts] == [
        ["a b", "c d e f"], ["second doc"], ["third", "last line no newline"]]


def test_missing_extra_is_named():
    with pytest.raises(UserError, match=r"^--format parquet needs the optional package no_such_package: "
                                        r"pip install 'fastbert\[parquet\]'$"):
        import_extra("no_such_package.parquet", "parquet", "--format parquet")


def gzip_truncated(path: Path) -> None:
    data = gzip.compress(("A sentence here.\n" * 5000 + "\n").encode() * 2)
    path.write_bytes(data[: len(data) // 2])


def zstd_garbled(path: Path) -> None:
    zstandard = pytest.importorskip("zstandard")
    data = bytearray(zstandard.ZstdCompressor().compress(("Some sentence.\n" * 3000 + "\n").encode() * 2))
    data[len(data) // 2 :] = b"\xff" * (len(data) - len(data) // 2)
    path.write_bytes(bytes(data))


def parquet_without_column(path: Path) -> None:
    pyarrow = pytest.importorskip("pyarrow")
    import pyarrow.parquet as parquet

    parquet.write_table(pyarrow.table({"body": ["x y z"]}), path)


def parquet_without_rows(path: Path) -> None:
    pyarrow = pytest.importorskip("pyarrow")
    import pyarrow.parquet as parquet

    parquet.write_table(pyarrow.table({"text": pyarrow.array([], pyarrow.string())}), path)


def hf_without_rows(path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    datasets.disable_progress_bars()  # its bar would land in the stderr the test reads
    try:
        datasets.Dataset.from_dict({"text": []}).save_to_disk(str(path))
    finally:
        datasets.enable_progress_bars()


BAD_INPUTS = {
    "jsonl-not-json": ("c.jsonl", lambda p: p.write_text('{"text": "a"}\n{"text": "b"}\n{"text": oops}\n'),
                       ["--format", "jsonl"], ":3: not JSON (Expecting value at column 10)"),
    "jsonl-missing-field": ("c.jsonl", lambda p: p.write_text('{"text": "a"}\n\n{"body": "b", "id": 1}\n'),
                            ["--format", "jsonl"], ":3: no 'text' field (fields: 'body', 'id'); choose one with --text-column"),
    "jsonl-empty": ("c.jsonl", lambda p: p.write_text("\n\n"), ["--format", "jsonl"], ": no JSON records"),
    "gzip-truncated": ("c.txt.gz", gzip_truncated, [], ": corrupt gzip data after line"),
    "zstd-garbled": ("c.txt.zst", zstd_garbled, [], ": corrupt zstd data after line"),
    "parquet-missing-column": ("c.parquet", parquet_without_column, ["--format", "parquet"],
                               ": no column 'text' (columns: body); choose one with --text-column"),
    "parquet-empty": ("c.parquet", parquet_without_rows, ["--format", "parquet"], ": no rows"),
    "parquet-not-parquet": ("c.parquet", lambda p: p.write_text("not parquet"), ["--format", "parquet"],
                            ": not a parquet file"),
    "hf-empty": ("saved", hf_without_rows, ["--format", "hf"], ": the dataset has no rows"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_naming_it_and_writes_nothing(case, tokenizer_dir, tmp_path, capsys):
    name, make, flags, expected = BAD_INPUTS[case]
    (tmp_path / "in").mkdir()
    make(tmp_path / "in" / name)
    assert prepare([tmp_path / "in" / name], tokenizer_dir, tmp_path / "out", "--sentences", "lines", *flags) == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and f"{tmp_path / 'in' / name}{expected}" in stderr, stderr
    assert [path.name for path in tmp_path.iterdir()] == ["in"]
