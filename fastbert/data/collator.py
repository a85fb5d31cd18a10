"""Batch collation for pretraining: dynamic MLM masking into the model's flat (unpadded) layout.

Masking is drawn at batch time, never stored: the mask of sample ``i`` in epoch ``e``
comes from ``numpy.random.default_rng([seed, e, i])``, so a resumed run sees the same
masks without saving any generator state. Per sequence, ``round(0.15 * n)`` of its ``n``
maskable tokens (at least one) are chosen; of those 80% become [MASK], 10% a random
vocabulary token and 10% stay. Special tokens are never chosen.

Also here: :func:`to_padded` (flat -> transformers' padded layout) and
:func:`pack_sequences` / :class:`PackedBatchSampler` (rows of at most ``max_seq_len``
tokens, for batches with a fixed token budget).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from ..model.inputs import IGNORE_INDEX, Batch, BertInputs
from ..tokenizer import WordPieceTokenizer


class PretrainingCollator:
    """Turns ``PretrainingDataset`` items into one flat :class:`Batch` with dynamic MLM masking.

    Output: :meth:`BertInputs.from_flat` inputs and the targets ``labels`` (int64 [N],
    IGNORE_INDEX where not masked) and ``next_sentence_label`` (int64 [S], 1 = NotNext).
    Call :meth:`set_epoch` before each epoch's DataLoader iterator is created (with
    ``persistent_workers`` the workers keep their copy).
    """

    def __init__(
        self,
        never_mask: np.ndarray,
        replacement_ids: np.ndarray,
        mask_id: int,
        seed: int,
        mlm_probability: float = 0.15,
        word_continuation: np.ndarray | None = None,
    ):
        """never_mask / word_continuation: bool per vocabulary id; whole-word masking when the latter is given."""
        if not 0.0 < mlm_probability < 1.0:
            raise ValueError(f"mlm_probability must lie in (0, 1), got {mlm_probability}")
        self.never_mask = np.asarray(never_mask, dtype=bool)
        self.replacement_ids = np.asarray(replacement_ids, dtype=np.int64)
        self.mask_id = mask_id
        self.seed = seed
        self.mlm_probability = mlm_probability
        self.word_continuation = None if word_continuation is None else np.asarray(word_continuation, dtype=bool)
        self.epoch = 0

    @classmethod
    def from_tokenizer(
        cls, tokenizer: WordPieceTokenizer, seed: int, mlm_probability: float = 0.15, whole_word_masking: bool = False
    ) -> PretrainingCollator:
        """Special and reserved ('[unused0]'...) tokens are neither masked nor used as random replacements."""
        reserved = tokenizer.reserved_mask()
        reserved[list(tokenizer.special_ids)] = True
        return cls(
            never_mask=reserved,
            replacement_ids=np.flatnonzero(~reserved),
            mask_id=tokenizer.mask_id,
            seed=seed,
            mlm_probability=mlm_probability,
            word_continuation=tokenizer.continuation_mask() if whole_word_masking else None,
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __call__(self, samples: Sequence[dict]) -> Batch:
        lengths = np.fromiter((len(sample["input_ids"]) for sample in samples), np.int64, len(samples))
        cu_seqlens = np.zeros(len(samples) + 1, dtype=np.int64)
        np.cumsum(lengths, out=cu_seqlens[1:])
        sequence_of_token = np.repeat(np.arange(len(samples)), lengths)
        position_ids = np.arange(cu_seqlens[-1]) - cu_seqlens[sequence_of_token]
        original = np.concatenate([sample["input_ids"] for sample in samples]).astype(np.int64, copy=False)

        priority, action, replacement = self._draw(samples, lengths)
        maskable = ~self.never_mask[original]
        budget = self._budget(maskable, sequence_of_token, len(samples))
        if self.word_continuation is None:
            masked = _choose_tokens(maskable, priority, sequence_of_token, cu_seqlens, budget)
        else:
            starts_word = maskable & ~(self.word_continuation[original] & _previous_maskable(maskable, position_ids))
            masked = _choose_words(maskable, starts_word, priority, sequence_of_token, budget)

        input_ids = original.copy()
        input_ids[masked & (action < 0.8)] = self.mask_id
        randomized = masked & (action >= 0.8) & (action < 0.9)
        input_ids[randomized] = replacement[randomized]
        token_type_ids = np.concatenate([sample["token_type_ids"] for sample in samples]).astype(np.int64, copy=False)
        inputs = BertInputs.from_flat(
            torch.from_numpy(input_ids),
            torch.from_numpy(cu_seqlens.astype(np.int32)),
            int(lengths.max()),
            torch.from_numpy(position_ids),
            torch.from_numpy(token_type_ids),
            mlm_positions=torch.from_numpy(np.flatnonzero(masked)),  # counted here, not by the device
        )
        targets = {
            "labels": torch.from_numpy(np.where(masked, original, IGNORE_INDEX)),
            "next_sentence_label": torch.tensor([sample["next_sentence_label"] for sample in samples], dtype=torch.int64),
        }
        return Batch(inputs, targets, num_tokens=int(cu_seqlens[-1]), num_sequences=len(samples))

    def _draw(self, samples: Sequence[dict], lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per token: selection priority, 80/10/10 action, random replacement id; seeded per sample."""
        uniforms = np.concatenate(
            [
                np.random.default_rng([self.seed, self.epoch, int(sample["index"])]).random((3, length))
                for sample, length in zip(samples, lengths.tolist())
            ],
            axis=1,
        )
        replacement = self.replacement_ids[(uniforms[2] * len(self.replacement_ids)).astype(np.int64)]
        return uniforms[0], uniforms[1], replacement

    def _budget(self, maskable: np.ndarray, sequence_of_token: np.ndarray, num_sequences: int) -> np.ndarray:
        """Tokens to mask per sequence: round(p * maskable), at least one when anything is maskable."""
        candidates = np.bincount(sequence_of_token, weights=maskable, minlength=num_sequences).astype(np.int64)
        return np.minimum(np.maximum(np.rint(self.mlm_probability * candidates).astype(np.int64), 1), candidates)


