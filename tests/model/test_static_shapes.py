"""Static shapes (BertInputs.from_padded(keep_padding=True, masked_capacity=M)): the same losses and gradients as the
unpadded path, and no data-dependent step anywhere, which is what CUDA-graph capture needs."""

import pytest
import torch

from fastbert import BertForSequenceClassification, BertModel
from fastbert.model import BertInputs
from fastbert.model.layout import PaddedRowsLayout

from test_unpadded import MAX_LEN, grads, make_model, padded_batch

LENGTHS = [MAX_LEN, 1, 9, 17]


def masked_capacity(labels: torch.Tensor) -> int:
    return min(int((labels != -100).sum()) + 5, labels.numel())  # room to spare: the extra rows are ignored


@pytest.mark.parametrize("lengths", [LENGTHS, [3, 3]])
def test_kept_padding_equals_unpadded_losses_and_every_gradient(lengths):
    model = make_model()
    ids, mask, token_types, labels, nsp = padded_batch(lengths)
    batch = dict(attention_mask=mask, token_type_ids=token_types, labels=labels, next_sentence_label=nsp)
    kept = BertInputs.from_padded(ids, mask, token_types, keep_padding=True, masked_capacity=masked_capacity(labels))

    unpadded = model(ids, **batch)
    unpadded.loss.backward()
    expected = grads(model)
    model.zero_grad()

    static = model(kept, labels=labels, next_sentence_label=nsp)
    static.loss.backward()
    assert static.masked_lm_logits.shape[0] == masked_capacity(labels)
    torch.testing.assert_close(static.mlm_loss, unpadded.mlm_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(static.nsp_loss, unpadded.nsp_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(static.seq_relationship_logits, unpadded.seq_relationship_logits, rtol=1e-5, atol=1e-6)
    got = grads(model)
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-6, msg=name)


def test_kept_padding_encoder_output_has_zeros_at_padding_and_matches():
    model = make_model()
    ids, mask, token_types, _, _ = padded_batch(LENGTHS)
    encoder = BertModel(model.config)
    encoder.load_state_dict(model.bert.state_dict())
    unpadded = encoder(ids, mask, token_types)
    static = encoder(BertInputs.from_padded(ids, mask, token_types, keep_padding=True))
    torch.testing.assert_close(static.last_hidden_state, unpadded.last_hidden_state, rtol=1e-5, atol=1e-5)
    assert not static.last_hidden_state[~mask.bool()].any()
    torch.testing.assert_close(static.pooler_output, unpadded.pooler_output, rtol=1e-5, atol=1e-5)


def test_sequence_classification_with_kept_padding():
    model = make_model()
    classifier = BertForSequenceClassification(model.config)
    classifier.bert.load_state_dict(model.bert.state_dict())
    ids, mask, token_types, _, nsp = padded_batch(LENGTHS)
    unpadded = classifier(ids, mask, token_types, labels=nsp)
    static = classifier(BertInputs.from_padded(ids, mask, token_types, keep_padding=True), labels=nsp)
    torch.testing.assert_close(static.logits, unpadded.logits, rtol=1e-5, atol=1e-5)


def test_static_step_has_no_data_dependent_operation():
    # On the meta device every tensor is shape-only: reading a value (.item(), nonzero,
    # a bool() of a tensor) raises. The static path must get through forward and backward.
    model = make_model().to("meta")
    ids, mask, token_types, labels, nsp = (t.to("meta") for t in padded_batch(LENGTHS))
    inputs = BertInputs.from_padded(ids, mask, token_types, keep_padding=True, masked_capacity=20)
    out = model(inputs, labels=labels, next_sentence_label=nsp)
    out.loss.backward()
    assert out.masked_lm_logits.shape == (20, model.config.vocab_size)
    assert all(p.grad is not None for p in model.parameters())
    # The unpadded path does read data (it must find the real tokens), so the check bites.
    with pytest.raises((RuntimeError, NotImplementedError)):
        model(ids, mask, token_types, labels=labels, next_sentence_label=nsp)


def test_too_many_masked_tokens_are_refused_never_dropped():
    model = make_model()
    ids, mask, token_types, labels, nsp = padded_batch(LENGTHS)
    count = int((labels != -100).sum())
    def kept(capacity):
        return BertInputs.from_padded(ids, mask, token_types, keep_padding=True, masked_capacity=capacity)

    with pytest.raises(ValueError, match=f"{count} masked tokens exceed masked_capacity {count - 1}"):
        model(kept(count - 1), labels=labels)
    with pytest.raises(ValueError, match=f"masked_capacity {ids.numel() + 1} exceeds the batch's {ids.numel()} token slots"):
        model(kept(ids.numel() + 1), labels=labels)


def test_kept_padding_refuses_flat_input_and_varlen_attention(monkeypatch):
    model = make_model()
    # Keeping padding is a property of padded input: the flat constructor has no such option,
    # and the forwards no longer take the old keyword.
    with pytest.raises(TypeError, match="keep_padding"):
        BertInputs.from_flat(torch.tensor([2, 5, 3]), torch.tensor([0, 3], dtype=torch.int32), 3,
                             position_ids=torch.arange(3), keep_padding=True)
    with pytest.raises(TypeError, match="keep_padding"):
        model(torch.tensor([[2, 5, 3]]), keep_padding=True)
    ids, mask, token_types, _, _ = padded_batch([4, 2])
    kept = BertInputs.from_padded(ids, mask, token_types, keep_padding=True)
    model.backends.use(attention="flash_attn")
    with pytest.raises(RuntimeError, match="attention backend flash_attn needs unpadded input"):
        model(kept)
    # The environment variable still reaches a model built under it.
    monkeypatch.setenv("FASTBERT_ATTENTION", "flash_attn")
    with pytest.raises(RuntimeError, match="attention backend flash_attn needs unpadded input"):
        make_model()(kept)


def test_padded_rows_layout_views_and_fill():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]]).bool()
    layout = PaddedRowsLayout.from_mask(mask)
    flat = torch.arange(6.0)
    assert layout.as_rows(flat).data_ptr() == flat.data_ptr()
    assert torch.equal(layout.pad(flat, fill=-1.0), torch.tensor([[0.0, 1.0, -1.0], [3.0, -1.0, -1.0]]))
    assert torch.equal(layout.first_token_index, torch.tensor([0, 3]))
    assert torch.equal(layout.lengths, torch.tensor([2, 1]))
    assert layout.num_sequences == 2 and layout.max_seqlen == 3


