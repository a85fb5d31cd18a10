"""Dynamic masking, the flat layout, to_padded and packing."""

from pathlib import Path

import numpy as np
import pytest
import torch

from fastbert.data.collator import IGNORE_INDEX, PackedBatchSampler, PretrainingCollator, pack_sequences, to_padded
from fastbert.data.dataset import PretrainingDataset
from fastbert.model import Batch
from fastbert.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def dataset(prepared_dir: Path) -> PretrainingDataset:
    return PretrainingDataset(prepared_dir)


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir: Path):
    return load_tokenizer(tokenizer_dir)


def field(batch: Batch, name: str) -> torch.Tensor:
    """A tensor of the collated batch by its former dict key: an input or a target."""
    return getattr(batch.inputs, name) if name in ("input_ids", "token_type_ids", "position_ids") else batch.targets[name]


def masked_positions(batch: Batch) -> torch.Tensor:
    return batch.targets["labels"] != IGNORE_INDEX


def short_sample(index: int, tokenizer) -> dict:
    """[CLS] a [SEP] b [SEP]: two maskable tokens."""
    ids = np.array([tokenizer.cls_id, 100, tokenizer.sep_id, 200, tokenizer.sep_id])
    return {"input_ids": ids, "token_type_ids": np.array([0, 0, 0, 1, 1]), "next_sentence_label": 1, "index": index}


def test_flat_layout(dataset, tokenizer):
    samples = [dataset[i] for i in (3, 0, 9)] + [short_sample(10_000, tokenizer)]
    batch = PretrainingCollator.from_tokenizer(tokenizer, seed=0)(samples)
    lengths = [len(sample["input_ids"]) for sample in samples]
    assert batch.inputs.layout.cu_seqlens.dtype == torch.int32
    assert batch.inputs.layout.cu_seqlens.tolist() == np.concatenate([[0], np.cumsum(lengths)]).tolist()
    assert batch.inputs.layout.max_seqlen == max(lengths) and batch.num_tokens == sum(lengths)
    assert batch.inputs.position_ids.tolist() == [p for length in lengths for p in range(length)]
    for name in ("input_ids", "token_type_ids", "position_ids", "labels", "next_sentence_label"):
        assert field(batch, name).dtype == torch.int64, name
    assert batch.inputs.token_type_ids.tolist() == np.concatenate([s["token_type_ids"] for s in samples]).tolist()
    assert batch.targets["next_sentence_label"].tolist() == [s["next_sentence_label"] for s in samples]
    original = torch.from_numpy(np.concatenate([s["input_ids"] for s in samples]))
    masked = masked_positions(batch)
    assert torch.equal(batch.targets["labels"][masked], original[masked])
    assert torch.equal(batch.inputs.input_ids[~masked], original[~masked])
    # The MLM positions come counted from the host, as the head would find them, and travel with the inputs.
    assert torch.equal(batch.inputs.mlm_positions, masked.nonzero().flatten())
    assert torch.equal(batch.inputs.masked_positions(batch.targets["labels"]), masked.nonzero().flatten())
    assert torch.equal(batch.to(torch.device("cpu")).inputs.mlm_positions, batch.inputs.mlm_positions)


@pytest.mark.parametrize("whole_word_masking", [False, True], ids=["token", "whole-word"])
def test_masking_rates_and_special_tokens(dataset, tokenizer, whole_word_masking: bool):
    collator = PretrainingCollator.from_tokenizer(tokenizer, seed=1, whole_word_masking=whole_word_masking)
    samples = [dataset[i] for i in range(min(len(dataset), 1500))]
    batch = collator(samples)
    original = torch.from_numpy(np.concatenate([s["input_ids"] for s in samples]))
    special = torch.isin(original, torch.tensor(tokenizer.special_ids))
    masked = masked_positions(batch)
    assert not (masked & special).any()
    rate = masked.sum().item() / (~special).sum().item()
    # Whole words that would overshoot a sequence's budget are skipped, so that rate runs a little low.
    assert (0.13 if whole_word_masking else 0.145) <= rate <= 0.155
    per_sequence = torch.zeros(len(samples), dtype=torch.int64).index_add_(
        0, torch.repeat_interleave(torch.arange(len(samples)), torch.tensor([len(s["input_ids"]) for s in samples])),
        masked.long(),
    )
    assert per_sequence.min() >= 1
    inputs, labels = batch.inputs.input_ids[masked], batch.targets["labels"][masked]
    to_mask = (inputs == tokenizer.mask_id).float().mean().item()
    kept = (inputs == labels).float().mean().item()
    assert abs(to_mask - 0.8) < 0.015 and abs(kept - 0.1) < 0.01
    replaced = inputs[(inputs != tokenizer.mask_id) & (inputs != labels)]
    assert abs(len(replaced) / len(inputs) - 0.1) < 0.01
    assert not torch.isin(replaced, torch.tensor(tokenizer.special_ids)).any()


