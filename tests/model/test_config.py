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
