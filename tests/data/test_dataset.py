"""Reading prepared data as one: a held-out split, weighted blends of directories, `fastbert pretrain` on them."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fastbert.cli import main
from fastbert.data.corpus import read_documents
from fastbert.data.dataset import BlendedDataset, PretrainingDataset, open_pretraining_data, parse_data_sources
from fastbert.data.prepare import PrepareSettings, prepare_pretraining_data
from fastbert.errors import UserError
from fastbert.tokenizer import train_tokenizer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def two_directories(corpus_file, tokenizer_dir, tmp_path_factory) -> tuple[Path, Path]:
    """Two prepared directories from disjoint halves of the corpus (B with a held-out split)."""
    root = tmp_path_factory.mktemp("blend")
    documents = read_documents([corpus_file])
    outs = []
    for name, part, validation in (("a", documents[:25], 0), ("b", documents[25:], 3)):
        corpus = root / f"{name}.txt"
        corpus.write_text("".join("\n".join(document) + "\n\n" for document in part), encoding="utf-8")
        settings = PrepareSettings(max_seq_len=64, validation_documents=validation, shard_mib=0.03)
        prepare_pretraining_data([str(corpus)], tokenizer_dir, root / name, settings)
        outs.append(root / name)
    return outs[0], outs[1]


def items_equal(left: dict, right: dict) -> bool:
    return (np.array_equal(left["input_ids"], right["input_ids"])
            and left["next_sentence_label"] == right["next_sentence_label"])


def test_blend_reads_each_part_in_its_share(two_directories):
    a, b = (PretrainingDataset(directory) for directory in two_directories)
    blend = open_pretraining_data([f"{two_directories[0]}:0.7", f"{two_directories[1]}:0.3"])
    assert isinstance(blend, BlendedDataset) and len(blend) == len(a) + len(b)
    located = [blend.locate(index) for index in range(len(blend))]
    share_a = sum(part == 0 for part, _ in located) / len(blend)
    assert abs(share_a - 0.7) <= 1 / len(blend)
    for part, dataset in ((0, a), (1, b)):
        pairs = [pair for owner, pair in located if owner == part]
        # Spread evenly: a part given more than it has uses every pair, one given fewer spans all of them.
        assert pairs == sorted(pairs) and pairs[0] == 0 and pairs[-1] >= len(dataset) * (1 - 2 / len(pairs))
        if len(pairs) >= len(dataset):
            assert set(pairs) == set(range(len(dataset)))
    for index in range(0, len(blend), 7):
        part, pair = located[index]
        assert items_equal(blend[index], (a, b)[part][pair]) and blend[index]["index"] == index


def test_blend_of_validation_splits_and_unknown_split(two_directories):
    validation = PretrainingDataset(two_directories[1], split="validation")
    assert len(validation) == json.loads((two_directories[1] / "metadata.json").read_text())["splits"]["validation"]["pairs"]
    with pytest.raises(UserError, match="no 'validation' split"):
        open_pretraining_data([str(two_directories[0]), str(two_directories[1])], split="validation")


def test_data_sources_parse_weights(two_directories):
    assert parse_data_sources(["a", "dir/b:0.25", "c:3", "odd:name"]) == [
        (Path("a"), 1.0), (Path("dir/b"), 0.25), (Path("c"), 3.0), (Path("odd:name"), 1.0)]
    with pytest.raises(UserError, match="blend weight must be positive, got 0.0"):
        open_pretraining_data([str(two_directories[0]), f"{two_directories[1]}:0"])


def test_blend_refuses_two_vocabularies(two_directories, corpus_file, tmp_path):
    other = tmp_path / "other-tokenizer"
    train_tokenizer([corpus_file], vocab_size=1500, lowercase=True, out_dir=other)
    prepare_pretraining_data([str(corpus_file)], other, tmp_path / "c", PrepareSettings(max_seq_len=64))
    with pytest.raises(UserError, match="different tokenizers"):
        open_pretraining_data([str(two_directories[0]), f"{tmp_path / 'c'}:2"])


def test_a_moved_directory_still_opens(two_directories, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(two_directories[1], moved)
    original = PretrainingDataset(two_directories[1])
    copy = PretrainingDataset(moved)
    assert copy.tokenizer_dir == moved / "tokenizer"
    assert len(copy) == len(original) and items_equal(copy[len(copy) - 1], original[len(original) - 1])


def test_pretrain_trains_from_shards_and_from_a_blend(two_directories, tmp_path):
    a, b = map(str, two_directories)
    base = ["pretrain", "--config", str(REPO / "configs/pretrain/tiny.yaml"), "--max-steps", "3", "--batch-size", "4",
            "--log-every", "1", "--save-every", "0", "--no-progress"]
    for name, data in (("single", [b]), ("blend", [f"{a}:0.7", f"{b}:0.3"])):
        out = tmp_path / name
        assert main([*base, "--data", *data, "--out", str(out)]) == 0
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert [record["step"] for record in records if "loss" in record] == [1, 2, 3]
        assert (out / "model" / "vocab.txt").is_file()
