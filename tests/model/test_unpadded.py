"""The unpadded path: flat inputs equal padded ones, packing isolates sequences, heads run where needed."""

import pytest
import torch
import torch.nn.functional as F

from fastbert import BertConfig, BertForPreTraining, BertModel
from fastbert.model import BertInputs

MAX_LEN = 24


def make_model(seed: int = 0) -> BertForPreTraining:
    config = BertConfig.preset(
        "tiny", vocab_size=400, max_position_embeddings=MAX_LEN, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    torch.manual_seed(seed)
    model = BertForPreTraining(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def padded_batch(lengths, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    seq = max(lengths)
    ids = torch.randint(5, 400, (len(lengths), seq), generator=g)
    mask = (torch.arange(seq)[None, :] < torch.tensor(lengths)[:, None]).long()
    token_types = (torch.rand(len(lengths), seq, generator=g) > 0.5).long() * mask
    labels = torch.where((torch.rand(len(lengths), seq, generator=g) < 0.3) & mask.bool(), ids, -100)
    labels[:, 0] = torch.where(mask[:, 0].bool(), ids[:, 0], -100)  # every row has a masked token
    nsp = torch.randint(0, 2, (len(lengths),), generator=g)
    return ids * mask, mask, token_types, labels, nsp


def flatten(ids, mask, token_types, labels):
    real = mask.bool()
    lengths = real.sum(1)
    cu = F.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)
    positions = torch.cat([torch.arange(int(n)) for n in lengths])
    return BertInputs.from_flat(ids[real], cu, int(lengths.max()), positions, token_types[real]), labels[real]


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("lengths", [[MAX_LEN, 1, 9, 17], [1], [5, 5, 5]])
def test_flat_equals_padded_forward_and_every_gradient(lengths):
    model = make_model()
    ids, mask, token_types, labels, nsp = padded_batch(lengths)

    padded = model(ids, mask, token_types, labels=labels, next_sentence_label=nsp)
    padded.loss.backward()
    padded_grads = grads(model)
    model.zero_grad()

    flat_inputs, flat_labels = flatten(ids, mask, token_types, labels)
    flat = model(flat_inputs, labels=flat_labels, next_sentence_label=nsp)
    flat.loss.backward()
    flat_grads = grads(model)

    assert torch.allclose(flat.loss, padded.loss, rtol=1e-5, atol=1e-6)
    assert torch.allclose(flat.seq_relationship_logits, padded.seq_relationship_logits, rtol=1e-5, atol=1e-5)
    assert padded_grads.keys() == flat_grads.keys() and len(flat_grads) == len(list(model.parameters()))
    for name in padded_grads:
        torch.testing.assert_close(flat_grads[name], padded_grads[name], rtol=1e-5, atol=1e-6, msg=name)


def test_encoder_output_layouts_agree():
    model = make_model().bert.eval()
    ids, mask, token_types, labels, _ = padded_batch([MAX_LEN, 1, 9])
    flat_inputs, _ = flatten(ids, mask, token_types, labels)
    with torch.no_grad():
        padded = model(ids, mask, token_types)
        flat = model(flat_inputs)
    torch.testing.assert_close(flat.last_hidden_state, padded.last_hidden_state[mask.bool()], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(flat.pooler_output, padded.pooler_output, rtol=1e-5, atol=1e-6)


def test_packed_row_equals_sequences_run_separately():
    model = make_model().bert.eval()
    lengths = [6, 1, 11]  # three sequences packed into one 18-token row
    g = torch.Generator().manual_seed(4)
    sequences = [torch.randint(5, 400, (n,), generator=g) for n in lengths]
    packed = BertInputs.from_flat(
        torch.cat(sequences),
        cu_seqlens=torch.tensor([0, 6, 7, 18], dtype=torch.int32),
        max_seqlen=11,
        position_ids=torch.cat([torch.arange(n) for n in lengths]),
        token_type_ids=torch.zeros(sum(lengths), dtype=torch.long),
    )
    with torch.no_grad():
        together = model(packed)
        apart = [model(s[None, :]) for s in sequences]
    torch.testing.assert_close(together.last_hidden_state, torch.cat([a.last_hidden_state[0] for a in apart]), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(together.pooler_output, torch.cat([a.pooler_output for a in apart]), rtol=1e-5, atol=1e-6)


def test_masked_only_mlm_loss_equals_full_head_loss():
    model = make_model().eval()
    ids, mask, token_types, labels, nsp = padded_batch([MAX_LEN, 3, 14, 20])
    with torch.no_grad():
        full = model(ids, mask, token_types)
        masked = model(ids, mask, token_types, labels=labels, next_sentence_label=nsp)
    vocab = model.config.vocab_size
    full_mlm = F.cross_entropy(full.prediction_logits.view(-1, vocab), labels.view(-1), ignore_index=-100)
    full_nsp = F.cross_entropy(full.seq_relationship_logits, nsp)
    torch.testing.assert_close(masked.mlm_loss, full_mlm, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(masked.loss, full_mlm + full_nsp, rtol=1e-5, atol=1e-6)
    assert masked.prediction_logits is None
    assert masked.masked_lm_logits.shape == (int((labels != -100).sum()), vocab)
    torch.testing.assert_close(masked.masked_lm_logits, full.prediction_logits[labels != -100], rtol=1e-5, atol=1e-5)


def test_left_padding_keeps_transformers_positions():
    """Positions follow the column index (transformers' default), whatever the mask."""
    model = make_model().bert.eval()
    ids = torch.randint(5, 400, (1, 8))
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        out = model(ids, mask).last_hidden_state
        flat = model(BertInputs.from_flat(ids[0, 2:], torch.tensor([0, 6]), 6, position_ids=torch.arange(2, 8))).last_hidden_state
    torch.testing.assert_close(out[0, 2:], flat, rtol=1e-5, atol=1e-6)


def test_bad_inputs_are_refused_clearly():
    model = make_model().bert
    with pytest.raises(ValueError, match="have no tokens"):
        model(torch.ones(2, 4, dtype=torch.long), torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]]))
    with pytest.raises(ValueError, match="sequence too long"):
        model(torch.ones(1, MAX_LEN + 1, dtype=torch.long))
    with pytest.raises(ValueError, match="needs position_ids"):
        model(BertInputs.from_flat(torch.ones(4, dtype=torch.long), torch.tensor([0, 4]), 4, position_ids=None))
