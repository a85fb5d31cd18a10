"""The token store of data preparation: written in pass 1, read back by slices in pass 2 without memory maps."""

from pathlib import Path

import numpy as np
import pytest

import fastbert.data.prepare as prepare_module
from fastbert.data.prepare import PrepareSettings, prepare_pretraining_data
from fastbert.data.shards import ShardWriter
from fastbert.data.store import FileArray, TokenStore, TokenStoreWriter


def test_file_array_slices_read_as_numpy_slices(tmp_path: Path):
    values = np.random.default_rng(0).integers(0, 30_000, size=1000).astype(np.uint16)
    (tmp_path / "values.bin").write_bytes(values.tobytes())
    array = FileArray(tmp_path / "values.bin", np.uint16)
    assert len(array) == 1000
    for start, stop in ((0, 1000), (17, 18), (999, 1000), (500, 400), (-5, None), (990, 2000)):
        np.testing.assert_array_equal(array[start:stop], values[start:stop])
    with pytest.raises(TypeError, match="by slices"):
        array[3]
    with pytest.raises(ValueError, match="contiguous"):
        array[::2]
    array.close()


def test_store_reads_back_what_was_written(tmp_path: Path):
    writer = TokenStoreWriter(tmp_path / "store", np.uint16)
    writer.add(np.arange(10, dtype=np.int64), np.array([3, 3, 4]), np.array([2, 1]))
    writer.add(np.arange(10, 15, dtype=np.int64), np.array([5]), np.array([1]))
    writer.close()
    writer.write_split("train", np.array([0, 2]))
    store = TokenStore(tmp_path / "store", np.uint16)
    corpus = store.corpus("train")
    assert corpus.num_documents == 2
    assert corpus.document_ends(0) == [0, 3, 6] and corpus.document_ends(1) == [10, 15]
    np.testing.assert_array_equal(store.tokens[10:15], np.arange(10, 15))
    store.close()


def test_pairing_maps_no_page_of_the_store(corpus_file, tokenizer_dir, tmp_path, monkeypatch):
    """Pages of a mapped file count towards the process's resident memory: random B segments read
    through a map made the peak RSS grow with the corpus. The store is read with pread instead."""
    maps_while_pairing = []
    add = ShardWriter.add

    def add_and_look(self, chunk):
        maps_while_pairing.append(Path("/proc/self/maps").read_text())
        add(self, chunk)

    monkeypatch.setattr(ShardWriter, "add", add_and_look)
    monkeypatch.setattr(prepare_module, "PAIRING_DOCUMENTS", 4)
    prepare_pretraining_data([str(corpus_file)], tokenizer_dir, tmp_path / "out", PrepareSettings(max_seq_len=64),
                             workers=1)  # in this process, so its maps are the pairing's
    assert len(maps_while_pairing) > 2
    assert not any(prepare_module.STORE_DIR in maps for maps in maps_while_pairing)
