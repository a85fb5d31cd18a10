"""`fastbert data prepare` end to end: the streaming pipeline against an in-memory reference,
the held-out split, determinism, the shard reader, bad input and failures."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import fastbert.data.prepare as prepare_module
import fastbert.data.sources as sources_module
from fastbert.cli import main
from fastbert.data.corpus import read_documents
from fastbert.data.dataset import METADATA_FILE, PretrainingDataset
from fastbert.data.nsp import TokenizedCorpus, document_pairs
from fastbert.data.prepare import HELD_OUT_STREAM, PrepareSettings, prepare_pretraining_data
from fastbert.errors import InputError
from fastbert.tokenizer import load_tokenizer, tokenizer_hash

REPO = Path(__file__).resolve().parents[2]


def prepare(corpus, tokenizer_dir: Path, out: Path, *extra: str) -> int:
    corpora = [str(path) for path in (corpus if isinstance(corpus, list) else [corpus])]
    return main(["data", "prepare", "--corpus", *corpora, "--tokenizer", str(tokenizer_dir), "--out", str(out),
                 "--workers", "1", *extra])


def spelled(ids) -> str:
    return "," + ",".join(map(str, ids)) + ","


def reference_sequences(documents: list[list[str]], tokenizer_dir: Path, settings: PrepareSettings) -> dict[str, list]:
    """Every split's (input_ids, NSP label) built with the whole corpus in memory: the oracle for the streaming pipeline."""
    tokenizer = load_tokenizer(tokenizer_dir)
    lengths, tokens, document_sizes = [], [], []
    for sentences in documents:
        ids = [encoding.ids[: settings.max_num_tokens]
               for encoding in tokenizer.backend.encode_batch(sentences, add_special_tokens=False)]
        ids = [sentence for sentence in ids if sentence]
        if ids:
            document_sizes.append(len(ids))
            lengths += map(len, ids)
            tokens += [token for sentence in ids for token in sentence]
    whole = TokenizedCorpus.whole(np.array(tokens), np.concatenate([[0], np.cumsum(lengths)]),
                                  np.concatenate([[0], np.cumsum(document_sizes)]))
    total = whole.num_documents
    held_out = settings.held_out_documents(total)
    validation = np.sort(np.random.default_rng([settings.seed, HELD_OUT_STREAM]).choice(total, held_out, replace=False))
    splits = {"train": np.setdiff1d(np.arange(total), validation)}
    if held_out:
        splits["validation"] = validation
    sequences = {}
    for split, members in splits.items():
        corpus = TokenizedCorpus(whole.tokens, whole.sentence_offsets, whole.document_offsets, members)
        sequences[split] = [
            ([tokenizer.cls_id, *corpus.tokens[p.a_start : p.a_end], tokenizer.sep_id,
              *corpus.tokens[p.b_start : p.b_end], tokenizer.sep_id], int(p.is_random_next))
            for dupe in range(settings.dupe_factor)
            for document in range(corpus.num_documents)
            for p in document_pairs(corpus, document, settings.max_num_tokens, settings.short_seq_prob,
                                    np.random.default_rng([settings.seed, dupe, int(members[document])]))
        ]
    return sequences


def test_streaming_pipeline_equals_the_in_memory_reference(corpus_file, tokenizer_dir, tmp_path, monkeypatch):
    # Small reads, chunks, pairing tasks and shards, so every boundary falls inside the corpus many times.
    monkeypatch.setattr(sources_module, "READ_BYTES", 3000)
    monkeypatch.setattr(prepare_module, "CHUNK_TEXT_BYTES", 20_000)
    monkeypatch.setattr(prepare_module, "PAIRING_DOCUMENTS", 3)
    settings = PrepareSettings(max_seq_len=64, seed=3, dupe_factor=2, validation_documents=6, shard_mib=0.02)
    metadata = prepare_pretraining_data([str(corpus_file)], tokenizer_dir, tmp_path / "out", settings)
    expected = reference_sequences(read_documents([corpus_file]), tokenizer_dir, settings)
    assert len(metadata["splits"]["train"]["shards"]) > 5
    for split in ("train", "validation"):
        dataset = PretrainingDataset(tmp_path / "out", split)
        got = [(dataset[i]["input_ids"].tolist(), dataset[i]["next_sentence_label"]) for i in range(len(dataset))]
        assert got == [(list(map(int, ids)), label) for ids, label in expected[split]], split
    assert metadata["splits"]["validation"]["documents"] == 6


