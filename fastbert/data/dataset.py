"""Reading prepared pretraining data: one split of a directory, or a weighted blend of several.

A directory written by ``fastbert data prepare`` holds ``metadata.json`` (settings, counts,
and per split the manifest of its shards, see :mod:`fastbert.data.shards`), the shards
under ``train/`` (and ``validation/`` when documents were held out) and the tokenizer it
was prepared with under ``tokenizer/``. Every path in the metadata is relative, so the
directory can be moved or copied to every node.

Opening reads the metadata and checks each shard file's size against its manifest, nothing
else: a shard is memory-mapped when one of its pairs is first read, so a rank reads only
the pairs it trains on. Special tokens are added when reading, so they cost nothing on
disk. Masking is not stored: the collator draws it per batch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError, UserError
from .shards import ARRAYS, PAIR_ARRAY_DTYPES

FORMAT = "fastbert-nsp-pairs"
FORMAT_VERSION = 2
METADATA_FILE = "metadata.json"
TOKENIZER_DIR = "tokenizer"


class PretrainingDataset:
    """``dataset[i]`` is one ``[CLS] A [SEP] B [SEP]`` sequence of a split as numpy arrays plus its NSP label."""

    def __init__(self, directory: str | os.PathLike, split: str = "train"):
        self.directory = Path(directory)
        self.split = split
        self.metadata = _read_metadata(self.directory)
        splits = self.metadata["splits"]
        if split not in splits:
            held_out = "" if split != "validation" else " (prepare it with --validation-fraction or --validation-documents)"
            raise UserError(f"{self.directory}: no {split!r} split; it has {', '.join(splits)}{held_out}")
        self.manifest: list[dict] = splits[split]["shards"]
        self.token_dtype = np.dtype(self.metadata["token_dtype"]).newbyteorder("<")
        self._check_files()
        self.shard_starts = np.concatenate([[0], np.cumsum([shard["pairs"] for shard in self.manifest])]).astype(np.int64)
        self._shards: dict[int, dict[str, np.ndarray]] = {}
        self.tokenizer = self.metadata["tokenizer"]
        self.vocab_size: int = self.tokenizer["vocab_size"]
        self.pad_id: int = self.tokenizer["pad_id"]
        self.cls_id: int = self.tokenizer["cls_id"]
        self.sep_id: int = self.tokenizer["sep_id"]
        self.mask_id: int = self.tokenizer["mask_id"]
        self.max_seq_len: int = self.metadata["max_seq_len"]

    @property
    def name(self) -> str:
        return f"{self.directory} ({self.split})"

    @property
    def tokenizer_dir(self) -> Path:
        return self.directory / self.tokenizer["path"]

    def _check_files(self) -> None:
        for shard in self.manifest:
            for array in ARRAYS:
                entry = shard["files"][array]
                path = self.directory / entry["path"]
                try:
                    size = path.stat().st_size
                except FileNotFoundError:
                    raise InputError(path, "missing shard file") from None
                if size != entry["bytes"]:
                    raise InputError(path, f"{size} bytes, the manifest says {entry['bytes']}: truncated or mixed shards?")

    def _shard(self, shard: int) -> dict[str, np.ndarray]:
        if shard not in self._shards:
            dtypes = {"tokens": self.token_dtype, **PAIR_ARRAY_DTYPES}
            self._shards[shard] = {
                array: np.memmap(self.directory / self.manifest[shard]["files"][array]["path"], dtype=dtypes[array], mode="r")
                for array in ARRAYS
            }
        return self._shards[shard]

    def __getstate__(self) -> dict:
        # DataLoader workers may receive the dataset pickled: send no mapped shard, each maps its own.
        return {**self.__dict__, "_shards": {}}

    def __len__(self) -> int:
        return int(self.shard_starts[-1])

    def sequence_lengths(self) -> np.ndarray:
        """int64 [n]: tokens per sequence including [CLS] and both [SEP] (for packing; reads every shard's offsets)."""
        parts = [np.diff(self._shard(shard)["offsets"]) for shard in range(len(self.manifest))]
        return np.concatenate(parts) + 3 if parts else np.zeros(0, np.int64)

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"pair {index} out of range for {len(self)} pairs")
        index %= len(self)
        shard = int(np.searchsorted(self.shard_starts, index, side="right")) - 1
        arrays = self._shard(shard)
        local = index - int(self.shard_starts[shard])
        start, end = int(arrays["offsets"][local]), int(arrays["offsets"][local + 1])
        a_length = int(arrays["a_lengths"][local])
        pair = arrays["tokens"][start:end]
        input_ids = np.empty(end - start + 3, dtype=np.int64)
        input_ids[0] = self.cls_id
        input_ids[1 : a_length + 1] = pair[:a_length]
        input_ids[a_length + 1] = self.sep_id
        input_ids[a_length + 2 : -1] = pair[a_length:]
        input_ids[-1] = self.sep_id
        token_type_ids = np.zeros_like(input_ids)
        token_type_ids[a_length + 2 :] = 1
        return {
            "input_ids": input_ids,
            "token_type_ids": token_type_ids,
            "next_sentence_label": int(arrays["is_random_next"][local]),
            "index": index,
        }


