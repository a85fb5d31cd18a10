"""The training loop on a toy model: metrics, checkpoints, exact resume, non-finite losses."""

from __future__ import annotations

import json

import pytest
import torch

from fastbert.train.config import EngineConfig, OptimizerConfig
from fastbert.train.engines import LocalEngine
from fastbert.train.loop import LoopConfig, TrainingDiverged, train
from fastbert.train.sampler import DataOrder

from train_toy import ToyRegressor, toy_batch, toy_batches

BATCHES = toy_batches(12, 4)


class ToyMetrics:
    def batch_sums(self, batch, outputs):
        return {"abs_error": (outputs.prediction - batch.targets["targets"].to(outputs.prediction.device)).abs().sum()}

    def summarize(self, sums):
        return {"mae": sums["abs_error"] / sums["sequences"]}


def run(out_dir, max_steps, resume=False, save_every=0, batches=BATCHES, report_to="jsonl"):
    torch.manual_seed(0)
    optim = OptimizerConfig(lr=1e-2, warmup_steps=2)
    engine = LocalEngine(ToyRegressor(dropout=0.3), EngineConfig(optim=optim, total_steps=8, grad_accum_steps=2))
    config = LoopConfig(out_dir=out_dir, max_steps=max_steps, log_every=1, save_every=save_every, progress=False,
                        run_info={"seed": 0}, report_to=report_to)
    # A padded batch of 4 sequences per micro-batch; two micro-batches per step.
    make_batches = lambda step: iter(batches[2 * step :])  # noqa: E731
    return engine, train(engine, make_batches, config, ToyMetrics(), resume=resume)


def test_loop_logs_checkpoints_and_publishes_the_model(tmp_path):
    engine, result = run(tmp_path, max_steps=4, save_every=2)
    assert result.step == 4 and result.stopped_by == "max_steps"
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for record in records:
        assert record["loss"] > 0 and record["mae"] > 0 and record["grad_norm"] > 0
        assert 0 <= record["data_wait_fraction"] <= 1 and record["sequences_per_s"] > 0
        assert "mfu" not in record  # only measured on a GPU
    assert records[0]["lr"] == pytest.approx(1e-2)  # warmup (step + 1) / 2 after the first update
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step_00000004"
    for step in (2, 4):
        checkpoint = tmp_path / "checkpoints" / f"step_{step:08d}"
        state = json.loads((checkpoint / "trainer_state.json").read_text())
        assert state["step"] == step and state["run_info"] == {"seed": 0}
        assert (checkpoint / "engine" / "engine.pt").is_file() and (checkpoint / "rng_rank0.pt").is_file()
        assert (checkpoint / "hf" / "toy.pt").is_file() == (step == 4)  # the final checkpoint has the HF export
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))
    final = torch.load(tmp_path / "model" / "toy.pt")
    for name, value in engine.module.state_dict().items():
        torch.testing.assert_close(final[name], value, rtol=0, atol=0)


def test_resume_continues_exactly_with_dropout(tmp_path):
    _, straight = run(tmp_path / "straight", max_steps=6)
    run(tmp_path / "resumed", max_steps=3)
    _, resumed = run(tmp_path / "resumed", max_steps=6, resume=True)
    assert [r["step"] for r in resumed.records] == [4, 5, 6]
    assert [r["loss"] for r in resumed.records] == [r["loss"] for r in straight.records[3:]]
    logged = [json.loads(line)["step"] for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3, 4, 5, 6]


def test_resume_refuses_a_changed_run(tmp_path):
    run(tmp_path, max_steps=2)
    torch.manual_seed(0)
    engine = LocalEngine(ToyRegressor(), EngineConfig(total_steps=8))
    config = LoopConfig(out_dir=tmp_path, max_steps=4, progress=False, run_info={"seed": 1})
    with pytest.raises(Exception, match="seed=0"):
        train(engine, lambda step: iter(BATCHES), config, ToyMetrics(), resume=True)


def test_non_finite_loss_stops_before_the_optimizer_steps(tmp_path):
    poisoned = list(BATCHES)
    poisoned[5] = toy_batch(BATCHES[5].inputs, torch.full_like(BATCHES[5].targets["targets"], float("nan")))  # step 3, second micro-batch
    with pytest.raises(TrainingDiverged, match="non-finite loss at step 3") as caught:
        run(tmp_path, max_steps=6, save_every=2, batches=poisoned)
    assert "step_00000002" in str(caught.value)
    # The checkpoint of step 2 is the newest state; nothing after it was written.
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step_00000002"


