"""Flat-layout batches, pair encoding and the seeded batch order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastbert.finetune.collate import Item, collate, epoch_order, rank_batches
from fastbert.finetune.encoding import EncodedSequence, PairEncoder, longest_first


def _seq(*ids, second=0):
    return EncodedSequence(list(ids), [0] * (len(ids) - second) + [1] * second)


def test_collate_flat_layout():
    items = [Item((_seq(101, 7, 102),), {"labels": 1}), Item((_seq(101, 8, 9, 102, 5, 102, second=2),), {"labels": 0})]
    batch = collate(items)
    assert batch.inputs.input_ids.tolist() == [101, 7, 102, 101, 8, 9, 102, 5, 102]
    assert batch.inputs.token_type_ids.tolist() == [0, 0, 0, 0, 0, 0, 0, 1, 1]
    assert batch.inputs.position_ids.tolist() == [0, 1, 2, 0, 1, 2, 3, 4, 5]
    assert batch.inputs.layout.cu_seqlens.tolist() == [0, 3, 9] and batch.inputs.layout.cu_seqlens.dtype == torch.int32
    assert batch.inputs.layout.max_seqlen == 6
    assert batch.targets["labels"].tolist() == [1, 0] and batch.targets["labels"].dtype == torch.long
    assert "num_choices" not in batch.targets


def test_collate_regression_and_choices():
    regression = collate([Item((_seq(1, 2),), {"labels": 3.5}), Item((_seq(1),), {"labels": 0.25})])
    assert regression.targets["labels"].dtype == torch.float32 and regression.targets["labels"].tolist() == [3.5, 0.25]
    choices = collate([Item(tuple(_seq(1, c) for c in range(4)), {"labels": 2})] * 2)
    assert choices.targets["num_choices"] == 4 and choices.inputs.layout.cu_seqlens.numel() == 9 and choices.targets["labels"].tolist() == [2, 2]


def test_epoch_order_is_seeded_and_ranks_split_it():
    first = epoch_order(100, seed=1, epoch=1)
    assert np.array_equal(first, epoch_order(100, seed=1, epoch=1))
    assert not np.array_equal(first, epoch_order(100, seed=1, epoch=2))
    assert not np.array_equal(first, epoch_order(100, seed=2, epoch=1))
    assert sorted(first.tolist()) == list(range(100))
    whole = rank_batches(first, 8, rank=0, world_size=1)
    assert len(whole) == 13 and np.array_equal(np.concatenate(whole), first)
    ranks = [rank_batches(first, 8, rank=r, world_size=3) for r in range(3)]
    assert [len(r) for r in ranks] == [4, 4, 4]  # 13 batches: the 13th is dropped to keep lockstep
    assert np.array_equal(ranks[1][0], whole[1]) and np.array_equal(ranks[0][1], whole[3])


@pytest.mark.parametrize(
    ("len_a", "len_b", "budget", "expected"),
    [(3, 4, 10, (3, 4)), (2, 20, 10, (2, 8)), (20, 3, 10, (7, 3)), (9, 8, 10, (5, 5)), (9, 9, 11, (6, 5))],
)
def test_longest_first(len_a, len_b, budget, expected):
    assert longest_first(len_a, len_b, budget) == expected


def test_pair_encoder_ignores_saved_padding_and_truncation(minilm_tokenizer):
    assert minilm_tokenizer.padding is not None  # the checkpoint's tokenizer.json pads to 128
    encoder = PairEncoder(minilm_tokenizer)
    single, pair = encoder.encode(["Hello world"], None, 64)[0], encoder.encode(["Hello world"], ["again"], 64)[0]
    hello, world, again = (minilm_tokenizer.token_to_id(w) for w in ("hello", "world", "again"))
    assert single.input_ids == [encoder.cls_id, hello, world, encoder.sep_id]
    assert pair.input_ids == [encoder.cls_id, hello, world, encoder.sep_id, again, encoder.sep_id]
    assert pair.token_type_ids == [0, 0, 0, 0, 1, 1]
    long = encoder.encode(["word " * 100], ["other " * 100], 20)[0]
    assert len(long.input_ids) == 20 and sum(long.token_type_ids) == 9