def test_metadata_describes_the_corpus(prepared_dir: Path, prepared_settings, corpus_file: Path, tokenizer_dir: Path):
    metadata = json.loads((prepared_dir / METADATA_FILE).read_text())
    documents = read_documents([corpus_file])
    counts, train = metadata["counts"], metadata["splits"]["train"]
    assert counts["documents"] == train["documents"] == len(documents)
    assert counts["sentences"] + counts["empty_sentences"] == sum(map(len, documents))
    assert 0.95 * corpus_file.stat().st_size < counts["input_bytes"] <= corpus_file.stat().st_size  # less separators
    assert metadata["tokenizer"]["hash"] == tokenizer_hash(tokenizer_dir)
    assert metadata["tokenizer"]["path"] == "tokenizer"  # relative: the directory moves as a whole
    assert tokenizer_hash(prepared_dir / "tokenizer") == tokenizer_hash(tokenizer_dir)
    assert metadata["token_dtype"] == "uint16"
    assert metadata["max_seq_len"] == prepared_settings.max_seq_len and metadata["seed"] == prepared_settings.seed
    assert 0.35 <= train["is_next_fraction"] <= 0.55  # single-sentence chunks are always random pairs
    assert sum(shard["pairs"] for shard in train["shards"]) == train["pairs"] == len(PretrainingDataset(prepared_dir))
    for shard in train["shards"]:
        for entry in shard["files"].values():
            assert not Path(entry["path"]).is_absolute()
            assert (prepared_dir / entry["path"]).stat().st_size == entry["bytes"]
    assert "validation" not in metadata["splits"]
    assert not any(path.name.startswith(".") for path in prepared_dir.rglob("*"))  # no token store left inside


def test_manifest_checksums_match_the_files(tmp_path, corpus_file, tokenizer_dir):
    import hashlib

    prepare_pretraining_data([str(corpus_file)], tokenizer_dir, tmp_path / "out", PrepareSettings(shard_mib=0.05))
    shards = json.loads((tmp_path / "out" / METADATA_FILE).read_text())["splits"]["train"]["shards"]
    assert len(shards) > 2
    for shard in shards:
        assert (tmp_path / "out" / shard["files"]["tokens"]["path"]).stat().st_size <= 0.05 * 2**20
        for entry in shard["files"].values():
            assert hashlib.sha256((tmp_path / "out" / entry["path"]).read_bytes()).hexdigest() == entry["sha256"]


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


def segments(dataset: PretrainingDataset, index: int, sep_id: int) -> tuple[str, str, int]:
    item = dataset[index]
    separator = int(np.flatnonzero(item["input_ids"] == sep_id)[0])
    return (spelled(item["input_ids"][1:separator]), spelled(item["input_ids"][separator + 1 : -1]),
            item["next_sentence_label"])


def spelled_documents(corpus_file: Path, tokenizer_dir: Path) -> list[str]:
    tokenizer = load_tokenizer(tokenizer_dir)
    return [spelled(id_ for encoding in tokenizer.backend.encode_batch(sentences, add_special_tokens=False)
                    for id_ in encoding.ids)
            for sentences in read_documents([corpus_file])]


def test_pairs_read_as_their_documents(prepared_dir: Path, tokenizer_dir: Path, corpus_file: Path):
    """IsNext: A and B are runs of one document, B after A. NotNext: B is a run of another document."""
    dataset = PretrainingDataset(prepared_dir)
    sep_id = load_tokenizer(tokenizer_dir).sep_id
    documents = spelled_documents(corpus_file, tokenizer_dir)
    checked = {0: 0, 1: 0}
    for index in range(0, len(dataset), 3):
        a, b, random_next = segments(dataset, index, sep_id)
        homes = [number for number, document in enumerate(documents) if a in document]
        assert homes
        if random_next:
            # Truncation may cut either end of B; a B this long occurs in its own document only.
            if b.count(",") > 12:
                b_homes = [number for number, document in enumerate(documents) if b in document]
                assert b_homes and not set(b_homes) & set(homes)
                checked[1] += 1
        else:
            assert any(b in documents[home][documents[home].index(a) :] for home in homes)
            checked[0] += 1
    assert checked[0] > 50 and checked[1] > 50


