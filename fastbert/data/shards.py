"""Shards of NSP pairs: bounded-size files written as pairs stream in, listed in a manifest.

A shard of n pairs is four flat little-endian arrays beside each other,
``<split>/<NNNNN>.<array>.bin``:

- ``tokens``: A then B token ids of every pair back to back, no special tokens
  (uint16 when the vocabulary fits, else int32);
- ``offsets``: int64 [n + 1], pair i is ``tokens[offsets[i]:offsets[i+1]]``;
- ``a_lengths``: int32 [n], tokens of segment A;
- ``is_random_next``: uint8 [n], 1 when B comes from another document (NotNext).

The manifest entry of a shard gives its pair and token counts and, per file, its path
relative to the prepared directory, size and SHA-256 (computed while writing, so nothing
is read back). A shard is closed once its tokens reach the size bound, so only the
current shard's small per-pair arrays are held in memory.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ARRAYS = ("tokens", "offsets", "a_lengths", "is_random_next")
PAIR_ARRAY_DTYPES = {"offsets": np.dtype("<i8"), "a_lengths": np.dtype("<i4"), "is_random_next": np.dtype("u1")}


@dataclass(frozen=True)
class PairChunk:
    """Consecutive pairs, materialized: what a pairing task hands to the shard writer."""

    tokens: np.ndarray  # A then B of every pair back to back
    lengths: np.ndarray  # int64 [pairs]: A + B tokens
    a_lengths: np.ndarray  # int32 [pairs]
    is_random_next: np.ndarray  # uint8 [pairs]

    def __len__(self) -> int:
        return len(self.lengths)

    def slice(self, start: int, stop: int) -> PairChunk:
        ends = np.concatenate([[0], np.cumsum(self.lengths)])
        return PairChunk(self.tokens[ends[start] : ends[stop]], self.lengths[start:stop],
                         self.a_lengths[start:stop], self.is_random_next[start:stop])


def array_path(split: str, shard: int, array: str) -> str:
    return f"{split}/{shard:05d}.{array}.bin"


class _HashedFile:
    def __init__(self, path: Path):
        self.file = open(path, "wb")
        self.sha256 = hashlib.sha256()
        self.bytes = 0

    def write(self, array: np.ndarray) -> None:
        view = memoryview(np.ascontiguousarray(array)).cast("B")
        self.file.write(view)
        self.sha256.update(view)
        self.bytes += len(view)

    def close(self) -> dict:
        self.file.close()
        return {"bytes": self.bytes, "sha256": self.sha256.hexdigest()}


class ShardWriter:
    """Writes one split's pairs, in order, into shards of at most ``max_shard_bytes`` of tokens (one pair at least)."""

    def __init__(self, root: Path, split: str, token_dtype: np.dtype, max_shard_bytes: int):
        self.root, self.split = root, split
        self.token_dtype = np.dtype(token_dtype).newbyteorder("<")
        self.max_shard_tokens = max(1, max_shard_bytes // self.token_dtype.itemsize)
        (root / split).mkdir(parents=True)
        self.manifest: list[dict] = []
        self._open: dict[str, _HashedFile] | None = None
        self._pairs = self._tokens = 0  # in the open shard

    def add(self, chunk: PairChunk) -> None:
        start = 0
        while start < len(chunk):
            if self._open is None:
                self._start_shard()
            room = self.max_shard_tokens - self._tokens
            fits = int(np.searchsorted(np.cumsum(chunk.lengths[start:]), room, side="right"))
            if fits == 0 and self._pairs == 0:
                fits = 1  # a pair longer than the bound still gets a shard
            if fits == 0:
                self._finish_shard()
                continue
            self._write(chunk.slice(start, start + fits))
            start += fits
            if self._tokens >= self.max_shard_tokens:
                self._finish_shard()

    def _start_shard(self) -> None:
        shard = len(self.manifest)
        self._open = {array: _HashedFile(self.root / array_path(self.split, shard, array)) for array in ARRAYS}
        self._open["offsets"].write(np.zeros(1, PAIR_ARRAY_DTYPES["offsets"]))
        self._pairs = self._tokens = 0

    def _write(self, chunk: PairChunk) -> None:
        files = self._open
        files["tokens"].write(chunk.tokens.astype(self.token_dtype, copy=False))
        files["offsets"].write((self._tokens + np.cumsum(chunk.lengths)).astype(PAIR_ARRAY_DTYPES["offsets"]))
        files["a_lengths"].write(chunk.a_lengths.astype(PAIR_ARRAY_DTYPES["a_lengths"], copy=False))
        files["is_random_next"].write(chunk.is_random_next.astype(PAIR_ARRAY_DTYPES["is_random_next"], copy=False))
        self._pairs += len(chunk)
        self._tokens += len(chunk.tokens)

    def _finish_shard(self) -> None:
        shard = len(self.manifest)
        files = {array: {"path": array_path(self.split, shard, array), **file.close()} for array, file in self._open.items()}
        self.manifest.append({"pairs": self._pairs, "tokens": self._tokens, "files": files})
        self._open = None

    def close(self) -> list[dict]:
        """Finish the last shard; the manifest entries, in order."""
        if self._open is not None:
            self._finish_shard()
        return self.manifest
