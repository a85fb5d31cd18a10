"""from_pretrained builds the model without initialising it, loads the checkpoint, and
initialises only what the checkpoint lacks, as transformers does."""

import torch

from fastbert import BertConfig, BertForPreTraining, BertForSequenceClassification, BertModel


def encoder_dir(tmp_path):
    torch.manual_seed(0)
    encoder = BertModel(BertConfig.preset("tiny", vocab_size=100))
    with torch.no_grad():
        for p in encoder.parameters():
            p.add_(1.0)  # far from any initialisation, so a re-initialised weight would show
    encoder.save_pretrained(tmp_path)
    return encoder


def assert_initialised_linear(linear: torch.nn.Linear, std: float = 0.02) -> None:
    """normal(0, std) weights (within six standard errors) and a zero bias."""
    n = linear.weight.numel()
    assert abs(linear.weight.std().item() - std) < 6 * std / (2 * n) ** 0.5
    assert abs(linear.weight.mean().item()) < 6 * std / n**0.5
    assert not linear.bias.any()


def test_loaded_weights_are_kept_and_new_heads_initialised(tmp_path):
    encoder = encoder_dir(tmp_path)
    model = BertForPreTraining.from_pretrained(tmp_path)
    for name, expected in encoder.state_dict().items():
        assert torch.equal(model.bert.state_dict()[name], expected), name
    predictions = model.cls.predictions
    assert not predictions.bias.any()
    assert torch.equal(predictions.transform.LayerNorm.weight, torch.ones_like(predictions.transform.LayerNorm.weight))
    assert not predictions.transform.LayerNorm.bias.any()
    assert_initialised_linear(predictions.transform.dense)
    assert_initialised_linear(model.cls.seq_relationship)


def test_classifier_head_is_initialised_from_the_seed(tmp_path):
    encoder_dir(tmp_path)
    heads = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        heads.append(BertForSequenceClassification.from_pretrained(tmp_path, num_labels=3).classifier.weight)
    assert torch.equal(heads[0], heads[1]) and not torch.equal(heads[0], heads[2])
    assert all(torch.isfinite(h).all() for h in heads)
