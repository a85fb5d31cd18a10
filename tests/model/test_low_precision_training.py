"""BertForPreTraining trained the ways GPUs run it: under ``torch.autocast`` with fp32
master weights, and cast wholesale to bf16/fp16.

For each mode, the loss and every parameter gradient of one forward+backward, with the
torch-reference kernels and with the Triton kernels, are compared with the fp32 run. On
CPU (Triton in the interpreter) the bar is torch's own low-precision error:
transformers' BertForPreTraining with the same weights in the same mode. Ours may be at
most twice as far from fp32, plus one rounding of the result (half the dtype's eps,
relative to the fp32 value's norm). Under autocast our residual stream is bf16/fp16
(transformers keeps it fp32: torch's autocast runs LayerNorm in fp32), so this also
bounds what that policy costs. On a GPU the compiled kernels are held to twice the
torch-reference path's error.
"""

import copy
from typing import Callable

import pytest
import torch

from fastbert import BertConfig, BertForPreTraining

# Ragged, with a one-token sequence and two of the maximum length; enough sequences that
# the NSP head's gradients average over more than a handful of rounding errors.
LENGTHS = [24, 1, 9, 17, 5, 24, 13, 3, 20, 11, 7, 16]
VOCAB = 512
# mode: (low-precision dtype, whether it comes from autocast rather than from casting the weights)
MODES = {
    "autocast-bf16": (torch.bfloat16, True),
    "autocast-fp16": (torch.float16, True),
    "bf16-weights": (torch.bfloat16, False),
    "fp16-weights": (torch.float16, False),
}


