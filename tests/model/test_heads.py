"""Span-extraction and multiple-choice heads: transformers' names and numerics, both layouts."""

import pytest
import torch

from fastbert import BertConfig, BertForMultipleChoice, BertForQuestionAnswering
from fastbert.model import BertInputs

transformers = pytest.importorskip("transformers")


def tiny_config(**overrides) -> BertConfig:
    return BertConfig.preset("tiny", vocab_size=200, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **overrides)


def randomize(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


def test_question_answering_matches_transformers(tmp_path):
    ours = BertForQuestionAnswering(tiny_config()).eval()
    randomize(ours)
    ours.save_pretrained(tmp_path)
    theirs, info = transformers.BertForQuestionAnswering.from_pretrained(str(tmp_path), output_loading_info=True)
    theirs.eval()
    assert not info["missing_keys"] and not info["unexpected_keys"]
    ids = torch.randint(5, 200, (3, 16))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    starts, ends = torch.tensor([3, 0, 7]), torch.tensor([5, 4, 15])
    with torch.no_grad():
        a = ours(ids, mask, start_positions=starts, end_positions=ends)
        b = theirs(input_ids=ids, attention_mask=mask, start_positions=starts, end_positions=ends)
    real = mask.bool()
    torch.testing.assert_close(a.start_logits[real], b.start_logits[real], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a.end_logits[real], b.end_logits[real], rtol=1e-5, atol=1e-5)
    # Padding never wins a span.
    assert a.start_logits[~real].max() < a.start_logits[real].min()
    # Static shapes (padding kept in the stream) give the same logits, padding fill and loss.
    with torch.no_grad():
        kept = ours(BertInputs.from_padded(ids, mask, keep_padding=True), start_positions=starts, end_positions=ends)
    torch.testing.assert_close(kept.start_logits, a.start_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(kept.end_logits, a.end_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(kept.loss, a.loss, rtol=1e-5, atol=1e-6)
    # transformers' softmax also spans the padded positions of row 1; on full rows the losses agree.
    with torch.no_grad():
        full_a = ours(ids[[0, 2]], start_positions=starts[[0, 2]], end_positions=ends[[0, 2]])
        full_b = theirs(input_ids=ids[[0, 2]], start_positions=starts[[0, 2]], end_positions=ends[[0, 2]])
    assert abs(full_a.loss.item() - full_b.loss.item()) < 1e-5


def test_multiple_choice_matches_transformers_and_flat_layout(tmp_path):
    ours = BertForMultipleChoice(tiny_config()).eval()
    randomize(ours, seed=1)
    ours.save_pretrained(tmp_path)
    theirs = transformers.BertForMultipleChoice.from_pretrained(str(tmp_path)).eval()
    ids = torch.randint(5, 200, (2, 4, 10))
    mask = torch.ones_like(ids)
    mask[0, 1, 6:] = 0
    mask[1, 3, 2:] = 0
    labels = torch.tensor([2, 0])
    with torch.no_grad():
        a = ours(ids, mask, labels=labels)
        b = theirs(input_ids=ids, attention_mask=mask, labels=labels)
        lengths = mask.view(-1, 10).sum(1)
        real = mask.view(-1, 10).bool()
        flat_inputs = BertInputs.from_flat(
            ids.view(-1, 10)[real],
            cu_seqlens=torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).int(),
            max_seqlen=10,
            position_ids=torch.cat([torch.arange(int(n)) for n in lengths]),
        )
        flat = ours(flat_inputs, num_choices=4, labels=labels)
    torch.testing.assert_close(a.logits, b.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(flat.logits, a.logits, rtol=1e-5, atol=1e-6)
    assert abs(a.loss.item() - b.loss.item()) < 1e-5
    with torch.no_grad():
        kept_inputs = BertInputs.from_padded(ids.view(-1, 10), mask.view(-1, 10), keep_padding=True)
        kept = ours(kept_inputs, num_choices=4, labels=labels)
    torch.testing.assert_close(kept.logits, a.logits, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="need num_choices"):
        ours(kept_inputs, labels=labels)


@pytest.mark.parametrize("keep_padding", [False, True], ids=["unpadded", "padded-rows"])
def test_pooled_runs_the_last_layer_on_cls_only_with_the_full_paths_values_and_gradients(keep_padding):
    # The pooled heads' shortcut (the last layer on [CLS] rows only) must give exactly what
    # the whole last layer gives at [CLS], forward and backward, in fp64 so rounding cannot hide a difference.
    from fastbert import BertModel

    torch.manual_seed(0)
    model = BertModel(tiny_config(num_hidden_layers=3)).double()
    randomize(model)
    ids = torch.randint(5, 200, (4, 12))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    mask[3, 1:] = 0  # a sequence of [CLS] alone
    types = (torch.arange(12) >= 6).long().expand(4, 12)
    inputs = BertInputs.from_padded(ids, mask, types, keep_padding=keep_padding)

    full = model(inputs).pooler_output
    grads_full = torch.autograd.grad(full.sin().sum(), list(model.parameters()), allow_unused=True)
    short = model.pooled(inputs)
    grads_short = torch.autograd.grad(short.sin().sum(), list(model.parameters()), allow_unused=True)
    torch.testing.assert_close(short, full, rtol=1e-12, atol=1e-12)
    for (name, _), a, b in zip(model.named_parameters(), grads_short, grads_full):
        if a is None or b is None:
            assert a is None and b is None, name
            continue
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=name)
