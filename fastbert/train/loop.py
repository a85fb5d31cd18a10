"""The training loop shared by pretraining and fine-tuning.

Per micro-batch: ``engine(**batch)``, ``engine.backward(loss)``, ``engine.step()``. Around
that: a non-finite check before every optimizer update (one host sync per update), metrics
every ``log_every`` steps (summed over ranks, printed on a tqdm bar, appended to
metrics.jsonl), checkpoints every ``save_every`` steps and at the end, and resume from the
latest complete checkpoint. The loop never divides losses: the engine owns accumulation.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from ..errors import UserError
from .checkpoint import CheckpointManager
from .engine import Engine
from .metrics import MetricsLog, peak_flops

logger = logging.getLogger(__name__)


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; no optimizer step was taken on it."""


class TaskMetrics(Protocol):
    """What a task adds to the loop's metrics."""

    def batch_sums(self, batch: dict[str, Any], outputs: Any) -> dict[str, torch.Tensor | float]:
        """Quantities to sum over micro-batches and ranks (tensors stay on the device until logging)."""

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        """Turn summed quantities into the logged values (means, accuracies)."""


@dataclass
class LoopConfig:
    out_dir: Path
    """Where metrics.jsonl, checkpoints/ and the final model/ go."""
    max_steps: int
    """Optimizer steps to reach (counting steps done before a resume)."""
    grad_accum_steps: int = 1
    """Micro-batches per optimizer step; must match the engine's."""
    log_every: int = 10
    """Log metrics every this many optimizer steps."""
    save_every: int = 0
    """Checkpoint every this many steps; 0 means only at the end."""
    max_minutes: float | None = None
    """Stop (with a checkpoint) once this much wall time has passed; None means no limit."""
    progress: bool = True
    """Show a tqdm progress bar on the main rank."""
    run_info: dict[str, Any] = field(default_factory=dict)
    """Static facts stored in every checkpoint (seed, batch size, data) and checked by the caller on resume."""


@dataclass
class LoopResult:
    step: int
    """Optimizer steps done at the end."""
    records: list[dict[str, Any]]
    """The metrics logged by this invocation."""
    checkpoint: Path | None
    """The last checkpoint written."""
    stopped_by: str
    """"max_steps", "time" or "data"."""


def count_tokens_and_sequences(batch: dict[str, Any]) -> tuple[torch.Tensor | int, int]:
    """Real (non-pad) tokens and sequences of a flat (cu_seqlens) or padded batch."""
    if batch.get("cu_seqlens") is not None:
        return batch["input_ids"].numel(), batch["cu_seqlens"].numel() - 1
    mask = batch.get("attention_mask")
    tokens = batch["input_ids"].numel() if mask is None else mask.sum()
    return tokens, batch["input_ids"].shape[0]


