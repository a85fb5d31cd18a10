"""model.backends: one run-time choice of kernels and attention, shared by every module of a model.

Which implementation ran is read off the autograd graph: the torch reference leaves torch's
own nodes (NativeLayerNormBackward0, GeluBackward0), the Triton path (the interpreter on
CPU, see tests/conftest.py) its autograd Functions' nodes.
"""

import copy
import io
from collections import Counter

import pytest
import torch

from fastbert import BertConfig, BertForPreTraining
from fastbert.model import Backends, BertInputs
from fastbert.model.encoder import FusedOwnerMixin

VOCAB = 100
TORCH_NODES = ("NativeLayerNormBackward0", "GeluBackward0")
TRITON_NODES = ("EmbeddingLayerNormFunctionBackward", "LayerNormFunctionBackward", "BiasGeluFunctionBackward")


def autograd_ops(tensor: torch.Tensor) -> Counter:
    """How many nodes of each type the autograd graph behind ``tensor`` holds."""
    counts: Counter = Counter()
    seen, stack = set(), [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        counts[type(node).__name__] += 1
        stack.extend(next_node for next_node, _ in node.next_functions)
    return counts


def expected_ops(config: BertConfig, backend: str) -> Counter:
    """The fused ops of BertForPreTraining with MLM labels: the embedding LayerNorm, two
    residual LayerNorms and one GELU per layer, and the MLM head's GELU + LayerNorm."""
    layers = config.num_hidden_layers
    if backend == "torch":
        return Counter({"NativeLayerNormBackward0": 1 + 2 * layers + 1, "GeluBackward0": layers + 1})
    return Counter({"EmbeddingLayerNormFunctionBackward": 1, "LayerNormFunctionBackward": 2 * layers + 1,
                    "BiasGeluFunctionBackward": layers + 1})


def fused_ops(counts: Counter) -> Counter:
    return Counter({name: n for name, n in counts.items() if name in TORCH_NODES + TRITON_NODES})


@pytest.fixture
def model(monkeypatch) -> BertForPreTraining:
    monkeypatch.delenv("FASTBERT_KERNELS", raising=False)
    monkeypatch.delenv("FASTBERT_ATTENTION", raising=False)
    torch.manual_seed(0)
    return BertForPreTraining(BertConfig.preset("tiny", vocab_size=VOCAB)).eval()


def batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, VOCAB, (3, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 1:] = 0  # a one-token sequence beside two of the maximum length
    labels = torch.where(torch.rand(ids.shape, generator=g) < 0.3, ids, -100)
    labels[:, 0] = ids[:, 0]
    return ids * mask, mask, labels


def run(model):
    ids, mask, labels = batch()
    return model(BertInputs.from_padded(ids, mask), labels=labels, next_sentence_label=torch.tensor([0, 1, 0])).loss


def test_every_module_shares_the_models_backends(model):
    users = [m for m in model.modules() if isinstance(m, FusedOwnerMixin)]
    assert len(users) == 1 + 4 * model.config.num_hidden_layers + 1  # embeddings, 4 per layer, MLM transform
    assert all(m.backends is model.backends for m in users)
    assert model.backends is model.bert.backends and isinstance(model.backends, Backends)


def test_use_switches_the_kernels_of_every_module(model):
    assert model.backends.kernels == "auto"  # FASTBERT_KERNELS unset: on CPU the torch reference runs
    reference = run(model)
    assert fused_ops(autograd_ops(reference)) == expected_ops(model.config, "torch")

    model.backends.use(kernels="triton")
    assert model.backends.kernels == "triton"
    fused = run(model)
    assert fused_ops(autograd_ops(fused)) == expected_ops(model.config, "triton")
    torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-6)
    fused.backward()  # the Triton backward kernels run too
    assert all(p.grad is not None for p in model.parameters())

    model.backends.use(kernels=" Torch ")
    assert model.backends.kernels == "torch"
    assert fused_ops(autograd_ops(run(model))) == expected_ops(model.config, "torch")


def test_the_environment_is_read_when_the_model_is_built(monkeypatch):
    monkeypatch.setenv("FASTBERT_KERNELS", "triton")
    monkeypatch.setenv("FASTBERT_ATTENTION", "sdpa")
    model = BertForPreTraining(BertConfig.preset("tiny", vocab_size=VOCAB)).eval()
    assert (model.backends.kernels, model.backends.attention) == ("triton", "sdpa")
    monkeypatch.setenv("FASTBERT_KERNELS", "torch")  # too late for this model
    assert fused_ops(autograd_ops(run(model))) == expected_ops(model.config, "triton")


def test_an_auto_model_ignores_the_environment_set_after_it_was_built(model):
    assert model.backends.kernels == "auto"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FASTBERT_KERNELS", "triton")
        assert fused_ops(autograd_ops(run(model))) == expected_ops(model.config, "torch")


def test_use_switches_attention(model):
    model.backends.use(attention="sdpa")
    assert model.backends.attention == "sdpa"
    run(model)
    model.backends.use(attention="flash_attn")
    with pytest.raises(RuntimeError, match="attention backend flash_attn needs CUDA"):
        run(model)
    model.backends.use(attention="auto")
    run(model)


def test_bad_names_are_value_errors_and_change_nothing(model, monkeypatch):
    model.backends.use(kernels="torch", attention="sdpa")
    with pytest.raises(ValueError, match="kernel backend 'fast' is unknown; expected one of auto, triton, torch"):
        model.backends.use(kernels="fast")
    with pytest.raises(ValueError, match="attention backend 'magic' is unknown"):
        model.backends.use(attention="magic")
    with pytest.raises(ValueError, match="kernel backend 'fast' is unknown"):
        model.backends.use(kernels="fast", attention="auto")
    assert (model.backends.kernels, model.backends.attention) == ("torch", "sdpa")
    with pytest.raises(ValueError, match="unknown"):
        Backends(kernels="cuda")
    monkeypatch.setenv("FASTBERT_KERNELS", "cudnn")
    with pytest.raises(ValueError, match="FASTBERT_KERNELS='cudnn' is not a kernel backend"):
        BertForPreTraining(BertConfig.preset("tiny", vocab_size=VOCAB))
    monkeypatch.delenv("FASTBERT_KERNELS")
    monkeypatch.setenv("FASTBERT_ATTENTION", "magic")
    with pytest.raises(ValueError, match="attention backend 'magic' is unknown"):
        BertForPreTraining(BertConfig.preset("tiny", vocab_size=VOCAB))


def test_a_model_that_has_run_copies_and_pickles_with_its_own_backends(model):
    model.backends.use(kernels="triton")
    expected = run(model)  # the backends now hold the per-device ops they looked up
    clone = copy.deepcopy(model)
    assert clone.backends is not model.backends and clone.backends.kernels == "triton"
    assert all(m.backends is clone.backends for m in clone.modules() if isinstance(m, FusedOwnerMixin))
    clone.backends.use(kernels="torch")
    assert model.backends.kernels == "triton"
    torch.testing.assert_close(run(clone), expected, rtol=1e-5, atol=1e-6)

    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert loaded.backends.kernels == "triton"
    assert fused_ops(autograd_ops(run(loaded))) == expected_ops(model.config, "triton")
