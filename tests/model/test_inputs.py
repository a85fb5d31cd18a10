"""BertInputs, the one value a model takes: its two constructors, moving it, and what it refuses.

That the models give the same outputs and gradients for both constructors is in
test_unpadded.py (padded vs flat) and test_static_shapes.py (kept padding).
"""

import pytest
import torch
import torch.nn.functional as F

from fastbert import (
    BertConfig,
    BertForMultipleChoice,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertModel,
)
from fastbert.model import IGNORE_INDEX, Batch, BertInputs
from fastbert.model.inputs import KeptPadding, Unpadded

LENGTHS = [6, 1, 4]
META = torch.device("meta")


def padded():
    g = torch.Generator().manual_seed(0)
    seq = max(LENGTHS)
    mask = (torch.arange(seq)[None, :] < torch.tensor(LENGTHS)[:, None]).long()
    ids = torch.randint(5, 100, (len(LENGTHS), seq), generator=g) * mask
    token_types = (torch.rand(ids.shape, generator=g) > 0.5).long() * mask
    return ids, mask, token_types


def flat():
    ids, mask, token_types = padded()
    real = mask.bool()
    cu = F.pad(torch.tensor(LENGTHS).cumsum(0), (1, 0)).int()
    positions = torch.cat([torch.arange(n) for n in LENGTHS])
    return BertInputs.from_flat(ids[real], cu, max(LENGTHS), positions, token_types[real])


def test_from_padded_and_from_flat_hold_the_same_stream():
    from_padded, from_flat = BertInputs.from_padded(*padded()), flat()
    for name in ("input_ids", "token_type_ids", "position_ids"):
        assert torch.equal(getattr(from_padded, name), getattr(from_flat, name)), name
    assert torch.equal(from_padded.layout.cu_seqlens, from_flat.layout.cu_seqlens)
    assert from_padded.layout.cu_seqlens.dtype == from_flat.layout.cu_seqlens.dtype == torch.int32
    assert from_padded.layout.max_seqlen == from_flat.layout.max_seqlen == max(LENGTHS)
    assert from_padded.num_sequences == from_flat.num_sequences == len(LENGTHS)
    assert from_padded.max_position_id == from_flat.max_position_id == max(LENGTHS) - 1
    assert isinstance(from_padded.restore, Unpadded) and from_flat.restore is None
    # Per-token values go back to the caller's layout (zeros at padding) and labels come to the flat one.
    ids, mask, _ = padded()
    assert torch.equal(from_padded.to_caller(from_padded.input_ids), ids)
    assert torch.equal(from_padded.per_token(ids), from_flat.input_ids)
    assert torch.equal(from_flat.to_caller(from_flat.input_ids), from_flat.input_ids)


def test_kept_padding_keeps_the_whole_batch():
    ids, mask, token_types = padded()
    kept = BertInputs.from_padded(ids, mask, token_types, keep_padding=True, masked_capacity=5)
    assert torch.equal(kept.input_ids, ids.flatten()) and torch.equal(kept.token_type_ids, token_types.flatten())
    assert torch.equal(kept.position_ids, torch.arange(ids.shape[1]).repeat(len(LENGTHS)))
    assert isinstance(kept.restore, KeptPadding) and kept.masked_capacity == 5
    assert torch.equal(kept.layout.key_mask, mask.bool())
    assert not kept.layout.supports_varlen


def moved_fields(inputs: BertInputs) -> dict[str, torch.Tensor]:
    fields = {name: getattr(inputs, name) for name in ("input_ids", "token_type_ids", "position_ids")}
    fields["cu_seqlens"] = inputs.layout.cu_seqlens
    if isinstance(inputs.restore, Unpadded):
        fields["token_index"] = inputs.restore.token_index
    if isinstance(inputs.restore, KeptPadding):
        fields["key_mask"] = inputs.restore.layout.key_mask
        assert inputs.restore.layout is inputs.layout  # one layout, moved once
    return fields


