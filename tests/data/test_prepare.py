"""`fastbert data prepare` end to end: shards, determinism, the dataset reader, bad input."""

import json
from pathlib import Path

import numpy as np
import pytest

from fastbert.cli import main
from fastbert.data.corpus import read_documents
from fastbert.data.dataset import ARRAY_FILES, METADATA_FILE, PretrainingDataset
from fastbert.errors import InputError
from fastbert.tokenizer import load_tokenizer, tokenizer_hash


def prepare(corpus, tokenizer_dir: Path, out: Path, *extra: str) -> int:
    corpora = [str(path) for path in (corpus if isinstance(corpus, list) else [corpus])]
    return main(["data", "prepare", "--corpus", *corpora, "--tokenizer", str(tokenizer_dir), "--out", str(out), *extra])


def test_metadata_describes_the_corpus(prepared_dir: Path, prepared_settings, corpus_file: Path, tokenizer_dir: Path):
    metadata = json.loads((prepared_dir / METADATA_FILE).read_text())
    documents = read_documents([corpus_file])
    counts = metadata["counts"]
    assert counts["documents"] == len(documents)
    assert counts["sentences"] + counts["empty_sentences"] == sum(map(len, documents))
    assert metadata["tokenizer"]["hash"] == tokenizer_hash(tokenizer_dir)
    assert metadata["token_dtype"] == "uint16"
    assert metadata["max_seq_len"] == prepared_settings.max_seq_len and metadata["seed"] == prepared_settings.seed
    assert 0.35 <= counts["is_next_fraction"] <= 0.55  # single-sentence chunks are always random pairs


def test_dataset_items_are_bert_pairs(prepared_dir: Path, prepared_settings, tokenizer_dir: Path):
    dataset = PretrainingDataset(prepared_dir)
    tokenizer = load_tokenizer(tokenizer_dir)
    lengths = dataset.sequence_lengths()
    assert lengths.max() <= prepared_settings.max_seq_len and lengths.min() >= 5
    labels = []
    for index in range(len(dataset)):
        item = dataset[index]
        ids, types = item["input_ids"], item["token_type_ids"]
        assert len(ids) == lengths[index] == len(types)
        separators = np.flatnonzero(ids == tokenizer.sep_id)
        assert ids[0] == tokenizer.cls_id and len(separators) == 2 and separators[1] == len(ids) - 1
        assert not np.isin(ids[1:-1], [tokenizer.cls_id, tokenizer.pad_id, tokenizer.mask_id]).any()
        assert (types[: separators[0] + 1] == 0).all() and (types[separators[0] + 1 :] == 1).all()
        labels.append(item["next_sentence_label"])
    assert set(labels) == {0, 1}
    assert dataset[-1]["index"] == len(dataset) - 1
    with pytest.raises(IndexError):
        dataset[len(dataset)]


def test_true_continuations_read_as_the_document(prepared_dir: Path, tokenizer_dir: Path, corpus_file: Path):
    """An IsNext pair's A and B are runs of one document's tokens, B after A."""
    dataset = PretrainingDataset(prepared_dir)
    tokenizer = load_tokenizer(tokenizer_dir)

    def spelled(ids) -> str:
        return "," + ",".join(map(str, ids)) + ","

    documents = [
        spelled(id_ for encoding in tokenizer.backend.encode_batch(sentences, add_special_tokens=False)
                for id_ in encoding.ids)
        for sentences in read_documents([corpus_file])
    ]
    checked = 0
    for index in range(0, len(dataset), 5):
        item = dataset[index]
        if item["next_sentence_label"] == 0:
            separator = int(np.flatnonzero(item["input_ids"] == tokenizer.sep_id)[0])
            a, b = spelled(item["input_ids"][1:separator]), spelled(item["input_ids"][separator + 1 : -1])
            # Truncation may cut A's end or B's start, so each segment is a run, B somewhere after A.
            homes = [document for document in documents if a in document and b in document[document.index(a) :]]
            assert homes
            checked += 1
    assert checked > 50