@pytest.mark.parametrize("inputs_built", ["outside", "inside"])
def test_static_step_traces_as_one_graph_for_torch_compile(inputs_built):
    # fullgraph=True refuses any graph break (a host read, an untraceable helper); aot_eager
    # traces forward and backward without inductor's code generation, so this stays quick.
    # "outside": the model takes BertInputs built on the host (as the collators build them);
    # "inside": building the static-shape inputs from the padded tensors traces too.
    model = make_model()
    ids, mask, token_types, labels, nsp = padded_batch(LENGTHS)
    capacity = masked_capacity(labels)

    def step(model, ids, mask, token_types, labels, nsp):
        inputs = BertInputs.from_padded(ids, mask, token_types, keep_padding=True, masked_capacity=capacity)
        return model(inputs, labels=labels, next_sentence_label=nsp)

    expected = step(model, ids, mask, token_types, labels, nsp)
    if inputs_built == "outside":
        inputs = BertInputs.from_padded(ids, mask, token_types, keep_padding=True, masked_capacity=capacity)
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
        out = compiled(inputs, labels=labels, next_sentence_label=nsp)
    else:
        out = torch.compile(step, fullgraph=True, backend="aot_eager")(model, ids, mask, token_types, labels, nsp)
    out.loss.backward()
    torch.testing.assert_close(out.loss, expected.loss, rtol=1e-5, atol=1e-6)
    assert all(p.grad is not None for p in model.parameters())
