"""Bad checkpoints give one clear error naming the file or key."""

import json

import pytest
import torch

from fastbert import BertConfig, BertForPreTraining, BertModel
from fastbert.errors import UserError


@pytest.fixture()
def saved(tmp_path):
    model = BertForPreTraining(BertConfig.preset("tiny", vocab_size=128))
    model.save_pretrained(tmp_path)
    return tmp_path


def test_missing_directory(tmp_path):
    with pytest.raises(UserError, match="no such model directory"):
        BertModel.from_pretrained(tmp_path / "absent")


def test_missing_weights_file(saved):
    (saved / "model.safetensors").unlink()
    with pytest.raises(UserError, match=r"no model\.safetensors"):
        BertModel.from_pretrained(saved)


def test_missing_config(saved):
    (saved / "config.json").unlink()
    with pytest.raises(UserError, match=r"config\.json: no such config file"):
        BertModel.from_pretrained(saved)


def test_unknown_activation_names_the_file(saved):
    path = saved / "config.json"
    config = json.loads(path.read_text())
    config["hidden_act"] = "swishy"
    path.write_text(json.dumps(config))
    with pytest.raises(UserError, match=r"config\.json: hidden_act 'swishy' is not supported"):
        BertModel.from_pretrained(saved)


def test_shape_mismatch_names_the_key(saved):
    path = saved / "config.json"
    config = json.loads(path.read_text())
    config["vocab_size"] = 129
    path.write_text(json.dumps(config))
    with pytest.raises(UserError, match=r"model\.safetensors: bert\.embeddings\.word_embeddings\.weight has shape \(128, 128\)"):
        BertForPreTraining.from_pretrained(saved)


def test_missing_encoder_key_names_it(saved):
    from safetensors.torch import load_file, save_file

    path = saved / "model.safetensors"
    state = load_file(path)
    del state["bert.encoder.layer.1.output.dense.weight"]
    save_file(state, path, metadata={"format": "pt"})
    with pytest.raises(UserError, match=r"missing encoder\.layer\.1\.output\.dense\.weight"):
        BertModel.from_pretrained(saved)


def test_corrupt_weights_file(saved):
    (saved / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match=r"model\.safetensors: cannot read weights"):
        BertModel.from_pretrained(saved)


def test_pytorch_bin_and_tf_names_load(tmp_path):
    """Old checkpoints: pytorch_model.bin with LayerNorm gamma/beta and no prefix."""
    source = BertModel(BertConfig.preset("tiny", vocab_size=64))
    state = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
             for k, v in source.state_dict().items()}
    torch.save(state, tmp_path / "pytorch_model.bin")
    source.config.save(tmp_path / "config.json")
    loaded = BertModel.from_pretrained(tmp_path)
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