def test_a_diverged_run_ends_its_tracker_runs_as_failed(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    poisoned = list(BATCHES)
    poisoned[5] = toy_batch(BATCHES[5].inputs, torch.full_like(BATCHES[5].targets["targets"], float("nan")))
    with pytest.raises(TrainingDiverged):
        run(tmp_path / "diverged", max_steps=6, batches=poisoned, report_to="jsonl,mlflow")
    run(tmp_path / "healthy", max_steps=2, report_to="jsonl,mlflow")
    statuses = {}
    for name in ("diverged", "healthy"):
        client = MlflowClient(tracking_uri=(tmp_path / name / "mlruns").resolve().as_uri())
        (tracked,) = client.search_runs([client.get_experiment_by_name("fastbert").experiment_id])
        statuses[name] = tracked.info.status
    assert statuses == {"diverged": "FAILED", "healthy": "FINISHED"}


def test_data_order_does_not_depend_on_the_world_size():
    def slots(world, accum, steps=5):
        per_rank = [DataOrder(50, 4, accum, world, rank, seed=7).micro_batches(0) for rank in range(world)]
        out = []
        for _ in range(steps * accum):
            for it in per_rank:
                out.append(next(it))
        return out

    one_rank, two_ranks = slots(world=1, accum=2), slots(world=2, accum=1)
    assert one_rank == two_ranks
    assert len({i for batch in one_rank for _, i in batch}) == 40  # no sample twice within an epoch
    # Step 6 needs samples 48..55 of a 50-sample epoch: the tail is skipped, epoch 1 starts.
    order = DataOrder(50, 4, 2, 1, 0, seed=7)
    assert order.steps_per_epoch == 6 and order.position(7) == (1, 8)
    resumed = order.micro_batches(start_step=7)
    fresh = order.micro_batches(0)
    for _ in range(14):
        next(fresh)
    assert next(resumed) == next(fresh)


def test_evaluation_hook_runs_every_n_steps_and_at_the_end_without_changing_training(tmp_path):
    _, plain = run(tmp_path / "plain", max_steps=5)
    calls = []

    def evaluate(step, trained):
        calls.append((step, trained))
        return {"step_seen": step}

    torch.manual_seed(0)
    engine = LocalEngine(ToyRegressor(dropout=0.3), EngineConfig(optim=OptimizerConfig(lr=1e-2, warmup_steps=2), total_steps=8, grad_accum_steps=2))
    config = LoopConfig(out_dir=tmp_path / "hooked", max_steps=5, log_every=1, eval_every=2, progress=False)
    result = train(engine, lambda step: iter(BATCHES[2 * step:]), config, ToyMetrics(), evaluate=evaluate)
    assert [step for step, _ in calls] == [2, 4, 5]  # every eval_every steps, and the last step
    assert [r["loss"] for r in result.records] == [r["loss"] for r in plain.records]  # training unchanged
    # What the hook is told about training covers the steps since the previous evaluation.
    assert calls[0][1]["loss"] == pytest.approx((plain.records[0]["loss"] + plain.records[1]["loss"]) / 2)
    assert calls[2][1]["loss"] == pytest.approx(plain.records[4]["loss"])
    assert calls[0][1]["tokens"] == 2 * 2 * BATCHES[0].num_tokens and calls[0][1]["seconds"] > 0
    logged = [json.loads(line) for line in (tmp_path / "hooked" / "metrics.jsonl").read_text().splitlines()]
    assert [r["eval"] for r in logged if "eval" in r] == [{"step_seen": 2}, {"step_seen": 4}, {"step_seen": 5}]
    assert result.evaluations == [{"step": s, "eval": {"step_seen": s}} for s in (2, 4, 5)]


def test_without_a_final_save_nothing_is_checkpointed_or_published(tmp_path):
    torch.manual_seed(0)
    engine = LocalEngine(ToyRegressor(), EngineConfig(total_steps=8, grad_accum_steps=2))
    config = LoopConfig(out_dir=tmp_path, max_steps=2, save_final=False, progress=False)
    result = train(engine, lambda step: iter(BATCHES), config, ToyMetrics())
    assert result.step == 2 and result.checkpoint is None
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "model").exists()


@pytest.mark.parametrize("optimizer", ["adamw", "lamb"])
def test_a_skipped_non_finite_step_stops_the_run_at_the_next_log_with_its_step_number(tmp_path, optimizer):
    poisoned = list(BATCHES)
    poisoned[4] = toy_batch(BATCHES[4].inputs, torch.full_like(BATCHES[4].targets["targets"], float("inf")))  # step 3
    torch.manual_seed(0)
    optim = OptimizerConfig(optimizer=optimizer, lr=1e-2, warmup_steps=2)
    engine = LocalEngine(ToyRegressor(dropout=0.3), EngineConfig(optim=optim, total_steps=8, grad_accum_steps=2))
    config = LoopConfig(out_dir=tmp_path, max_steps=6, log_every=5, progress=False)
    with pytest.raises(TrainingDiverged, match="non-finite loss at step 3"):
        train(engine, lambda step: iter(poisoned[2 * step:]), config, ToyMetrics())
    assert engine.global_step == 5  # detected when step 5 logged, without a host read before
    # The skipped update touched nothing: four real steps, finite weights.
    assert all(torch.isfinite(p).all() for p in engine.module.parameters())
    assert {int(s["step"]) for s in engine.optimizer.state.values()} == {4}
    assert not (tmp_path / "checkpoints").exists()  # no checkpoint is written after a skipped step


def test_the_time_budget_is_checked_when_logging(tmp_path):
    torch.manual_seed(0)
    engine = LocalEngine(ToyRegressor(), EngineConfig(total_steps=8, grad_accum_steps=2))
    config = LoopConfig(out_dir=tmp_path, max_steps=6, log_every=2, max_minutes=1e-9, progress=False)
    result = train(engine, lambda step: iter(BATCHES[2 * step:]), config, ToyMetrics())
    assert result.stopped_by == "time" and result.step == 2  # the first logging step after the budget
    assert (tmp_path / "checkpoints" / "step_00000002").is_dir()