def _choose_tokens(
    maskable: np.ndarray,
    priority: np.ndarray,
    sequence_of_token: np.ndarray,
    cu_seqlens: np.ndarray,
    budget: np.ndarray,
) -> np.ndarray:
    """The ``budget`` maskable tokens of lowest priority in each sequence."""
    key = np.where(maskable, priority, 2.0)  # unmaskable tokens sort last
    order = np.lexsort((key, sequence_of_token))
    sequence = sequence_of_token[order]
    rank = np.arange(len(order)) - cu_seqlens[sequence]
    masked = np.zeros(len(order), dtype=bool)
    masked[order] = rank < budget[sequence]
    return masked


def _previous_maskable(maskable: np.ndarray, position_ids: np.ndarray) -> np.ndarray:
    """Whether the previous token belongs to the same sequence and is maskable."""
    previous = np.zeros_like(maskable)
    previous[1:] = maskable[:-1]
    return previous & (position_ids > 0)


def _choose_words(
    maskable: np.ndarray,
    starts_word: np.ndarray,
    priority: np.ndarray,
    sequence_of_token: np.ndarray,
    budget: np.ndarray,
) -> np.ndarray:
    """Whole words in random order while the sequence's masked-token count stays within budget.

    The first word is always taken, so a sequence whose only words are long still gets a mask.
    """
    word_of_token = np.cumsum(starts_word) - 1
    first_tokens = np.flatnonzero(starts_word)
    word_sequence = sequence_of_token[first_tokens]
    word_length = np.bincount(word_of_token[maskable], minlength=len(first_tokens))
    order = np.lexsort((priority[first_tokens], word_sequence))
    sorted_sequence = word_sequence[order]
    sorted_length = word_length[order]
    words_before = np.zeros(len(budget) + 1, dtype=np.int64)
    np.cumsum(np.bincount(word_sequence, minlength=len(budget)), out=words_before[1:])
    cumulative = np.cumsum(sorted_length)
    tokens_before_sequence = np.concatenate([[0], cumulative])[words_before[:-1]]
    within_sequence = cumulative - tokens_before_sequence[sorted_sequence]
    first_word = np.arange(len(order)) == words_before[sorted_sequence]
    chosen = np.zeros(len(order), dtype=bool)
    chosen[order] = (within_sequence <= budget[sorted_sequence]) | first_word
    return maskable & chosen[np.maximum(word_of_token, 0)]