def test_every_sequence_gets_a_mask(tokenizer):
    collator = PretrainingCollator.from_tokenizer(tokenizer, seed=2)
    batch = collator([short_sample(i, tokenizer) for i in range(50)])
    assert masked_positions(batch).view(50, 5).sum(dim=1).tolist() == [1] * 50


def test_whole_word_masking_masks_whole_words(dataset, tokenizer):
    collator = PretrainingCollator.from_tokenizer(tokenizer, seed=3, whole_word_masking=True)
    samples = [dataset[i] for i in range(300)]
    batch = collator(samples)
    original = np.concatenate([s["input_ids"] for s in samples])
    continues_word = tokenizer.continuation_mask()[original]
    # A '##' piece right after [SEP] (segment B truncated at its front) starts a word of its own.
    after_special = np.isin(np.concatenate([[tokenizer.cls_id], original[:-1]]), tokenizer.special_ids)
    masked = masked_positions(batch).numpy()
    # A continuation piece is masked exactly when the piece before it is.
    pieces = np.flatnonzero(continues_word & ~after_special)
    assert len(pieces) > 1000
    assert (masked[pieces] == masked[pieces - 1]).all()
    assert masked[pieces].sum() > 50


def test_masks_depend_only_on_seed_epoch_and_index(dataset, tokenizer):
    collator = PretrainingCollator.from_tokenizer(tokenizer, seed=4)
    forward = collator([dataset[i] for i in (5, 6, 7)])
    backward = collator([dataset[i] for i in (7, 6, 5)])
    lengths = [len(dataset[i]["input_ids"]) for i in (5, 6, 7)]
    by_sample = forward.targets["labels"].split(lengths)
    assert [t.tolist() for t in backward.targets["labels"].split(lengths[::-1])] == [t.tolist() for t in by_sample[::-1]]
    assert torch.equal(PretrainingCollator.from_tokenizer(tokenizer, seed=4)([dataset[5]]).inputs.input_ids,
                       forward.inputs.input_ids[: lengths[0]])
    collator.set_epoch(1)
    assert not torch.equal(collator([dataset[i] for i in (5, 6, 7)]).targets["labels"], forward.targets["labels"])


def test_to_padded_round_trip(dataset, tokenizer):
    samples = [dataset[i] for i in (1, 2)] + [short_sample(99, tokenizer)]
    batch = PretrainingCollator.from_tokenizer(tokenizer, seed=5)(samples)
    padded = to_padded(batch, tokenizer.pad_id)
    lengths = [len(s["input_ids"]) for s in samples]
    assert padded["input_ids"].shape == (3, max(lengths))
    assert padded["attention_mask"].sum(dim=1).tolist() == lengths
    real = padded["attention_mask"].bool()
    for name in ("input_ids", "token_type_ids", "labels"):
        assert torch.equal(padded[name][real], field(batch, name)), name
    assert (padded["input_ids"][~real] == tokenizer.pad_id).all()
    assert (padded["labels"][~real] == IGNORE_INDEX).all()
    assert torch.equal(padded["next_sentence_label"], batch.targets["next_sentence_label"])


def test_pack_sequences_fills_rows():
    lengths = np.random.default_rng(0).integers(5, 129, size=2000)
    rows = pack_sequences(lengths, 128)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert max(lengths[row].sum() for row in rows) <= 128
    lower_bound = int(np.ceil(lengths.sum() / 128))
    assert len(rows) <= 11 / 9 * lower_bound + 1  # best-fit decreasing's guarantee
    with pytest.raises(ValueError):
        pack_sequences([129], 128)


def test_packed_batch_sampler(dataset):
    lengths = dataset.sequence_lengths()
    sampler = PackedBatchSampler(lengths, row_len=256, rows_per_batch=4, seed=0)
    first = list(sampler)
    assert len(sampler) == len(first)
    assert sorted(i for batch in first for i in batch) == list(range(len(dataset)))
    assert max(lengths[batch].sum() for batch in first) <= 4 * 256
    assert list(sampler) == first
    sampler.set_epoch(1)
    assert list(sampler) != first
