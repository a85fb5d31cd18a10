"""Memory-mapped NSP/MLM pretraining shards written by ``fastbert data prepare``.

A shard directory holds, for n pairs:

- ``tokens.npy``: A then B token ids of every pair back to back, no special tokens
  (uint16 when the vocabulary fits, else int32);
- ``offsets.npy``: int64 [n + 1], pair i is ``tokens[offsets[i]:offsets[i+1]]``;
- ``a_lengths.npy``: int32 [n], tokens of segment A;
- ``is_random_next.npy``: uint8 [n], 1 when B comes from another document (NotNext);
- ``metadata.json``: tokenizer identity and special ids, preparation settings, counts.

Special tokens are added when reading, so they cost nothing on disk. Masking is not
stored: the collator draws it per batch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..errors import InputError, UserError

FORMAT = "fastbert-nsp-pairs"
FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
ARRAY_FILES = ("tokens", "offsets", "a_lengths", "is_random_next")


class PretrainingDataset:
    """``dataset[i]`` is one ``[CLS] A [SEP] B [SEP]`` sequence as numpy arrays plus its NSP label."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.metadata = _read_metadata(self.directory)
        self.tokens, self.offsets, self.a_lengths, self.is_random_next = (
            _open_array(self.directory, name) for name in ARRAY_FILES
        )
        self._validate()
        tokenizer = self.metadata["tokenizer"]
        self.vocab_size: int = tokenizer["vocab_size"]
        self.pad_id: int = tokenizer["pad_id"]
        self.cls_id: int = tokenizer["cls_id"]
        self.sep_id: int = tokenizer["sep_id"]
        self.mask_id: int = tokenizer["mask_id"]
        self.max_seq_len: int = self.metadata["max_seq_len"]

    def _validate(self) -> None:
        pairs = self.metadata["counts"]["pairs"]
        for name, length in (("offsets", pairs + 1), ("a_lengths", pairs), ("is_random_next", pairs)):
            self._check_length(name, length)
        self._check_length("tokens", int(self.offsets[-1]))

    def _check_length(self, name: str, length: int) -> None:
        shape = getattr(self, name).shape
        if shape != (length,):
            path = self.directory / f"{name}.npy"
            raise InputError(path, f"shape {shape}, expected ({length},): truncated or mixed shards?")

    def __len__(self) -> int:
        return len(self.a_lengths)

    def sequence_lengths(self) -> np.ndarray:
        """int64 [n]: tokens per sequence including [CLS] and both [SEP] (for packing, without reading tokens)."""
        return np.diff(self.offsets) + 3

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"pair {index} out of range for {len(self)} pairs")
        index %= len(self)
        start, end = int(self.offsets[index]), int(self.offsets[index + 1])
        a_length = int(self.a_lengths[index])
        pair = self.tokens[start:end]
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
            "next_sentence_label": int(self.is_random_next[index]),
            "index": index,
        }


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
        raise InputError(path, f"format {found}, expected {FORMAT!r} version {FORMAT_VERSION}")
    for key in ("tokenizer", "counts", "max_seq_len"):
        if key not in metadata:
            raise InputError(path, f"missing key {key!r}")
    return metadata


def _open_array(directory: Path, name: str) -> np.ndarray:
    path = directory / f"{name}.npy"
    try:
        return np.load(path, mmap_mode="r")
    except FileNotFoundError:
        raise InputError(path, "missing shard file") from None
    except ValueError as err:
        raise InputError(path, f"not a numpy array file ({err})") from None