def batch(device: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    seq = max(LENGTHS)
    mask = (torch.arange(seq)[None, :] < torch.tensor(LENGTHS)[:, None]).long()
    ids = torch.randint(5, VOCAB, (len(LENGTHS), seq), generator=g) * mask
    token_types = ((torch.arange(seq)[None, :] >= torch.tensor(LENGTHS)[:, None] // 2) & mask.bool()).long()
    labels = torch.where((torch.rand(ids.shape, generator=g) < 0.3) & mask.bool(), ids, -100)
    labels[:, 0] = ids[:, 0]  # every sequence has a masked token
    # One NSP class throughout: with mixed labels the NSP bias gradient, sum(softmax - onehot),
    # cancels to far below the rounding noise of its terms, and its error ratio is a coin flip.
    nsp = torch.zeros(len(LENGTHS), dtype=torch.long)
    inputs = dict(input_ids=ids, attention_mask=mask, token_type_ids=token_types, labels=labels, next_sentence_label=nsp)
    return {name: t.to(device) for name, t in inputs.items()}


def scale_name(name: str) -> str:
    """Whose fp32 gradient sets the atol for ``name``: its own, except for the key bias.
    Softmax ignores a shift shared by all keys, so that gradient is exactly zero and every
    run holds only rounding noise there; the query bias gives the noise its scale."""
    return name.replace("attention.self.key.bias", "attention.self.query.bias")


@pytest.fixture(scope="module")
def ours32() -> BertForPreTraining:
    """fp32, random non-trivial weights, train mode with zero dropout (the training code path, deterministic)."""
    config = BertConfig.preset(
        "tiny", vocab_size=VOCAB, max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    torch.manual_seed(0)
    model = BertForPreTraining(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.train()


@pytest.fixture(scope="module")
def theirs32(ours32, tmp_path_factory) -> torch.nn.Module:
    """transformers' BertForPreTraining with our weights, through a saved checkpoint."""
    transformers = pytest.importorskip("transformers")
    path = tmp_path_factory.mktemp("tiny")
    ours32.save_pretrained(path)
    return transformers.BertForPreTraining.from_pretrained(str(path), attn_implementation="sdpa").train()


@pytest.fixture(scope="module")
def fp32_run(ours32) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    loss, grads, _ = run_ours(ours32, "torch", None)
    return loss, {name: g.clone() for name, g in grads.items()}


def loss_and_grads(model, autocast: torch.dtype | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    device = next(model.parameters()).device.type
    model.zero_grad(set_to_none=True)
    with torch.autocast(device, dtype=autocast or torch.bfloat16, enabled=autocast is not None):
        loss = model(**batch(device)).loss
    loss.backward()
    return loss.detach().cpu(), {name: p.grad.cpu() for name, p in model.named_parameters() if p.grad is not None}


def run_ours(model: BertForPreTraining, backend: str, autocast: torch.dtype | None) -> tuple[torch.Tensor, dict, torch.dtype]:
    """Loss, gradients, and the dtype of the encoder's output (the residual stream)."""
    model.backends.use(kernels=backend)
    seen = []
    hook = model.bert.encoder.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    try:
        loss, grads = loss_and_grads(model, autocast)
    finally:
        hook.remove()
    return loss, grads, seen[0]


def in_mode(model: torch.nn.Module, mode: str, device: str) -> torch.nn.Module:
    low, autocast = MODES[mode]
    model = copy.deepcopy(model).to(device)
    return model if autocast else model.to(low)


def distance(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).norm().item()


def error_bounds(mode: str, exact, baseline) -> tuple[float, Callable[[str], float]]:
    """Loss and per-gradient bounds: twice the baseline's distance from ``exact``, plus one rounding."""
    low = MODES[mode][0]
    (exact_loss, exact_grads), (base_loss, base_grads) = exact, baseline
    rounding = torch.finfo(low).eps / 2

    def grad_bound(name: str) -> float:
        atol = rounding * exact_grads[scale_name(name)].double().norm().item()
        return 2 * distance(base_grads[name], exact_grads[name]) + atol

    return 2 * distance(base_loss, exact_loss) + rounding * abs(exact_loss.item()), grad_bound


def check_run(mode: str, exact, bounds, backend: str, run) -> None:
    low, autocast = MODES[mode]
    (exact_loss, exact_grads), (loss_bound, grad_bound) = exact, bounds
    loss, grads, stream_dtype = run
    assert stream_dtype == low, backend
    assert distance(loss, exact_loss) <= loss_bound, f"{backend} loss {loss.item()} vs fp32 {exact_loss.item()}"
    assert grads.keys() == exact_grads.keys()
    for name, grad in grads.items():
        # fp32 master weights get fp32 gradients under autocast.
        assert grad.dtype == (torch.float32 if autocast else low), name
        error = distance(grad, exact_grads[name])
        assert error <= grad_bound(name), f"{backend} d{name}: error {error:.3g} > {grad_bound(name):.3g}"


@pytest.mark.parametrize("mode", MODES)
def test_both_kernel_backends_within_twice_transformers_error(ours32, theirs32, fp32_run, mode):
    ours = in_mode(ours32, mode, "cpu")
    context = MODES[mode][0] if MODES[mode][1] else None
    bounds = error_bounds(mode, fp32_run, loss_and_grads(in_mode(theirs32, mode, "cpu"), context))
    runs = {backend: run_ours(ours, backend, context) for backend in ("torch", "triton")}
    for backend, run in runs.items():
        check_run(mode, fp32_run, bounds, backend, run)
    # The two kernel backends agree with each other as closely as either may differ from fp32.
    (torch_loss, torch_grads, _), (triton_loss, triton_grads, _) = runs["torch"], runs["triton"]
    loss_bound, grad_bound = bounds
    assert distance(torch_loss, triton_loss) <= loss_bound
    for name, grad in triton_grads.items():
        assert distance(grad, torch_grads[name]) <= grad_bound(name), f"backends differ on d{name}"


@pytest.mark.gpu
@pytest.mark.parametrize("mode", MODES)
def test_cuda_triton_kernels_within_twice_the_torch_paths_error(ours32, fp32_run, mode):
    """Compiled kernels, hardware rounding and the CUDA attention backends."""
    ours = in_mode(ours32, mode, "cuda")
    context = MODES[mode][0] if MODES[mode][1] else None
    bounds = error_bounds(mode, fp32_run, run_ours(ours, "torch", context)[:2])
    check_run(mode, fp32_run, bounds, "triton", run_ours(ours, "triton", context))
