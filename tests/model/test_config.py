import json

import pytest

from fastbert import BertConfig
from fastbert.errors import UserError


def test_presets_have_published_shapes():
    mini = BertConfig.preset("mini")
    assert (mini.num_hidden_layers, mini.hidden_size, mini.num_attention_heads) == (4, 256, 4)
    base = BertConfig.preset("base")
    assert (base.num_hidden_layers, base.hidden_size, base.intermediate_size) == (12, 768, 3072)
    assert BertConfig.preset("large").hidden_size == 1024
    with pytest.raises(UserError, match="unknown model preset 'huge'"):
        BertConfig.preset("huge")


def test_config_json_round_trips_unknown_fields(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "bert", "hidden_size": 64, "num_attention_heads": 4, "gradient_checkpointing": False}))
    config = BertConfig.load(path)
    config.save(tmp_path / "again.json", architectures=["BertModel"])
    saved = json.loads((tmp_path / "again.json").read_text())
    assert saved["gradient_checkpointing"] is False and saved["hidden_size"] == 64
    assert saved["model_type"] == "bert" and saved["architectures"] == ["BertModel"]


def test_bad_head_count_and_non_bert_model(tmp_path):
    with pytest.raises(UserError, match="not divisible"):
        BertConfig(hidden_size=100, num_attention_heads=3)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(UserError, match="not a BERT model"):
        BertConfig.load(path)


# ---- backends are a run-time choice, never part of config.json -----------------------------
def tiny_model_dir(tmp_path, **config_json):
    """A saved tiny BertModel whose config.json gets ``config_json`` written into it."""
    from fastbert import BertModel

    BertModel(BertConfig.preset("tiny", vocab_size=100)).save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **config_json}))
    return tmp_path


def test_saving_writes_no_backend_keys(tmp_path, monkeypatch):
    from fastbert import BertForPreTraining

    monkeypatch.setenv("FASTBERT_KERNELS", "torch")
    monkeypatch.setenv("FASTBERT_ATTENTION", "sdpa")
    model = BertForPreTraining(BertConfig.preset("tiny", vocab_size=100))
    assert (model.backends.kernels, model.backends.attention) == ("torch", "sdpa")
    model.backends.use(kernels="triton")
    model.save_pretrained(tmp_path / "model")
    model.config.save(tmp_path / "config.json")
    for path in (tmp_path / "model" / "config.json", tmp_path / "config.json"):
        saved = json.loads(path.read_text())
        assert saved["hidden_size"] == 128  # the file is the config
        assert "kernel_backend" not in saved and "attention_backend" not in saved, path


def test_old_backend_keys_in_config_json_are_dropped_and_the_environment_decides(tmp_path, monkeypatch):
    import torch
    from test_backends import autograd_ops

    from fastbert import BertModel

    directory = tiny_model_dir(tmp_path, kernel_backend="torch", attention_backend="flash_attn")
    config = BertConfig.load(directory)
    assert "kernel_backend" not in config.extra and "attention_backend" not in config.extra
    assert not hasattr(config, "kernel_backend") and not hasattr(config, "attention_backend")
    config.save(tmp_path / "again.json")
    again = json.loads((tmp_path / "again.json").read_text())
    assert "kernel_backend" not in again and "attention_backend" not in again

    ids = torch.randint(0, 100, (2, 5))
    monkeypatch.setenv("FASTBERT_KERNELS", "triton")
    monkeypatch.delenv("FASTBERT_ATTENTION", raising=False)
    model = BertModel.from_pretrained(directory)
    assert (model.backends.kernels, model.backends.attention) == ("triton", "auto")
    hidden = model.embeddings(ids, torch.zeros_like(ids), torch.arange(5).expand(2, 5))
    assert autograd_ops(hidden)["EmbeddingLayerNormFunctionBackward"] == 1  # the file said torch
    model(ids)  # the file's flash_attn would need CUDA: the environment's "auto" runs sdpa here

    monkeypatch.delenv("FASTBERT_KERNELS")
    model = BertModel.from_pretrained(directory)
    assert model.backends.kernels == "auto"
    hidden = model.embeddings(ids, torch.zeros_like(ids), torch.arange(5).expand(2, 5))
    ops = autograd_ops(hidden)
    assert ops["NativeLayerNormBackward0"] == 1 and not ops["EmbeddingLayerNormFunctionBackward"]  # auto on CPU: torch


# ---- BertConfig.from_pretrained ------------------------------------------------------------
def test_from_pretrained_equals_load_plus_override(tmp_path):
    directory = tiny_model_dir(tmp_path, gradient_checkpointing=False)
    expected = BertConfig.load(directory / "config.json")
    assert expected.hidden_dropout_prob == 0.1
    expected.hidden_dropout_prob = 0.0
    for source in (directory, directory / "config.json"):
        config = BertConfig.from_pretrained(source, hidden_dropout_prob=0.0)
        assert config == expected
        assert config.extra == {"gradient_checkpointing": False, "architectures": ["BertModel"]}
    assert BertConfig.from_pretrained(directory) == BertConfig.load(directory)


def test_from_pretrained_refuses_unknown_fields_and_checks_overrides(tmp_path):
    directory = tiny_model_dir(tmp_path)
    with pytest.raises(UserError, match="unknown config field 'hidden_dropout'"):
        BertConfig.from_pretrained(directory, hidden_dropout=0.0)
    with pytest.raises(UserError, match="unknown config field 'extra'"):
        BertConfig.from_pretrained(directory, extra={})
    with pytest.raises(UserError, match="unknown config field 'kernel_backend'"):
        BertConfig.from_pretrained(directory, kernel_backend="torch")
    with pytest.raises(UserError, match="not divisible"):
        BertConfig.from_pretrained(directory, num_attention_heads=3)


def test_from_pretrained_new_label_count_drops_the_old_label_names(tmp_path):
    directory = tiny_model_dir(tmp_path, id2label={"0": "neg", "1": "pos"}, label2id={"neg": 0, "pos": 1})
    assert BertConfig.load(directory).num_labels == 2
    same = BertConfig.from_pretrained(directory, num_labels=2)
    assert same.extra["id2label"] == {"0": "neg", "1": "pos"}
    changed = BertConfig.from_pretrained(directory, num_labels=3)
    assert changed.num_labels == 3 and "id2label" not in changed.extra and "label2id" not in changed.extra


@pytest.mark.parametrize("name", ["save", "head_dim"])
def test_from_pretrained_refuses_attributes_that_are_not_fields(tmp_path, name):
    directory = tiny_model_dir(tmp_path)
    with pytest.raises(UserError, match=f"unknown config field '{name}'"):
        BertConfig.from_pretrained(directory, **{name: 1})
