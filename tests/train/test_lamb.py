"""The multi-tensor LAMB against the per-tensor loop it replaced, its device-side skip, its state and DeepSpeed."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from benchmarks.lamb_reference import PerTensorLamb
from benchmarks.op_count import OpCounter
from fastbert.errors import UserError
from fastbert.train.config import EngineConfig, OptimizerConfig
from fastbert.train.engines.deepspeed_engine import resolve_deepspeed_config
from fastbert.train.lamb import Lamb
from fastbert.train.schedule import parameter_groups

HYPER = dict(lr=0.02, betas=(0.9, 0.999), eps=1e-6)


class Shapes(nn.Module):
    """Matrices, a 3-d kernel, an embedding table, LayerNorm and a zero-initialised bias."""

    def __init__(self, dtype=torch.float32):
        super().__init__()
        self.embed = nn.Embedding(50, 24)
        self.proj = nn.Linear(24, 130)
        self.norm = nn.LayerNorm(130)
        self.conv = nn.Conv1d(3, 7, kernel_size=5)
        self.head = nn.Linear(130, 1)
        nn.init.zeros_(self.proj.bias)
        self.to(dtype)


def twins(optimizers, dtype=torch.float32, weight_decay=0.01, seed=0, **hyper):
    """Identical models, one per optimizer class, with the weight-decay groups the engines use."""
    out = []
    for make in optimizers:
        torch.manual_seed(seed)
        model = Shapes(dtype)
        out.append((model, make(parameter_groups(model, weight_decay), **{**HYPER, **hyper})))
    return out


def set_grads(models, step):
    """Fresh random gradients, the same for every twin; the head gets none on odd steps."""
    torch.manual_seed(1000 + step)
    for name, _ in models[0].named_parameters():
        grad = None if name.startswith("head") and step % 2 else torch.randn(dict(models[0].named_parameters())[name].shape)
        for model in models:
            param = dict(model.named_parameters())[name]
            param.grad = None if grad is None else grad.to(param.dtype)


def assert_same_state(ours, reference, rtol):
    """Parameters, moments and steps equal to ``rtol`` of each tensor's largest entry."""
    for (name, a), b in zip(ours[0].named_parameters(), reference[0].parameters()):
        sa, sb = ours[1].state[a], reference[1].state[b]
        assert sa["step"].item() == sb["step"], name
        for key, x, y in (("weight", a, b), ("exp_avg", sa["exp_avg"], sb["exp_avg"]), ("exp_avg_sq", sa["exp_avg_sq"], sb["exp_avg_sq"])):
            assert key == "weight" or x.dtype == torch.float32
            torch.testing.assert_close(x, y, rtol=rtol, atol=rtol * y.abs().max().item(), msg=lambda m: f"{name} {key}: {m}")


@pytest.fixture(params=["cpu-buffers", "fresh-buffers"])
def buffers(request, monkeypatch):
    """The CPU keeps its update buffers between steps; other devices (CUDA) take fresh ones."""
    if request.param == "fresh-buffers":
        monkeypatch.setattr(Lamb, "_update_buffers", lambda self, params: None)


@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.0, 0.98)], ids=str)
@pytest.mark.parametrize("found_inf", [None, torch.tensor(0.0)], ids=["no-found-inf", "found-inf-0"])
def test_twenty_steps_match_the_per_tensor_loop(found_inf, betas, buffers):
    ours, reference = twins([Lamb, PerTensorLamb], betas=betas)
    ours[1].found_inf = found_inf
    for step in range(20):
        set_grads([ours[0], reference[0]], step)
        ours[1].step()
        reference[1].step()
    assert_same_state(ours, reference, rtol=1e-6)
    assert ours[0].head.weight.grad is None and ours[1].state[ours[0].head.weight]["step"].item() == 10


def test_bf16_parameters_keep_fp32_moments_and_match_the_loop():
    """fp32 math on both sides; a rounding that flips moves a bf16 weight by one ulp (2^-8 relative)."""
    ours, reference = twins([Lamb, PerTensorLamb], dtype=torch.bfloat16)
    for step in range(20):
        set_grads([ours[0], reference[0]], step)
        ours[1].step()
        reference[1].step()
    assert all(p.dtype == torch.bfloat16 for p in ours[0].parameters())
    assert_same_state(ours, reference, rtol=2**-7)


def test_step_scales_each_tensor_by_its_trust_ratio():
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(5, 3))
    bias = torch.nn.Parameter(torch.zeros(3))
    start = weight.detach().clone()
    weight.grad, bias.grad = torch.randn(5, 3), torch.randn(3)
    opt = Lamb([{"params": [weight], "weight_decay": 0.1}, {"params": [bias], "weight_decay": 0.0}], lr=0.01, eps=1e-6)
    bias_grad = bias.grad.clone()
    grad = weight.grad.clone()
    opt.step()
    # After one step Adam's bias-corrected ratio is g / (|g| + eps).
    update = grad / (grad.abs() + 1e-6) + 0.1 * start
    expected = start - 0.01 * (start.norm() / update.norm()) * update
    torch.testing.assert_close(weight.detach(), expected)
    # A zero-norm tensor (a fresh bias) moves by plain lr × Adam step: trust ratio 1.
    torch.testing.assert_close(bias.detach(), -0.01 * bias_grad / (bias_grad.abs() + 1e-6))


