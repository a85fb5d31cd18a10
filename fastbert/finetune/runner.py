"""Fine-tune a BERT checkpoint on one task, for one or several seeds.

Per seed: load ``--init`` with a freshly initialised task head, train for ``epochs`` through
the training engine (local, or DeepSpeed when a config is given; each rank takes every
world_size-th batch of the same seeded order), evaluate every dev split after each epoch,
and keep the best epoch's model as an HF directory. ``results.json`` gathers everything.
"""

from __future__ import annotations

import logging
import os
import shutil
import statistics
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from .. import atomic
from ..environment import environment_versions
from ..errors import UserError
from ..model import Batch, BertForMultipleChoice, BertForQuestionAnswering, BertForSequenceClassification
from ..tokenizer import load_tokenizer
from ..train.config import EngineConfig
from ..train.engines import Engine, build_engine
from ..train.loop import LoopConfig
from ..train.loop import train as train_loop
from ..train.trackers import check_report_to
from .collate import collate, epoch_order, rank_batches
from .config import FinetuneConfig
from .encoding import PairEncoder
from .evaluate import evaluate
from .features import Split, build_split
from .tasks import CLASSIFICATION, MULTIPLE_CHOICE, SPAN, Task, get_task

log = logging.getLogger(__name__)

HEADS = {SPAN: BertForQuestionAnswering, MULTIPLE_CHOICE: BertForMultipleChoice}


def run_finetune(config: FinetuneConfig) -> dict[str, Any]:
    """Train and evaluate every seed; write ``results.json`` into ``config.out`` and return it."""
    task = get_task(config.task)
    check_report_to(config.report_to)  # a missing tracker package fails now, not after the data is encoded
    if config.cuda_graphs and task.kind != CLASSIFICATION:
        raise UserError(f"--cuda-graphs supports classification tasks; {task.name} is a {task.kind} task")
    paths = task.files(config.data_dir)
    tokenizer = load_tokenizer(config.init)
    encoder = PairEncoder(tokenizer.backend)
    started = time.perf_counter()
    train = build_split(task, "train", paths.pop("train"), encoder, config.max_seq_len, config.max_train_examples)
    devs = [build_split(task, name, path, encoder, config.max_seq_len) for name, path in paths.items()]
    log.info("%s: %d training items, dev %s", task.name, len(train.items), {d.name: len(d.items) for d in devs})

    runs, is_main = [], True
    for seed in config.seeds:
        run_dir = config.out if len(config.seeds) == 1 else config.out / f"seed_{seed}"
        run, is_main = _run_seed(config, task, seed, train, devs, tokenizer, run_dir)
        runs.append(run)
    results = {
        "task": task.name,
        "command": config.command,
        "config": settings(config),
        "versions": environment_versions(),
        "runs": runs,
        "summary": summarize(runs),
        "wall_time_s": time.perf_counter() - started,
    }
    if is_main:
        atomic.write_json(config.out / "results.json", results)
        _print_summary(task, results["summary"], config.seeds)
    return results