@pytest.mark.parametrize("kind", ["padded", "kept-padding", "flat"])
def test_to_moves_every_tensor_and_keeps_the_host_facts(kind):
    if kind == "flat":
        inputs = flat()
    else:
        inputs = BertInputs.from_padded(*padded(), keep_padding=kind == "kept-padding", masked_capacity=7)
    host = moved_fields(inputs)

    on_cpu = inputs.to(torch.device("cpu"))
    assert type(on_cpu.restore) is type(inputs.restore) and type(on_cpu.layout) is type(inputs.layout)
    for name, tensor in moved_fields(on_cpu).items():
        assert torch.equal(tensor, host[name]) and tensor.dtype == host[name].dtype, name

    on_meta = inputs.to(META)
    assert type(on_meta.restore) is type(inputs.restore) and type(on_meta.layout) is type(inputs.layout)
    for name, tensor in moved_fields(on_meta).items():
        assert tensor.device == META and tensor.shape == host[name].shape and tensor.dtype == host[name].dtype, name
    assert on_meta.layout.max_seqlen == inputs.layout.max_seqlen == max(LENGTHS)
    assert on_meta.max_position_id == inputs.max_position_id and on_meta.masked_capacity == inputs.masked_capacity
    if isinstance(inputs.restore, Unpadded):
        assert (on_meta.restore.batch_size, on_meta.restore.seq_len) == (inputs.restore.batch_size, inputs.restore.seq_len)


def test_batch_moves_its_inputs_and_targets_and_keeps_its_counts():
    ids, mask, token_types = padded()
    labels = torch.where(mask.bool(), ids, IGNORE_INDEX)
    batch = Batch.of_inputs(BertInputs.from_padded(ids, mask, token_types), labels=labels, num_choices=None)
    assert (batch.num_tokens, batch.num_sequences) == (sum(LENGTHS), len(LENGTHS))
    moved = batch.to(META)
    assert isinstance(moved.inputs, BertInputs) and moved.inputs.input_ids.device == META
    assert moved.targets["labels"].device == META and moved.targets["num_choices"] is None
    assert (moved.num_tokens, moved.num_sequences) == (sum(LENGTHS), len(LENGTHS))


@pytest.mark.parametrize("head", [BertModel, BertForPreTraining, BertForSequenceClassification,
                                  BertForQuestionAnswering, BertForMultipleChoice])
def test_inputs_with_separate_tensors_are_refused(head):
    model = head(BertConfig.preset("tiny", vocab_size=100))
    ids, mask, token_types = padded()
    inputs = BertInputs.from_padded(ids, mask, token_types)
    extra = {"num_choices": 1} if head is BertForMultipleChoice else {}
    for given in ({"attention_mask": mask}, {"token_type_ids": token_types}, {"position_ids": torch.arange(ids.shape[1])}):
        with pytest.raises(ValueError, match="BertInputs already hold the mask, segments and positions"):
            model(inputs, **given, **extra)
    with pytest.raises(ValueError, match="already hold"):
        model(inputs, mask, **extra)  # positionally, as transformers' callers pass it
    model(inputs, **extra)  # alone it runs


def test_constructors_refuse_bad_shapes_and_empty_rows():
    ids, mask, _ = padded()
    with pytest.raises(ValueError, match="padded input_ids must be \\[batch, seq\\]"):
        BertInputs.from_padded(ids.flatten())
    with pytest.raises(ValueError, match="attention_mask shape \\(3, 5\\) != input_ids shape \\(3, 6\\)"):
        BertInputs.from_padded(ids, mask[:, :5])
    empty = mask.clone()
    empty[[0, 2]] = 0
    with pytest.raises(ValueError, match="attention_mask rows \\[0, 2\\] have no tokens"):
        BertInputs.from_padded(ids, empty)
    with pytest.raises(ValueError, match="flat input_ids must be \\[total_tokens\\]"):
        BertInputs.from_flat(ids, torch.tensor([0, 6]), 6, torch.arange(6))
    with pytest.raises(ValueError, match="needs position_ids"):
        BertInputs.from_flat(ids[0], torch.tensor([0, 6]), 6, None)