class BlendedDataset:
    """Several prepared datasets read as one, each given a share of every epoch by its weight.

    An epoch has as many pairs as the parts together; part i gets ``weight_i / sum(weights)``
    of them (largest remainder rounding), spread evenly over its own pairs: a part given more
    than it has repeats its pairs, one given fewer uses an evenly spaced subset (its pairs
    are in document order, so the subset spans all its documents). The training order
    shuffles across parts. All parts must come from the same tokenizer.
    """

    def __init__(self, parts: Sequence[tuple[PretrainingDataset, float]]):
        if not parts:
            raise UserError("a blend needs at least one dataset")
        for dataset, weight in parts:
            if not weight > 0:
                raise UserError(f"{dataset.directory}: blend weight must be positive, got {weight}")
            if dataset.tokenizer["hash"] != parts[0][0].tokenizer["hash"]:
                raise UserError(f"{dataset.directory} and {parts[0][0].directory} were prepared with different "
                                "tokenizers; a blend needs one vocabulary")
        self.parts = [dataset for dataset, _ in parts]
        weights = np.array([weight for _, weight in parts], dtype=np.float64)
        self.counts = _largest_remainder(weights / weights.sum(), sum(map(len, self.parts)))
        self.starts = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)
        first = self.parts[0]
        self.tokenizer = first.tokenizer
        self.tokenizer_dir = first.tokenizer_dir
        self.vocab_size, self.pad_id, self.cls_id = first.vocab_size, first.pad_id, first.cls_id
        self.sep_id, self.mask_id = first.sep_id, first.mask_id
        self.max_seq_len = max(dataset.max_seq_len for dataset in self.parts)

    @property
    def name(self) -> str:
        return " + ".join(f"{dataset.name} x{count / len(self):.2f}" for dataset, count in zip(self.parts, self.counts))

    def __len__(self) -> int:
        return int(self.starts[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """(part, pair within that part) of blend pair ``index``."""
        part = int(np.searchsorted(self.starts, index, side="right")) - 1
        slot = index - int(self.starts[part])
        return part, slot * len(self.parts[part]) // int(self.counts[part])

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"pair {index} out of range for {len(self)} pairs")
        index %= len(self)
        part, pair = self.locate(index)
        return {**self.parts[part][pair], "index": index}


def _largest_remainder(shares: np.ndarray, total: int) -> np.ndarray:
    exact = shares * total
    counts = np.floor(exact).astype(np.int64)
    counts[np.argsort(counts - exact, kind="stable")[: total - int(counts.sum())]] += 1
    if (counts == 0).any():
        raise UserError("a blend weight is too small to give its dataset a single pair per epoch")
    return counts


def parse_data_sources(specs: Sequence[str | os.PathLike]) -> list[tuple[Path, float]]:
    """``DIR`` or ``DIR:WEIGHT`` each (weight 1 when left out)."""
    sources = []
    for spec in map(str, specs):
        directory, _, weight = spec.rpartition(":")
        if directory and _is_number(weight):
            sources.append((Path(directory), float(weight)))
        else:
            sources.append((Path(spec), 1.0))
    return sources


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def open_pretraining_data(
    specs: str | os.PathLike | Sequence[str | os.PathLike], split: str = "train"
) -> PretrainingDataset | BlendedDataset:
    """One prepared directory, or a blend of several given as ``DIR:WEIGHT``."""
    sources = parse_data_sources([specs] if isinstance(specs, (str, os.PathLike)) else specs)
    if len(sources) == 1 and sources[0][1] == 1.0:
        return PretrainingDataset(sources[0][0], split)
    return BlendedDataset([(PretrainingDataset(directory, split), weight) for directory, weight in sources])


def read_split_names(directory: str | os.PathLike) -> list[str]:
    """The splits a prepared directory holds ("train", and "validation" when documents were held out)."""
    return list(_read_metadata(Path(directory))["splits"])


def _read_metadata(directory: Path) -> dict:
    if not directory.is_dir():
        raise UserError(f"{directory}: pretraining data directory not found (run `fastbert data prepare`)")
    path = directory / METADATA_FILE
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "missing; not a `fastbert data prepare` output directory") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(path, f"not valid JSON ({err})") from None
    if metadata.get("format") != FORMAT or metadata.get("format_version") != FORMAT_VERSION:
        found = f"{metadata.get('format')!r} version {metadata.get('format_version')!r}"
        raise InputError(path, f"format {found}, expected {FORMAT!r} version {FORMAT_VERSION} "
                         "(prepare the corpus again with this fastbert)")
    for key in ("tokenizer", "splits", "max_seq_len", "token_dtype"):
        if key not in metadata:
            raise InputError(path, f"missing key {key!r}")
    return metadata