def test_held_out_documents_never_reach_the_training_shards(corpus_file, tokenizer_dir, tmp_path):
    out = tmp_path / "out"
    assert prepare(corpus_file, tokenizer_dir, out, "--validation-fraction", "0.25", "--max-seq-len", "64") == 0
    metadata = json.loads((out / METADATA_FILE).read_text())
    documents = spelled_documents(corpus_file, tokenizer_dir)
    assert metadata["splits"]["validation"]["documents"] == round(0.25 * len(documents)) == 10
    assert metadata["splits"]["train"]["documents"] == len(documents) - 10
    sep_id = load_tokenizer(tokenizer_dir).sep_id
    homes_by_split = {}
    for split in ("train", "validation"):
        dataset = PretrainingDataset(out, split)
        homes = set()
        for index in range(len(dataset)):
            for segment in segments(dataset, index, sep_id)[:2]:
                found = {number for number, document in enumerate(documents) if segment in document}
                if len(found) == 1:  # a segment that identifies its document (short ones may occur in several)
                    homes |= found
        homes_by_split[split] = homes
    assert len(homes_by_split["validation"]) == 10 and len(homes_by_split["train"]) == len(documents) - 10
    assert not homes_by_split["train"] & homes_by_split["validation"]


def test_same_seed_gives_identical_shards_for_any_worker_count(
    prepared_dir: Path, prepared_settings, corpus_file: Path, tokenizer_dir: Path, tmp_path: Path, capsys
):
    settings = ["--max-seq-len", str(prepared_settings.max_seq_len), "--seed", str(prepared_settings.seed)]
    out = tmp_path / "two-workers"
    assert main(["data", "prepare", "--corpus", str(corpus_file), "--tokenizer", str(tokenizer_dir), "--out", str(out),
                 "--workers", "2", *settings]) == 0
    assert "MB/s" in capsys.readouterr().out
    files = sorted(path.relative_to(prepared_dir) for path in prepared_dir.rglob("*.bin"))
    assert files == sorted(path.relative_to(out) for path in out.rglob("*.bin"))
    for name in files:
        assert (out / name).read_bytes() == (prepared_dir / name).read_bytes(), name
    ours, reference = (json.loads((path / METADATA_FILE).read_text()) for path in (out, prepared_dir))
    assert {key: value for key, value in ours.items() if key != "command"} == {
        key: value for key, value in reference.items() if key != "command"
    }
    other_seed = tmp_path / "other-seed"
    assert prepare(corpus_file, tokenizer_dir, other_seed, settings[0], settings[1], "--seed", "8") == 0
    assert (other_seed / files[0]).read_bytes() != (prepared_dir / files[0]).read_bytes()


def test_over_long_sentences_are_truncated_and_counted(tokenizer_dir: Path, tmp_path: Path):
    long_sentence = " ".join(["word"] * 300)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(f"Short one here.\n{long_sentence}\nAnother short.\n\nSecond document.\nIt has two lines.\n\n")
    out = tmp_path / "out"
    assert prepare(corpus, tokenizer_dir, out, "--max-seq-len", "32") == 0
    metadata = json.loads((out / METADATA_FILE).read_text())
    assert metadata["counts"]["truncated_sentences"] == 1
    assert PretrainingDataset(out).sequence_lengths().max() <= 32


def test_dataset_rejects_truncated_shards(prepared_dir: Path, tmp_path: Path):
    broken = tmp_path / "broken"
    for path in prepared_dir.rglob("*"):
        if path.is_file():
            (broken / path.relative_to(prepared_dir)).parent.mkdir(parents=True, exist_ok=True)
            (broken / path.relative_to(prepared_dir)).write_bytes(path.read_bytes())
    victim = broken / "train" / "00000.a_lengths.bin"
    victim.write_bytes(victim.read_bytes()[:-4])
    with pytest.raises(InputError, match=r"00000\.a_lengths\.bin: \d+ bytes, the manifest says"):
        PretrainingDataset(broken)