def snapshot(model, optimizer):
    """Parameters, moments and steps; a tensor without state yet counts as zero moments at step 0."""
    fresh = lambda p: dict(step=torch.tensor(0.0), exp_avg=torch.zeros_like(p, dtype=torch.float32),
                               exp_avg_sq=torch.zeros_like(p, dtype=torch.float32))  # noqa: E731
    return [t.clone() for p in model.parameters() for t in (p, *(optimizer.state[p] or fresh(p)).values())]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("found_dtype", [torch.float32, torch.bool], ids=str)
@pytest.mark.parametrize("skip_at", [0, 3])
def test_found_inf_skips_the_step_exactly(skip_at, found_dtype, dtype, buffers):
    (model, opt), (twin, twin_opt) = twins([Lamb, Lamb], dtype=dtype)
    opt.found_inf = twin_opt.found_inf = torch.tensor(0, dtype=found_dtype)
    for step in range(skip_at):
        set_grads([model, twin], step)
        opt.step()
        twin_opt.step()

    before = snapshot(model, opt)
    for i, p in enumerate(model.parameters()):
        p.grad = torch.full_like(p, (float("nan"), float("inf"), -float("inf"))[i % 3])
    opt.found_inf = torch.tensor(1, dtype=found_dtype)
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(snapshot(model, opt), before, strict=True))

    opt.found_inf = torch.tensor(0, dtype=found_dtype)
    set_grads([model, twin], skip_at)
    opt.step()
    twin_opt.step()
    assert all(torch.equal(a, b) for a, b in zip(snapshot(model, opt), snapshot(twin, twin_opt)))


def test_step_reads_nothing_on_the_host():
    """On the meta device every host read (item, bool, tolist) raises."""
    with torch.device("meta"):
        model = Shapes()
    opt = Lamb(parameter_groups(model, 0.01), **HYPER)
    opt.found_inf = torch.zeros((), device="meta")
    for p in model.parameters():
        p.grad = torch.empty_like(p)
    opt.step()
    opt.step()


def test_op_count_does_not_grow_with_the_number_of_tensors():
    def ops_per_step(tensors: int) -> int:
        params = [nn.Parameter(torch.randn(8, 3)) for _ in range(tensors)]
        opt = Lamb([{"params": params, "weight_decay": 0.01}], **HYPER)
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
        with OpCounter() as ops:
            opt.step()
        return ops.total

    assert ops_per_step(3) == ops_per_step(40) < 40


def saved_and_loaded(state_dict):
    """Through bytes, as a checkpoint goes: load_state_dict keeps the tensors it is given."""
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_state_dict_round_trip_continues_identically():
    (model, opt), (twin, twin_opt) = twins([Lamb, Lamb])
    for step in range(5):
        set_grads([model, twin], step)
        opt.step()
        twin_opt.step()
    (resumed, resumed_opt), = twins([Lamb], seed=123)
    resumed.load_state_dict(model.state_dict())
    resumed_opt.load_state_dict(saved_and_loaded(opt.state_dict()))
    for step in range(5, 10):
        set_grads([twin, resumed], step)
        twin_opt.step()
        resumed_opt.step()
    assert all(torch.equal(a, b) for a, b in zip(snapshot(resumed, resumed_opt), snapshot(twin, twin_opt)))


def test_loads_a_per_tensor_loop_checkpoint():
    """Checkpoints written before the multi-tensor version hold the step as an int."""
    (old, old_opt), (model, opt) = twins([PerTensorLamb, Lamb])
    for step in range(3):
        set_grads([old], step)
        old_opt.step()
    model.load_state_dict(old.state_dict())
    opt.load_state_dict(saved_and_loaded(old_opt.state_dict()))
    assert all(s["step"].dtype == torch.float32 for s in opt.state.values())
    for step in range(3, 8):
        set_grads([old, model], step)
        old_opt.step()
        opt.step()
    assert_same_state((model, opt), (old, old_opt), rtol=1e-6)


@pytest.mark.parametrize("cuda", [True, False], ids=["cuda", "cpu"])
@pytest.mark.parametrize("bf16", [True, False], ids=["bf16", "fp32"])
@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_deepspeed_takes_our_lamb_at_zero_stage_0_and_refuses_it_above(stage, bf16, cuda):
    """Stage 0 hands a client optimizer whole tensors (fp32 masters under bf16); 1-3 hand it flat shards."""
    config = EngineConfig(optim=OptimizerConfig(optimizer="lamb"),
                          deepspeed_config={"zero_optimization": {"stage": stage}, "bf16": {"enabled": bf16}})
    if stage == 0:
        ds = resolve_deepspeed_config(config, cuda=cuda)
        assert "optimizer" not in ds and ds["bf16"]["enabled"] is bf16  # fastbert's Lamb, not DeepSpeed's FusedLamb
    else:
        with pytest.raises(UserError, match=f"ZeRO stage {stage} shards them") as refused:
            resolve_deepspeed_config(config, cuda=cuda)
        assert "\n" not in str(refused.value)