def test_same_seed_gives_identical_shards_for_any_worker_count(
    prepared_dir: Path, prepared_settings, corpus_file: Path, tokenizer_dir: Path, tmp_path: Path, capsys
):
    settings = ["--max-seq-len", str(prepared_settings.max_seq_len), "--seed", str(prepared_settings.seed)]
    out = tmp_path / "two-workers"
    assert prepare(corpus_file, tokenizer_dir, out, *settings, "--workers", "2") == 0
    assert "sentences/s" in capsys.readouterr().out
    for name in ARRAY_FILES:
        assert (out / f"{name}.npy").read_bytes() == (prepared_dir / f"{name}.npy").read_bytes(), name
    ours, reference = (json.loads((path / METADATA_FILE).read_text()) for path in (out, prepared_dir))
    assert {key: value for key, value in ours.items() if key != "command"} == {
        key: value for key, value in reference.items() if key != "command"
    }
    other_seed = tmp_path / "other-seed"
    assert prepare(corpus_file, tokenizer_dir, other_seed, settings[0], settings[1], "--seed", "8") == 0
    assert (other_seed / "tokens.npy").read_bytes() != (prepared_dir / "tokens.npy").read_bytes()


def test_over_long_sentences_are_truncated_and_counted(tokenizer_dir: Path, tmp_path: Path):
    long_sentence = " ".join(["word"] * 300)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(f"Short one here.\n{long_sentence}\nAnother short.\n\nSecond document.\nIt has two lines.\n\n")
    out = tmp_path / "out"
    assert prepare(corpus, tokenizer_dir, out, "--max-seq-len", "32") == 0
    metadata = json.loads((out / METADATA_FILE).read_text())
    assert metadata["counts"]["truncated_sentences"] == 1
    assert PretrainingDataset(out).sequence_lengths().max() <= 32


def test_dataset_rejects_inconsistent_shards(prepared_dir: Path, tmp_path: Path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in prepared_dir.iterdir():
        (broken / path.name).write_bytes(path.read_bytes())
    np.save(broken / "a_lengths.npy", np.load(prepared_dir / "a_lengths.npy")[:-1])
    with pytest.raises(InputError, match="a_lengths.npy"):
        PretrainingDataset(broken)


BAD_CORPORA = {
    "not-utf8": (b"Fine sentence one.\nFine sentence two.\n\nCaf\xe9 in Latin-1.\n\n", ":4: not UTF-8"),
    "empty": (b"", "corpus file is empty"),
    "blank-only": (b"\n  \n\t\n\n", "only blank lines"),
    "single-document": (b"One document.\nWith two sentences.\n", "single document"),
}


@pytest.mark.parametrize("case", sorted(BAD_CORPORA))
def test_bad_corpus_is_one_line_error_and_no_output(case: str, tokenizer_dir: Path, tmp_path: Path, capsys):
    content, expected = BAD_CORPORA[case]
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(content)
    out = tmp_path / "out"
    assert prepare(corpus, tokenizer_dir, out) == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and str(corpus) in stderr and expected in stderr, stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["corpus.txt"]  # no out dir, no staging dir


def test_bad_corpus_among_good_files_is_named(corpus_file: Path, tokenizer_dir: Path, tmp_path: Path, capsys):
    missing = tmp_path / "missing.txt"
    assert prepare([corpus_file, missing], tokenizer_dir, tmp_path / "out") == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and f"{missing}: corpus file not found" in stderr
    assert not (tmp_path / "out").exists()


def test_missing_tokenizer_directory(corpus_file: Path, tmp_path: Path, capsys):
    assert prepare(corpus_file, tmp_path / "no-tokenizer", tmp_path / "out") == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and "no-tokenizer: tokenizer directory not found" in stderr
    assert not (tmp_path / "out").exists()