def test_validation_split_must_exist(prepared_dir: Path):
    with pytest.raises(Exception, match="no 'validation' split.*--validation-fraction"):
        PretrainingDataset(prepared_dir, split="validation")


BAD_CORPORA = {
    "not-utf8": (b"Fine sentence one.\nFine sentence two.\n\nCaf\xe9 in Latin-1.\n\n", ":4: not UTF-8"),
    "empty": (b"", "corpus file is empty"),
    "blank-only": (b"\n  \n\t\n\n", "only blank lines"),
    "single-document": (b"One document.\nWith two sentences.\n", "single document"),
}


def assert_one_line_error_and_nothing_written(capsys, directory: Path, expected: str, keep: set[str]) -> str:
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and expected in stderr, stderr
    assert {path.name for path in directory.iterdir()} == keep  # no out dir, no staging dir
    return stderr


@pytest.mark.parametrize("case", sorted(BAD_CORPORA))
def test_bad_corpus_is_one_line_error_and_no_output(case: str, tokenizer_dir: Path, tmp_path: Path, capsys):
    content, expected = BAD_CORPORA[case]
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(content)
    assert prepare(corpus, tokenizer_dir, tmp_path / "out") == 2
    stderr = assert_one_line_error_and_nothing_written(capsys, tmp_path, expected, {"corpus.txt"})
    assert str(corpus) in stderr


def test_bad_corpus_among_good_files_is_named(corpus_file: Path, tokenizer_dir: Path, tmp_path: Path, capsys):
    missing = tmp_path / "missing.txt"
    assert prepare([corpus_file, missing], tokenizer_dir, tmp_path / "out") == 2
    assert_one_line_error_and_nothing_written(capsys, tmp_path, f"{missing}: corpus file not found", set())


def test_missing_tokenizer_directory(corpus_file: Path, tmp_path: Path, capsys):
    assert prepare(corpus_file, tmp_path / "no-tokenizer", tmp_path / "out") == 2
    assert_one_line_error_and_nothing_written(capsys, tmp_path, "no-tokenizer: tokenizer directory not found", set())


def test_a_full_disk_is_one_line_and_leaves_nothing(corpus_file, tokenizer_dir, tmp_path, capsys, monkeypatch):
    def no_space(self, array):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("fastbert.data.shards._HashedFile.write", no_space)
    assert prepare(corpus_file, tokenizer_dir, tmp_path / "out") == 2
    assert_one_line_error_and_nothing_written(capsys, tmp_path, f"{tmp_path / 'out'}: no space left on device", set())


def test_a_killed_runs_staging_is_removed_at_the_next_start(corpus_file, tokenizer_dir, tmp_path, capsys):
    stale = tmp_path / ".out.tmp-k1ll3d"
    (stale / ".token-store").mkdir(parents=True)
    (stale / ".token-store" / "tokens.bin").write_bytes(b"\0" * 1000)
    unrelated = tmp_path / ".other.tmp-keep"
    unrelated.mkdir()
    assert prepare(corpus_file, tokenizer_dir, tmp_path / "out") == 0
    assert f"removed {stale}, the staging directory of an interrupted run" in capsys.readouterr().err
    assert sorted(path.name for path in tmp_path.iterdir()) == [".other.tmp-keep", "out"]


def test_sigterm_leaves_no_staging_directory(shared_data, tokenizer_dir, tmp_path):
    corpus = sorted(str(path) for path in (shared_data / "corpus").glob("wiki_0*.txt"))
    command = [sys.executable, "-m", "fastbert", "data", "prepare", "--corpus", *corpus, "--tokenizer", str(tokenizer_dir),
               "--out", str(tmp_path / "out"), "--workers", "1"]
    process = subprocess.Popen(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".out.tmp-*/.token-store/tokens.bin")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, process.communicate()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []
