"""The MiniLM checkpoint through the Triton kernels equals the torch-reference path."""

import copy

import pytest
import torch

from fastbert.kernels import triton_ops
from fastbert.model import BertForPreTraining, BertInputs, BertModel

LENGTHS = [1, 9, 16]  # ragged: a one-token sequence and one of the batch's maximum length
RTOL = 1e-5


def ragged_batch(vocab_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    longest = max(LENGTHS)
    mask = (torch.arange(longest)[None, :] < torch.tensor(LENGTHS)[:, None]).long()
    ids = torch.randint(1000, vocab_size, (len(LENGTHS), longest)) * mask
    token_types = (torch.arange(longest)[None, :] >= torch.tensor(LENGTHS)[:, None] // 2).long() * mask
    return ids, mask, token_types


def run_model(minilm_dir, backend: str, batch, weights, keep_padding=False) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Outputs and parameter gradients of ``sum(outputs * weights)`` with the given kernel backend."""
    model = BertModel.from_pretrained(minilm_dir).eval()  # eval: no dropout, so both paths are deterministic
    model.backends.use(kernels=backend)
    ids, mask, token_types = batch
    out = model(BertInputs.from_padded(ids, mask, token_types, keep_padding=keep_padding))
    outputs = {"last_hidden_state": out.last_hidden_state, "pooler_output": out.pooler_output}
    sum(((outputs[k] * weights[k]).sum() for k in outputs)).backward()
    grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in outputs.items()}, grads


@pytest.mark.parametrize("keep_padding", [False, True], ids=["unpadded", "static-shapes"])
def test_minilm_triton_path_equals_torch_path(minilm_dir, keep_padding):
    torch.manual_seed(0)
    probe = BertModel.from_pretrained(minilm_dir)
    batch = ragged_batch(probe.config.vocab_size)
    with torch.no_grad():
        shapes = probe(*batch[:2], token_type_ids=batch[2])
    weights = {"last_hidden_state": torch.randn_like(shapes.last_hidden_state), "pooler_output": torch.randn_like(shapes.pooler_output)}

    # Static shapes (as CUDA graphs run) push the padding rows through the kernels too.
    triton_out, triton_grads = run_model(minilm_dir, "triton", batch, weights, keep_padding)
    torch_out, torch_grads = run_model(minilm_dir, "torch", batch, weights)

    for name, expected in torch_out.items():
        torch.testing.assert_close(triton_out[name], expected, rtol=RTOL, atol=RTOL * expected.abs().max().item(), msg=lambda m: f"{name}: {m}")
    assert triton_grads.keys() == torch_grads.keys()
    assert "embeddings.token_type_embeddings.weight" in torch_grads and "encoder.layer.5.output.LayerNorm.bias" in torch_grads
    for name, expected in torch_grads.items():
        if name.endswith("attention.self.key.bias"):
            # Softmax ignores a shift shared by all keys, so this gradient is exactly zero
            # and both paths hold only rounding noise; check that it is noise.
            query_scale = torch_grads[name.replace("key", "query")].abs().max().item()
            assert max(triton_grads[name].abs().max().item(), expected.abs().max().item()) < RTOL * query_scale
            continue
        scale = expected.abs().max().item()
        torch.testing.assert_close(triton_grads[name], expected, rtol=RTOL, atol=RTOL * scale, msg=lambda m: f"{name}: {m}")


def test_minilm_pretraining_triton_path_equals_torch_path(minilm_dir):
    # The MLM transform's GELU and LayerNorm and the embedding LayerNorm add their parameter
    # gradients into the forward's one grad-sums block on the Triton path.
    torch.manual_seed(0)
    base = BertForPreTraining.from_pretrained(minilm_dir).eval()  # the heads initialised once, for both paths
    ids, mask, token_types = ragged_batch(base.config.vocab_size)
    labels = torch.where((torch.rand(ids.shape) < 0.3) & mask.bool(), ids, -100)
    labels[:, 0] = ids[:, 0]
    inputs = BertInputs.from_padded(ids, mask, token_types)
    runs = {}
    for backend in ("triton", "torch"):
        model = copy.deepcopy(base)
        model.backends.use(kernels=backend)
        out = model(inputs, labels=labels, next_sentence_label=torch.tensor([0, 1, 0]))
        out.loss.backward()
        runs[backend] = out.loss.detach(), {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    (triton_loss, triton_grads), (torch_loss, torch_grads) = runs["triton"], runs["torch"]
    torch.testing.assert_close(triton_loss, torch_loss, rtol=RTOL, atol=0)
    assert triton_grads.keys() == torch_grads.keys()
    block = triton_grads["bert.embeddings.LayerNorm.weight"].untyped_storage().data_ptr()
    for name in ("bert.embeddings.LayerNorm.bias", "bert.embeddings.token_type_embeddings.weight",
                 "cls.predictions.transform.dense.bias", "cls.predictions.transform.LayerNorm.weight",
                 "cls.predictions.transform.LayerNorm.bias"):
        assert triton_grads[name].untyped_storage().data_ptr() == block, f"{name}'s gradient is not in the forward's block"
    for name, expected in torch_grads.items():
        if name.endswith("attention.self.key.bias"):  # rounding noise on both paths: see above
            continue
        scale = expected.abs().max().item()
        torch.testing.assert_close(triton_grads[name], expected, rtol=RTOL, atol=RTOL * scale, msg=lambda m: f"{name}: {m}")


def test_model_follows_the_environment_variable(minilm_dir, monkeypatch):
    # The variable is read when the model is built (into model.backends), not per forward.
    monkeypatch.delenv("FASTBERT_KERNELS", raising=False)
    model = BertModel.from_pretrained(minilm_dir).eval()
    assert model.backends.kernels == "auto"
    calls = []
    original = triton_ops.layer_norm
    monkeypatch.setattr(triton_ops, "layer_norm", lambda *args: calls.append(1) or original(*args))
    batch = ragged_batch(model.config.vocab_size)
    monkeypatch.setenv("FASTBERT_KERNELS", "torch")
    torch_model = BertModel.from_pretrained(minilm_dir).eval()
    assert torch_model.backends.kernels == "torch"
    torch_model(*batch[:2], token_type_ids=batch[2])
    assert not calls
    monkeypatch.setenv("FASTBERT_KERNELS", "triton")
    model = BertModel.from_pretrained(minilm_dir).eval()
    assert model.backends.kernels == "triton"
    model(*batch[:2], token_type_ids=batch[2])
    assert len(calls) == 2 * model.config.num_hidden_layers
    # A model built under FASTBERT_KERNELS=torch keeps it when the variable changes later.
    torch_model(*batch[:2], token_type_ids=batch[2])
    assert len(calls) == 2 * model.config.num_hidden_layers
