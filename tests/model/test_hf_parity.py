"""Checkpoints are HuggingFace BERT directories, in both directions, with matching numerics."""

import pytest
import torch

from fastbert import BertConfig, BertForPreTraining, BertForSequenceClassification, BertModel

transformers = pytest.importorskip("transformers")


def ragged_batch(vocab: int, batch: int = 4, seq: int = 19, seed: int = 0):
    """A right-padded batch with a length-1 row, a full-length row and segment B halves."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (batch, seq), generator=g)
    lengths = torch.tensor([seq, 1, 7, 12][:batch])
    mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()
    token_types = ((torch.arange(seq)[None, :] >= (lengths[:, None] // 2)) & mask.bool()).long()
    return ids * mask, mask, token_types


def perturb(model: torch.nn.Module, seed: int = 1) -> None:
    """Random non-trivial weights (default init leaves biases at zero and LayerNorms at one)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


def test_minilm_matches_transformers(minilm_dir):
    ours = BertModel.from_pretrained(minilm_dir).eval()
    theirs = transformers.BertModel.from_pretrained(str(minilm_dir), attn_implementation="sdpa").eval()
    ids, mask, token_types = ragged_batch(ours.config.vocab_size)
    with torch.no_grad():
        a = ours(ids, attention_mask=mask, token_type_ids=token_types)
        b = theirs(input_ids=ids, attention_mask=mask, token_type_ids=token_types)
    real = mask.bool()
    # Padding positions are zero in fastbert's output; transformers computes values there that nothing reads.
    assert (a.last_hidden_state[real] - b.last_hidden_state[real]).abs().max() < 1e-5
    assert (a.pooler_output - b.pooler_output).abs().max() < 1e-5
    assert a.last_hidden_state[~real].abs().max() == 0


def test_pretraining_export_loads_in_transformers(tmp_path):
    config = BertConfig.preset("tiny", vocab_size=512, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    ours = BertForPreTraining(config).eval()
    perturb(ours)
    ours.save_pretrained(tmp_path)
    theirs, info = transformers.BertForPreTraining.from_pretrained(
        str(tmp_path), output_loading_info=True, attn_implementation="sdpa"
    )
    theirs.eval()
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    ids, mask, token_types = ragged_batch(config.vocab_size)
    labels = torch.full_like(ids, -100)
    labels[0, [2, 9, 15]] = torch.tensor([7, 99, 300])
    labels[2, 3] = 11
    nsp = torch.tensor([0, 1, 1, 0])
    with torch.no_grad():
        a = ours(ids, mask, token_types)
        b = theirs(input_ids=ids, attention_mask=mask, token_type_ids=token_types)
        real = mask.bool()
        assert (a.prediction_logits[real] - b.prediction_logits[real]).abs().max() < 1e-4
        assert (a.seq_relationship_logits - b.seq_relationship_logits).abs().max() < 1e-4
        a = ours(ids, mask, token_types, labels=labels, next_sentence_label=nsp)
        b = theirs(input_ids=ids, attention_mask=mask, token_type_ids=token_types, labels=labels, next_sentence_label=nsp)
    assert abs(a.loss.item() - b.loss.item()) < 1e-4


def test_transformers_checkpoint_loads_in_fastbert(tmp_path):
    hf_config = transformers.BertConfig(
        vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=3,
    )
    torch.manual_seed(0)
    theirs = transformers.BertForSequenceClassification(hf_config).eval()
    perturb(theirs)
    theirs.save_pretrained(str(tmp_path))
    ours = BertForSequenceClassification.from_pretrained(tmp_path).eval()
    assert ours.config.num_labels == 3
    ids, mask, token_types = ragged_batch(300)
    labels = torch.tensor([0, 2, 1, 2])
    with torch.no_grad():
        a = ours(ids, mask, token_types, labels=labels)
        b = theirs(input_ids=ids, attention_mask=mask, token_type_ids=token_types, labels=labels)
    assert (a.logits - b.logits).abs().max() < 1e-5
    assert abs(a.loss.item() - b.loss.item()) < 1e-5

    # A classifier checkpoint also initialises the pretraining model's backbone (heads fresh).
    pretrain = BertForPreTraining.from_pretrained(tmp_path)
    assert torch.equal(
        pretrain.bert.encoder.layer[1].output.dense.weight, theirs.bert.encoder.layer[1].output.dense.weight
    )


def test_regression_head_matches_transformers(tmp_path):
    config = BertConfig.preset("tiny", vocab_size=256, num_labels=1, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(3)
    ours = BertForSequenceClassification(config).eval()
    perturb(ours)
    ours.save_pretrained(tmp_path)
    theirs = transformers.BertForSequenceClassification.from_pretrained(str(tmp_path)).eval()
    ids, mask, token_types = ragged_batch(256)
    scores = torch.tensor([0.5, 4.2, 3.0, 1.25])
    with torch.no_grad():
        a = ours(ids, mask, token_types, labels=scores)
        b = theirs(input_ids=ids, attention_mask=mask, token_type_ids=token_types, labels=scores)
    assert (a.logits - b.logits).abs().max() < 1e-5
    assert abs(a.loss.item() - b.loss.item()) < 1e-5