class _Meter:
    """Sums of per-micro-batch quantities between two logging steps."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor | float] = {}
        self.data_wait = 0.0

    def add(self, values: dict[str, torch.Tensor | float]) -> None:
        for key, value in values.items():
            value = value.detach().double() if torch.is_tensor(value) else float(value)
            self.sums[key] = self.sums[key] + value if key in self.sums else value

    def reduce(self, engine: Engine) -> dict[str, float]:
        keys = sorted(self.sums)
        values = torch.stack([torch.as_tensor(self.sums[k], dtype=torch.float64).to(engine.device) for k in keys])
        totals = engine.sum_across_ranks(torch.cat([values, torch.tensor([self.data_wait], dtype=torch.float64, device=engine.device)]))
        out = dict(zip(keys, totals[:-1].tolist()))
        out["data_wait_s"] = totals[-1].item() / engine.world_size
        return out


def train(
    engine: Engine,
    make_batches: Callable[[int], Iterator[dict[str, Any]]],
    config: LoopConfig,
    task: TaskMetrics,
    *,
    resume: bool = False,
    tokenizer: Any = None,
    flops_per_token: Callable[[float], float] | None = None,
) -> LoopResult:
    """Train until ``config.max_steps`` (or the time budget, or the end of the data).

    ``make_batches(step)`` yields this rank's micro-batches starting at optimizer step
    ``step``; with ``resume`` the loop restores the latest checkpoint first and asks for
    batches from there, so the run continues exactly as if it had not stopped.
    """
    out_dir = Path(config.out_dir)
    checkpoints = CheckpointManager(out_dir / "checkpoints", engine)
    metrics_log = MetricsLog(out_dir / "metrics.jsonl")
    start_step, last_checkpoint = 0, None
    if resume:
        last_checkpoint = checkpoints.latest()
        if last_checkpoint is None:
            raise UserError(f"{out_dir / 'checkpoints'}: --resume given but there is no checkpoint to resume from")
        state = checkpoints.load(last_checkpoint)
        _check_run_info(last_checkpoint, state.get("run_info", {}), config.run_info)
        start_step = state["step"]
        if engine.is_main:
            logger.info("resumed from %s at step %d", last_checkpoint, start_step)
    if engine.is_main:
        metrics_log.truncate_after(start_step)
    peak = peak_flops(engine.device)

    step = start_step
    records: list[dict[str, Any]] = []
    stopped_by = "data"
    started = time.perf_counter()
    meter, interval_start = _Meter(), time.perf_counter()
    bar = _progress_bar(engine, config, start_step)
    batches = make_batches(start_step)
    micro = 0
    nonfinite = torch.zeros((), dtype=torch.bool, device=engine.device)
    while step < config.max_steps:
        wait_start = time.perf_counter()
        batch = next(batches, None)
        if batch is None:
            break
        meter.data_wait += time.perf_counter() - wait_start

        outputs = engine(**batch)
        loss = outputs.loss
        nonfinite |= ~torch.isfinite(loss.detach())
        engine.backward(loss)
        tokens, sequences = count_tokens_and_sequences(batch)
        meter.add({"loss": loss, "micro_batches": 1, "tokens": tokens, "sequences": sequences, **task.batch_sums(batch, outputs)})
        micro += 1
        if micro % config.grad_accum_steps:
            engine.step()  # not a boundary: no update happens
            continue
        # The one host sync per update: never let a NaN/inf loss reach the optimizer on any rank.
        if engine.sum_across_ranks(nonfinite.double().reshape(1)).item() > 0:
            raise TrainingDiverged(
                f"non-finite loss at step {step + 1}; the optimizer did not step on it "
                f"(lower the learning rate or check the data; the last checkpoint is {last_checkpoint})"
            )
        engine.step()
        step = engine.global_step
        bar.update(1)

        out_of_time = config.max_minutes is not None and _any_rank(engine, time.perf_counter() - started > 60 * config.max_minutes)
        if step % config.log_every == 0 or step == config.max_steps or out_of_time:
            record = _summarize(engine, meter, task, step, time.perf_counter() - interval_start, peak, flops_per_token)
            records.append(record)
            if engine.is_main:
                metrics_log.append(record)
                bar.set_postfix({k: f"{record[k]:.4g}" for k in _BAR_KEYS if k in record}, refresh=False)
            meter, interval_start = _Meter(), time.perf_counter()
        if out_of_time:
            stopped_by = "time"
            break
        if config.save_every and step % config.save_every == 0 and step < config.max_steps:
            last_checkpoint = checkpoints.save(step, {"run_info": config.run_info}, tokenizer)
    else:
        stopped_by = "max_steps"
    bar.close()

    if last_checkpoint is None or last_checkpoint.name != f"step_{step:08d}":
        last_checkpoint = checkpoints.save(step, {"run_info": config.run_info}, tokenizer)
    if engine.is_main:
        _publish_model(last_checkpoint / "hf", out_dir / "model")
    engine.barrier()
    return LoopResult(step=step, records=records, checkpoint=last_checkpoint, stopped_by=stopped_by)


_BAR_KEYS = ("loss", "mlm_acc", "nsp_acc", "lr", "tokens_per_s")


def _summarize(engine, meter, task, step, seconds, peak, flops_per_token) -> dict[str, Any]:
    sums = meter.reduce(engine)
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


def _any_rank(engine: Engine, flag: bool) -> bool:
    return engine.sum_across_ranks(torch.tensor([float(flag)], dtype=torch.float64)).item() > 0


def _check_run_info(checkpoint: Path, saved: dict[str, Any], current: dict[str, Any]) -> None:
    for key, value in current.items():
        if key in saved and saved[key] != value:
            raise UserError(f"{checkpoint}: was trained with {key}={saved[key]!r}, this run has {value!r}; resuming would change the data order")


def _publish_model(source: Path, target: Path) -> None:
    """Copy the final HF export to ``target`` through a temporary name."""
    tmp = target.with_name(f".tmp-{target.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def _progress_bar(engine: Engine, config: LoopConfig, start_step: int):
    from tqdm.auto import tqdm

    return tqdm(total=config.max_steps, initial=start_step, disable=not (engine.is_main and config.progress), unit="step", dynamic_ncols=True)
