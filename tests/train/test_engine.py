"""Local engine, its optimizers (LAMB's own tests: test_lamb.py) and the schedule on a toy model."""

from __future__ import annotations

import pytest
import torch

from fastbert.errors import UserError
from fastbert.train.config import EngineConfig, OptimizerConfig
from fastbert.train.engines.optim import build_optimizer
from fastbert.train.engines import LocalEngine, build_engine
from fastbert.train.schedule import linear_warmup_decay, parameter_groups

from train_toy import ToyRegressor, toy_batch, toy_batches


def make_engine(optimizer="adamw", seed=0, **overrides) -> LocalEngine:
    torch.manual_seed(seed)
    optim = OptimizerConfig(optimizer=optimizer, lr=overrides.pop("lr", 1e-2), warmup_steps=overrides.pop("warmup_steps", 0),
                            grad_clip=overrides.pop("grad_clip", 1.0))
    config = EngineConfig(optim=optim, total_steps=overrides.pop("total_steps", 100), **overrides)
    engine = build_engine(ToyRegressor(), config)
    assert isinstance(engine, LocalEngine)
    return engine


def mean_loss(engine, batches) -> float:
    return sum(engine.forward(b).loss.item() for b in batches) / len(batches)


@pytest.mark.parametrize("optimizer", ["adamw", "lamb"])
def test_training_reduces_loss(optimizer):
    engine = make_engine(optimizer)
    batches = toy_batches(20, 32)
    before = mean_loss(engine, batches)
    for _ in range(5):
        for batch in batches:
            engine.train_step(batch)
    assert engine.global_step == 100
    assert engine.grad_norm is not None and engine.grad_norm > 0
    assert mean_loss(engine, batches) < 0.5 * before


def test_schedule_warms_up_then_decays_to_zero():
    multiplier = linear_warmup_decay(warmup_steps=4, total_steps=10)
    assert [multiplier(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert [multiplier(s) for s in range(4, 11)] == pytest.approx([1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6, 0.0])

    engine = make_engine(lr=1.0, warmup_steps=2, total_steps=6)
    seen = []
    for batch in toy_batches(6, 4):
        seen.append(engine.get_lr())
        engine.train_step(batch)
    assert seen == pytest.approx([0.5, 1.0, 1.0, 0.75, 0.5, 0.25])


def test_no_weight_decay_on_biases_and_layer_norm():
    model = ToyRegressor()
    decay, no_decay = parameter_groups(model, weight_decay=0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model.hidden.weight), id(model.head.weight)}
    assert {id(p) for p in no_decay["params"]} == {id(model.hidden.bias), id(model.norm.weight), id(model.norm.bias), id(model.head.bias)}


def test_gradient_accumulation_matches_one_big_batch():
    whole = make_engine(micro_batch_size=8)
    split = make_engine(micro_batch_size=4, grad_accum_steps=2)
    for batch in toy_batches(3, 8):
        whole.train_step(batch)
        for half in (slice(0, 4), slice(4, 8)):
            split.train_step(toy_batch(batch.inputs[half], batch.targets["targets"][half]))
    assert whole.global_step == split.global_step == 3
    for a, b in zip(whole.module.parameters(), split.module.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_gradient_clipping_reports_the_unclipped_norm():
    engine = make_engine(grad_clip=1e-3, lr=1e-9)
    batch = toy_batches(1, 16)[0]
    twin = make_engine().module  # the same initial weights: its gradient is the engine's before clipping
    twin(batch.inputs, **batch.targets).loss.backward()
    grads = torch.cat([p.grad.flatten() for p in twin.parameters()])
    engine.train_step(batch)
    assert engine.grad_norm == pytest.approx(grads.norm().item(), rel=1e-5)
    assert engine.grad_norm > 1e-3


@pytest.mark.parametrize("kernels", ["torch", "triton"])
@pytest.mark.parametrize("grad_clip", [1e-3, 0.0])
def test_clipped_update_equals_clip_grad_norm_then_adamw(grad_clip, kernels, monkeypatch):
    """The engine clips inside the fused AdamW (its grad_scale, from the update's verdict: torch
    ops, or one Triton launch): the same update as clip_grad_norm_ first."""
    monkeypatch.setenv("FASTBERT_KERNELS", kernels)  # triton: through the interpreter here
    engine = make_engine(grad_clip=grad_clip)
    batches = toy_batches(3, 16)
    torch.manual_seed(0)
    twin = ToyRegressor()
    optimizer = build_optimizer(twin, engine.config.optim, torch.device("cpu"))
    for batch in batches:
        engine.train_step(batch)
        twin(batch.inputs, **batch.targets).loss.backward()
        if grad_clip:
            norm = torch.nn.utils.clip_grad_norm_(twin.parameters(), grad_clip)
            assert norm > 10 * grad_clip  # clipping is active
        optimizer.step()
        optimizer.zero_grad()
        for group in optimizer.param_groups:  # the engine's schedule, by hand: linear decay over 100 steps
            group["lr"] = engine.get_lr()
    for ours, theirs in zip(engine.module.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)


def test_checkpoint_round_trip_continues_identically(tmp_path):
    batches = toy_batches(8, 8)
    reference = make_engine("lamb")
    for batch in batches:
        reference.train_step(batch)

    first = make_engine("lamb")
    for batch in batches[:4]:
        first.train_step(batch)
    first.save_checkpoint(tmp_path, {"note": "half"})
    resumed = make_engine("lamb", seed=123)  # different init: everything must come from the checkpoint
    assert resumed.load_checkpoint(tmp_path) == {"note": "half"}
    assert resumed.global_step == 4
    for batch in batches[4:]:
        resumed.train_step(batch)
    for a, b in zip(reference.module.parameters(), resumed.module.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert resumed.get_lr() == reference.get_lr()


def test_bad_engine_settings_are_user_errors():
    with pytest.raises(UserError, match="optimizer 'sgd'"):
        OptimizerConfig(optimizer="sgd")
    with pytest.raises(UserError, match="grad_accum_steps"):
        EngineConfig(grad_accum_steps=0)


@pytest.mark.parametrize("kernels", ["torch", "triton"])
@pytest.mark.parametrize("optimizer", ["adamw", "lamb"])
def test_a_non_finite_gradient_with_a_finite_loss_skips_its_update_and_is_named(optimizer, kernels, monkeypatch):
    from fastbert.train.engines.base import TrainingDiverged

    monkeypatch.setenv("FASTBERT_KERNELS", kernels)
    engine = make_engine(optimizer)
    batches = toy_batches(4, 8)
    weight = next(engine.module.parameters())
    poisoned_step = {"now": False}
    weight.register_hook(lambda grad: torch.full_like(grad, float("inf")) if poisoned_step["now"] else grad)
    engine.train_step(batches[0])
    engine.raise_if_diverged()  # a healthy step: nothing to report
    before = [p.detach().clone() for p in engine.module.parameters()]
    poisoned_step["now"] = True
    outputs = engine.train_step(batches[1])  # step 2: finite loss, infinite gradient
    poisoned_step["now"] = False
    assert torch.isfinite(outputs.loss)
    assert all(torch.equal(a, b) for a, b in zip(before, engine.module.parameters()))  # the update was skipped
    engine.train_step(batches[2])
    assert not all(torch.equal(a, b) for a, b in zip(before, engine.module.parameters()))  # later steps update
    with pytest.raises(TrainingDiverged, match="non-finite gradient norm at step 2;"):
        engine.raise_if_diverged()