def _run_seed(
    config: FinetuneConfig, task: Task, seed: int, train: Split, devs: list[Split], tokenizer, run_dir: Path
) -> tuple[dict[str, Any], bool]:
    torch.manual_seed(seed)  # the new head's initialisation and dropout
    model = _load_model(task, config.init)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    steps_per_epoch = (len(train.items) // config.batch_size + bool(len(train.items) % config.batch_size)) // world_size
    if steps_per_epoch < 1:
        raise UserError(f"{len(train.items)} training items make no full batch per rank for {world_size} rank(s)")
    engine = build_engine(model, EngineConfig(
        optim=config.optim,
        total_steps=steps_per_epoch * config.epochs,
        micro_batch_size=config.batch_size,
        deepspeed_config=config.deepspeed_config,
        seed=seed,
        cuda_graphs=config.cuda_graphs,  # rows padded to the longest sequence rounded up to 64
        compile=config.compile,
    ))

    def batches(step: int) -> Iterator[Batch]:
        """This rank's batches from optimizer step ``step`` on: epoch after epoch of the seeded order."""
        for epoch in range(step // steps_per_epoch + 1, config.epochs + 1):
            order = epoch_order(len(train.items), seed, epoch)
            skip = step - (epoch - 1) * steps_per_epoch if epoch == step // steps_per_epoch + 1 else 0
            for indices in rank_batches(order, config.batch_size, engine.rank, engine.world_size)[skip:]:
                yield collate([train.items[i] for i in indices])

    main_split, main_metric = devs[0].name, task.metrics[0]
    epochs: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None

    def evaluate_epoch(step: int, trained: dict[str, Any]) -> dict[str, Any]:
        nonlocal best
        epoch = step // steps_per_epoch
        record = {
            "epoch": epoch,
            "train_loss": trained["loss"],
            "train_steps": steps_per_epoch,
            "train_tokens": int(trained["tokens"]),
            "train_seconds": trained["seconds"],
            "train_tokens_per_s": trained["tokens_per_s"],
            "lr_end": trained["lr"],
            "eval": {dev.name: evaluate(engine, task, dev, 2 * config.batch_size) for dev in devs},
        }
        epochs.append(record)
        log.info("seed %d epoch %d: loss %.4f, %s", seed, epoch, record["train_loss"], _format_eval(record["eval"]))
        if best is None or record["eval"][main_split][main_metric] > best["eval"][main_split][main_metric]:
            best = {"epoch": epoch, "eval": record["eval"]}
            _export(engine, tokenizer, run_dir / "model")
        return record["eval"]

    started = time.perf_counter()
    loop = LoopConfig(
        out_dir=run_dir, max_steps=steps_per_epoch * config.epochs, log_every=config.log_every,
        eval_every=steps_per_epoch, save_final=False, progress=False,
        report_to=config.report_to, settings={**settings(config), "seed": seed},
    )
    train_loop(engine, batches, loop, LossOnly(), evaluate=evaluate_epoch)
    run = {
        "seed": seed,
        "epochs": epochs,
        "best": best,
        "wall_time_s": time.perf_counter() - started,
        "train_tokens_per_s": sum(e["train_tokens"] for e in epochs) / sum(e["train_seconds"] for e in epochs),
        "model_dir": str(run_dir / "model"),
    }
    return run, engine.is_main


def settings(config: FinetuneConfig) -> dict[str, Any]:
    """The run's settings as plain values (paths as text), for results.json and the trackers."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items() if k != "command"}


class LossOnly:
    """Fine-tuning logs the training loss (the loop's own); its task metrics come from the dev sets."""

    def batch_sums(self, batch: Batch, outputs: Any) -> dict[str, torch.Tensor | float]:
        return {}

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        return {}


def _load_model(task: Task, init: Path):
    head = HEADS.get(task.kind, BertForSequenceClassification)
    overrides = {"num_labels": task.num_labels} if head is BertForSequenceClassification else {}
    return head.from_pretrained(init, **overrides)


def _export(engine: Engine, tokenizer, target: Path) -> None:
    """Write the model to ``target`` through a temporary folder (all ranks take part in the gather)."""
    staging = target.with_name(f".{target.name}.tmp")
    if engine.is_main:
        shutil.rmtree(staging, ignore_errors=True)
    engine.barrier()
    engine.export_hf(staging, tokenizer=tokenizer)
    if engine.is_main:
        atomic.replace_directory(staging, target)
    engine.barrier()


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean, median and standard deviation over seeds of every best-epoch metric."""
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for split, metrics in runs[0]["best"]["eval"].items():
        summary[split] = {}
        for metric in metrics:
            summary[split][metric] = seed_statistics([run["best"]["eval"][split][metric] for run in runs])
    return summary


def seed_statistics(values: list[float]) -> dict[str, Any]:
    """Mean, median and standard deviation (0 for one seed) of per-seed values, and the values."""
    return {
        "mean": statistics.fmean(values),
        "median": statistics.median(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "values": values,
    }


def _format_eval(evals: dict[str, dict[str, float]]) -> str:
    return "; ".join(f"{split} " + ", ".join(f"{k} {v:.4f}" for k, v in m.items()) for split, m in evals.items())


def _print_summary(task: Task, summary: dict, seeds: tuple[int, ...]) -> None:
    print(f"{task.name}: best epoch per seed, over seeds {', '.join(map(str, seeds))}")
    for split, metrics in summary.items():
        for metric, s in metrics.items():
            print(f"  {split:>14} {metric:>12}: mean {s['mean']:.4f}  median {s['median']:.4f}  std {s['std']:.4f}")