def to_padded(batch: Batch, pad_id: int) -> dict:
    """A flat batch in transformers' layout: keyword arguments of one row per sequence,
    ``[S, max_seqlen]``, right-padded (what a transformers model is fed in comparisons).

    Per-token ``labels`` (MLM: one per token) are padded with the ignore index; per-sequence
    ones (classification) and ``next_sentence_label`` pass through.
    """
    inputs = batch.inputs
    layout = inputs.layout
    padded = {
        "input_ids": layout.pad(inputs.input_ids, pad_id),
        "attention_mask": layout.pad(torch.ones_like(inputs.input_ids), 0),
        "token_type_ids": layout.pad(inputs.token_type_ids, 0),
    }
    for name, value in batch.targets.items():
        per_token = value.numel() == inputs.input_ids.numel()
        if per_token and value.numel() == inputs.num_sequences:
            raise ValueError("a batch of one-token sequences: per-token and per-sequence labels look alike")
        padded[name] = layout.pad(value, IGNORE_INDEX) if per_token else value
    return padded


def pack_sequences(lengths: Sequence[int] | np.ndarray, row_len: int) -> list[list[int]]:
    """Group sample indices into rows of at most row_len tokens (best-fit decreasing)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(lengths) and lengths.max() > row_len:
        raise ValueError(f"a sequence of {int(lengths.max())} tokens cannot fit a row of {row_len}")
    rows: list[list[int]] = []
    # Open rows as (free tokens, row number), kept sorted so bisect finds the tightest fit.
    free: list[tuple[int, int]] = []
    for index in np.argsort(-lengths, kind="stable").tolist():
        length = int(lengths[index])
        slot = bisect.bisect_left(free, (length, -1))
        if slot == len(free):
            rows.append([index])
            bisect.insort(free, (row_len - length, len(rows) - 1))
        else:
            room, row = free.pop(slot)
            rows[row].append(index)
            bisect.insort(free, (room - length, row))
    return rows


class PackedBatchSampler:
    """Batches of ``rows_per_batch`` packed rows: at most rows_per_batch * row_len real tokens each.

    Each epoch shuffles the samples with ``default_rng([seed, epoch])``, packs them into
    rows and shuffles the rows, so the order is reproducible for a resumed run.
    """

    def __init__(self, lengths: np.ndarray, row_len: int, rows_per_batch: int, seed: int, drop_last: bool = False):
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.row_len = row_len
        self.rows_per_batch = rows_per_batch
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0
        self._packed: tuple[int, list[list[int]]] | None = None  # (epoch, batches): packing is not free

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        if self._packed is None or self._packed[0] != self.epoch:
            self._packed = (self.epoch, self._pack_epoch())
        return self._packed[1]

    def _pack_epoch(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        shuffled = rng.permutation(len(self.lengths))
        rows = [shuffled[row].tolist() for row in pack_sequences(self.lengths[shuffled], self.row_len)]
        rows = [rows[i] for i in rng.permutation(len(rows))]
        batches = [
            [index for row in rows[start : start + self.rows_per_batch] for index in row]
            for start in range(0, len(rows), self.rows_per_batch)
        ]
        if self.drop_last and batches and len(rows) % self.rows_per_batch:
            batches.pop()
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        return len(self._batches())
