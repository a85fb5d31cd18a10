"""fastbert.atomic: what exists at the final name is complete; failures leave the old version and no debris."""

import json
import os
import stat
from pathlib import Path

import pytest

from fastbert import atomic


def test_a_file_appears_only_once_complete(tmp_path: Path):
    path = tmp_path / "out.txt"
    path.write_text("old")

    def write(tmp: Path) -> None:
        with tmp.open("w") as f:
            f.write("half")
            f.flush()
            assert path.read_text() == "old"  # a reader mid-write still sees the previous version
            f.write(" and the rest")

    atomic.write_file(path, write)
    assert path.read_text() == "half and the rest"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path: Path):
    path = tmp_path / "model.safetensors"
    path.write_text("old")

    def write(tmp: Path) -> None:
        tmp.write_text("partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        atomic.write_file(path, write)
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["model.safetensors"]


def test_text_and_json_create_the_folder_and_follow_the_umask(tmp_path: Path):
    path = tmp_path / "new" / "config.json"
    atomic.write_json(path, {"b": 1, "a": [1, 2]}, sort_keys=True)
    assert path.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    atomic.write_json(path, {"b": 1, "a": 2}, indent=None)
    assert json.loads(path.read_text()) == {"b": 1, "a": 2} and path.read_text().endswith('"a": 2}\n')
    atomic.write_text(path, "ünïcode")
    assert path.read_text(encoding="utf-8") == "ünïcode"
    umask = os.umask(0o022)
    try:
        atomic.write_text(path, "x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not mkstemp's private 0600


def test_staging_directory_replaces_an_existing_directory(tmp_path: Path):
    target = tmp_path / "shards"
    target.mkdir()
    (target / "stale.npy").write_text("old")
    with atomic.staging_directory(target) as staging:
        assert staging.parent == tmp_path and staging.name.startswith(".shards.tmp-")
        assert list(staging.iterdir()) == [] and (target / "stale.npy").exists()
        (staging / "fresh.npy").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["fresh.npy"]
    assert os.listdir(tmp_path) == ["shards"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o777 & ~_umask()  # not mkdtemp's private 0700


def test_staging_directory_cleans_up_after_an_exception(tmp_path: Path):
    target = tmp_path / "tokenizer"
    target.mkdir()
    (target / "vocab.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic.staging_directory(target) as staging:
            (staging / "vocab.txt").write_text("half")
            raise KeyboardInterrupt
    assert (target / "vocab.txt").read_text() == "old"
    assert os.listdir(tmp_path) == ["tokenizer"]


def test_staging_directory_creates_a_missing_target_and_its_parent(tmp_path: Path):
    target = tmp_path / "cache" / "cola"
    with atomic.staging_directory(target) as staging:
        (staging / "train.tsv").write_text("rows")
    assert (target / "train.tsv").read_text() == "rows"
    assert os.listdir(target.parent) == ["cola"]


def test_replace_directory_swaps_a_finished_directory_in(tmp_path: Path):
    built, target = tmp_path / "work" / "squad", tmp_path / "squad"
    built.mkdir(parents=True)
    (built / "train.json").write_text("new")
    target.mkdir()
    (target / "old.json").write_text("old")
    atomic.replace_directory(built, target)
    assert [p.name for p in target.iterdir()] == ["train.json"] and not built.exists()


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask
