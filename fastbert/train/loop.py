"""The training loop shared by pretraining and fine-tuning.

Per micro-batch: ``engine.train_step(batch)`` (forward, backward, and the update when the
micro-batch closes an accumulation window; the engine never steps on a non-finite loss).
Around that: metrics every ``log_every`` optimizer steps (summed over ranks, shown on a
tqdm bar, appended to metrics.jsonl and sent to the ``report_to`` trackers), an evaluation hook every ``eval_every`` steps and at
the end, checkpoints every ``save_every`` steps and at the end, and resume from the latest
complete checkpoint.

Between logging steps nothing is read from the device and no collective runs, so the host
can queue steps ahead of the GPU: a skipped non-finite step is reported (and stops the
run) at the next log or checkpoint, and the time budget is checked when logging, in the
same all-reduce as the metrics.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from ..errors import UserError
from ..model.inputs import Batch
from .checkpoint import CheckpointManager
from .config import CheckpointPolicy
from .engines import Engine, TrainingDiverged
from .metrics import MetricsLog, peak_flops
from .trackers import Trackers

logger = logging.getLogger(__name__)

__all__ = ["LoopConfig", "LoopResult", "TaskMetrics", "TrainingDiverged", "train"]


class TaskMetrics(Protocol):
    """What a task adds to the loop's metrics."""

    def batch_sums(self, batch: Batch, outputs: Any) -> dict[str, torch.Tensor | float]:
        """Quantities to sum over micro-batches and ranks (tensors stay on the device until logging)."""

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        """Turn summed quantities into the logged values (means, accuracies)."""


Evaluation = Callable[[int, dict[str, Any]], dict[str, Any]]
"""``evaluate(step, train)`` → metrics to log; ``train`` summarizes training since the last
evaluation (the logged keys plus ``tokens`` and ``seconds``)."""


@dataclass
class LoopConfig:
    out_dir: Path
    """Where metrics.jsonl, checkpoints/ and the final model/ go."""
    max_steps: int
    """Optimizer steps to reach (counting steps done before a resume)."""
    log_every: int = 10
    """Log metrics every this many optimizer steps."""
    eval_every: int = 0
    """Run the evaluation hook every this many steps (and at the end); 0: only at the end."""
    save_every: int = 0
    """Checkpoint every this many steps; 0 means only at the end."""
    checkpoint_policy: CheckpointPolicy = field(default_factory=CheckpointPolicy)
    """Which checkpoints get an HF export and which are kept."""
    save_final: bool = True
    """Checkpoint at the end and publish its HF export as ``out_dir/model`` (fine-tuning keeps its best model itself)."""
    max_minutes: float | None = None
    """Stop (with a checkpoint) at the first logging step after this much wall time; None means no limit."""
    progress: bool = True
    """Show a tqdm progress bar on the main rank."""
    run_info: dict[str, Any] = field(default_factory=dict)
    """Static facts stored in every checkpoint (seed, batch size, data) and checked by the caller on resume."""
    report_to: str = "jsonl"
    """Trackers that get every record besides metrics.jsonl (fastbert.train.trackers), comma-separated."""
    settings: dict[str, Any] = field(default_factory=dict)
    """The run's settings, recorded by the trackers (W&B config, MLflow params, TensorBoard text)."""


@dataclass
class LoopResult:
    step: int
    """Optimizer steps done at the end."""
    records: list[dict[str, Any]]
    """The training metrics logged by this invocation."""
    evaluations: list[dict[str, Any]]
    """What the evaluation hook returned, with its step."""
    checkpoint: Path | None
    """The last checkpoint written."""
    stopped_by: str
    """"max_steps", "time" or "data"."""


class _Meter:
    """Sums of per-micro-batch quantities between two logging steps."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor | float] = {}
        self.data_wait = 0.0
        self.started = time.perf_counter()

    def add(self, values: dict[str, torch.Tensor | float]) -> None:
        for key, value in values.items():
            value = value.detach().double() if torch.is_tensor(value) else float(value)
            self.sums[key] = self.sums[key] + value if key in self.sums else value

    def reduce(self, engine: Engine, out_of_time: bool) -> dict[str, float]:
        """The sums over all ranks, read to the host (the logging step's one sync); ``out_of_time``
        rides along, so that every rank learns whether any rank ran out of time."""
        keys = sorted(self.sums)
        values = torch.stack([torch.as_tensor(self.sums[k], dtype=torch.float64).to(engine.device) for k in keys])
        host = torch.tensor([self.data_wait, float(out_of_time)], dtype=torch.float64, device=engine.device)
        totals = engine.sum_across_ranks(torch.cat([values, host])).tolist()
        out = dict(zip(keys, totals[:-2]))
        out["data_wait_s"] = totals[-2] / engine.world_size
        out["out_of_time"] = totals[-1]
        out["seconds"] = time.perf_counter() - self.started
        return out


def train(
    engine: Engine,
    make_batches: Callable[[int], Iterator[Batch]],
    config: LoopConfig,
    task: TaskMetrics,
    *,
    evaluate: Evaluation | None = None,
    resume: bool | str | os.PathLike = False,
    tokenizer: Any = None,
    flops_per_token: Callable[[float], float] | None = None,
) -> LoopResult:
    """Train until ``config.max_steps`` (or the time budget, or the end of the data).

    ``make_batches(step)`` yields this rank's micro-batches starting at optimizer step
    ``step``; with ``resume`` (True: the newest complete checkpoint; a path: that checkpoint)
    the loop restores it first and asks for batches from there, so the run continues exactly
    as if it had not stopped.
    """
    out_dir = Path(config.out_dir)
    checkpoints = CheckpointManager(out_dir / "checkpoints", engine, config.checkpoint_policy)
    metrics_log = MetricsLog(out_dir / "metrics.jsonl")
    start_step, last_checkpoint = 0, None
    if resume:
        last_checkpoint = checkpoints.resume_point(resume)  # verified; says which it skipped and why
        state = checkpoints.load(last_checkpoint)
        _check_run_info(last_checkpoint, state.get("run_info", {}), config.run_info)
        start_step = state["step"]
        if engine.is_main:
            logger.info("resumed from %s at step %d", last_checkpoint, start_step)
    if engine.is_main:
        metrics_log.truncate_after(start_step)
    trackers = Trackers.open(config.report_to, out_dir, config.settings, start_step) if engine.is_main else Trackers([])
    try:
        peak = peak_flops(engine.device)

        step = start_step
        records: list[dict[str, Any]] = []
        evaluations: list[dict[str, Any]] = []
        since_eval: dict[str, float] = {}  # summed training quantities since the last evaluation
        shown: dict[str, str] = {}  # the progress bar's latest training and held-out numbers
        meter = _Meter()

        def check_finite() -> None:
            try:
                engine.raise_if_diverged()
            except TrainingDiverged as err:
                raise _diverged(err, last_checkpoint) from None

        def log() -> bool:
            """Log the interval's metrics; whether any rank is out of time."""
            nonlocal meter
            check_finite()
            out_of_time = config.max_minutes is not None and time.perf_counter() - started > 60 * config.max_minutes
            sums = meter.reduce(engine, out_of_time)
            out_of_time = sums.pop("out_of_time") > 0
            for key, value in sums.items():
                since_eval[key] = since_eval.get(key, 0.0) + value
            record = _summarize(engine, sums, task, step, peak, flops_per_token)
            records.append(record)
            if engine.is_main:
                metrics_log.append(record)
                trackers.log(record)
                shown.update({k: f"{record[k]:.4g}" for k in _BAR_KEYS if k in record})
                bar.set_postfix(shown, refresh=False)
            meter = _Meter()
            return out_of_time

        def run_evaluation() -> None:
            nonlocal meter
            train_summary = {**_summarize(engine, since_eval, task, step, peak, flops_per_token),
                             "tokens": since_eval["tokens"], "seconds": since_eval["seconds"]}
            since_eval.clear()
            result = {"step": step, "eval": evaluate(step, train_summary)}
            evaluations.append(result)
            if engine.is_main:
                metrics_log.append(result)
                trackers.log(result)
                shown.update({f"eval_{k}": f"{result['eval'][k]:.4g}" for k in _BAR_EVAL_KEYS if k in result["eval"]})
                bar.set_postfix(shown)
            meter = _Meter()  # evaluation time is not training throughput

        stopped_by = "data"
        started = time.perf_counter()
        bar = _progress_bar(engine, config, start_step)
        batches = make_batches(start_step)
        while step < config.max_steps:
            wait_start = time.perf_counter()
            batch = next(batches, None)
            if batch is None:
                break
            meter.data_wait += time.perf_counter() - wait_start
            try:
                outputs = engine.train_step(batch)
            except TrainingDiverged as err:  # from an engine that checks before each update
                raise _diverged(err, last_checkpoint) from None
            meter.add({"loss": outputs.loss, "micro_batches": 1, "tokens": batch.num_tokens,
                       "sequences": batch.num_sequences, **task.batch_sums(batch, outputs)})
            if engine.global_step == step:
                continue  # inside an accumulation window: no update happened
            step = engine.global_step
            bar.update(1)

            evaluate_now = evaluate is not None and config.eval_every > 0 and step % config.eval_every == 0
            out_of_time = False
            if step % config.log_every == 0 or step == config.max_steps or evaluate_now:
                out_of_time = log()
            if evaluate_now:
                run_evaluation()
            if out_of_time:
                stopped_by = "time"
                break
            if config.save_every and step % config.save_every == 0 and step < config.max_steps:
                check_finite()
                last_checkpoint = checkpoints.save(step, {"run_info": config.run_info}, tokenizer)
        else:
            stopped_by = "max_steps"
        if meter.sums:  # the data ran out inside a logging interval
            log()
        if evaluate is not None and (not evaluations or evaluations[-1]["step"] != step) and since_eval:
            run_evaluation()
        bar.close()
        check_finite()
    except BaseException:  # a diverged run, an error or Ctrl-C: the trackers' runs end as failed
        trackers.close(failed=True)
        raise
    trackers.close()
    if config.save_final:
        if last_checkpoint is None or last_checkpoint.name != f"step_{step:08d}":
            last_checkpoint = checkpoints.save(step, {"run_info": config.run_info}, tokenizer, final=True)
        checkpoints.publish_model(last_checkpoint, out_dir / "model", tokenizer)
    engine.barrier()
    return LoopResult(step, records, evaluations, last_checkpoint, stopped_by)


_BAR_KEYS = ("loss", "mlm_acc", "nsp_acc", "lr", "tokens_per_s")
_BAR_EVAL_KEYS = ("mlm_loss", "nsp_acc")


def _summarize(engine, sums, task, step, peak, flops_per_token) -> dict[str, Any]:
    seconds = sums["seconds"]
    record: dict[str, Any] = {"step": step, "loss": sums["loss"] / sums["micro_batches"]}
    record.update(task.summarize(sums))
    record["lr"] = engine.get_lr()
    record["grad_norm"] = engine.grad_norm
    record["tokens_per_s"] = sums["tokens"] / seconds
    record["sequences_per_s"] = sums["sequences"] / seconds
    record["data_wait_fraction"] = min(1.0, sums["data_wait_s"] / seconds)
    if peak is not None and flops_per_token is not None and sums["sequences"]:
        flops = flops_per_token(sums["tokens"] / sums["sequences"]) * record["tokens_per_s"]
        record["mfu"] = flops / (peak * engine.world_size)
    return record


def _diverged(err: TrainingDiverged, last_checkpoint: Path | None) -> TrainingDiverged:
    return TrainingDiverged(f"{err} (lower the learning rate or check the data; the last checkpoint is {last_checkpoint})")


def _check_run_info(checkpoint: Path, saved: dict[str, Any], current: dict[str, Any]) -> None:
    for key, value in current.items():
        if key in saved and saved[key] != value:
            raise UserError(f"{checkpoint}: was trained with {key}={saved[key]!r}, this run has {value!r}; resuming would change the data order")


def _progress_bar(engine: Engine, config: LoopConfig, start_step: int):
    from tqdm.auto import tqdm

    return tqdm(total=config.max_steps, initial=start_step, disable=not (engine.is_main and config.progress), unit="step", dynamic_ncols=True)
