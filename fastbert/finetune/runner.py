"""Fine-tune a BERT checkpoint on one task, for one or several seeds.

Per seed: load ``--init`` with a freshly initialised task head, train for ``epochs`` through
the training engine (local, or DeepSpeed when a config is given; each rank takes every
world_size-th batch of the same seeded order), evaluate every dev split after each epoch,
and keep the best epoch's model as an HF directory. ``results.json`` gathers everything.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..environment import package_versions
from ..errors import UserError
from ..model import BertForMultipleChoice, BertForQuestionAnswering, BertForSequenceClassification
from ..tokenizer import load_tokenizer
from ..train.engine import Engine, EngineConfig, build_engine
from ..train.loop import TrainingDiverged
from .collate import collate, epoch_order, rank_batches
from .encoding import PairEncoder
from .evaluate import evaluate
from .features import Split, build_split
from .tasks import CLASSIFICATION, MULTIPLE_CHOICE, SPAN, Task, get_task

log = logging.getLogger(__name__)

HEADS = {SPAN: BertForQuestionAnswering, MULTIPLE_CHOICE: BertForMultipleChoice}


@dataclass
class FinetuneConfig:
    """One fine-tuning run (all seeds)."""

    task: str
    data_dir: Path
    """Folder holding the task's files (as `fastbert data download` lays them out)."""
    init: Path
    """HF BERT directory (or fastbert export) with model weights and tokenizer."""
    out: Path
    epochs: int = 3
    lr: float = 2e-5
    batch_size: int = 32
    """Sequences (multiple choice: examples) per micro-batch on each rank."""
    max_seq_len: int = 128
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seeds: tuple[int, ...] = (42,)
    deepspeed_config: dict[str, Any] | None = field(default=None, repr=False)
    max_train_examples: int | None = None
    """Train on the first N training examples only (quick runs)."""
    cuda_graphs: bool = False
    """Replay training steps from CUDA graphs (classification tasks, one GPU; see fastbert.train.cuda_graphs)."""
    command: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "max_seq_len"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.warmup_ratio <= 1:
            raise UserError(f"--warmup-ratio must be in [0, 1], got {self.warmup_ratio}")
        if not self.seeds:
            raise UserError("no seeds given")


def run_finetune(config: FinetuneConfig) -> dict[str, Any]:
    """Train and evaluate every seed; write ``results.json`` into ``config.out`` and return it."""
    task = get_task(config.task)
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
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items() if k != "command"},
        "versions": environment_versions(),
        "runs": runs,
        "summary": summarize(runs),
        "wall_time_s": time.perf_counter() - started,
    }
    if is_main:
        _write_json_atomic(config.out / "results.json", results)
        _print_summary(task, results["summary"], config.seeds)
    return results


def _run_seed(
    config: FinetuneConfig, task: Task, seed: int, train: Split, devs: list[Split], tokenizer, run_dir: Path
) -> tuple[dict[str, Any], bool]:
    torch.manual_seed(seed)  # the new head's initialisation and dropout
    model = _load_model(task, config.init)
    engine = build_engine(model, _engine_config(config, task, seed, len(train.items)))
    main_split, main_metric = devs[0].name, task.metrics[0]
    epochs, best = [], None
    started = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        record = _train_epoch(engine, config, train, seed, epoch)
        record["eval"] = {dev.name: evaluate(engine, task, dev, 2 * config.batch_size) for dev in devs}
        epochs.append(record)
        score = record["eval"][main_split][main_metric]
        log.info("seed %d epoch %d: loss %.4f, %s", seed, epoch, record["train_loss"], _format_eval(record["eval"]))
        if best is None or score > best["eval"][main_split][main_metric]:
            best = {"epoch": epoch, "eval": record["eval"]}
            _export(engine, tokenizer, run_dir / "model")
    run = {
        "seed": seed,
        "epochs": epochs,
        "best": best,
        "wall_time_s": time.perf_counter() - started,
        "train_tokens_per_s": sum(e["train_tokens"] for e in epochs) / sum(e["train_seconds"] for e in epochs),
        "model_dir": str(run_dir / "model"),
    }
    return run, engine.is_main


def _load_model(task: Task, init: Path):
    head = HEADS.get(task.kind, BertForSequenceClassification)
    overrides = {"num_labels": task.num_labels} if head is BertForSequenceClassification else {}
    return head.from_pretrained(init, **overrides)


def _engine_config(config: FinetuneConfig, task: Task, seed: int, num_items: int) -> EngineConfig:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    steps_per_epoch = (num_items // config.batch_size + bool(num_items % config.batch_size)) // world_size
    if steps_per_epoch < 1:
        raise UserError(f"{num_items} training items make no full batch per rank for {world_size} rank(s)")
    return EngineConfig(
        lr=config.lr,
        weight_decay=config.weight_decay,
        total_steps=steps_per_epoch * config.epochs,
        warmup_ratio=config.warmup_ratio,
        grad_clip=config.grad_clip,
        micro_batch_size=config.batch_size,
        deepspeed_config=config.deepspeed_config,
        seed=seed,
        cuda_graphs=config.cuda_graphs,  # rows padded to the longest sequence rounded up to 64
    )


def _train_epoch(engine: Engine, config: FinetuneConfig, train: Split, seed: int, epoch: int) -> dict[str, Any]:
    engine.module.train()
    order = epoch_order(len(train.items), seed, epoch)
    loss_sum = torch.zeros((), dtype=torch.float64, device=engine.device)
    tokens = steps = 0
    started = time.perf_counter()
    for indices in rank_batches(order, config.batch_size, engine.rank, engine.world_size):
        batch = collate([train.items[i] for i in indices])
        loss = engine(**batch).loss
        if not torch.isfinite(loss.detach()):  # before backward/step: a NaN never reaches the weights
            raise TrainingDiverged(f"non-finite loss at step {engine.global_step + 1} (epoch {epoch}); lower --lr")
        engine.backward(loss)
        engine.step()
        loss_sum += loss.detach().double()
        tokens += batch["input_ids"].numel()
        steps += 1
    seconds = time.perf_counter() - started
    totals = engine.sum_across_ranks(torch.tensor([loss_sum.item(), float(steps), float(tokens)], dtype=torch.float64))
    return {
        "epoch": epoch,
        "train_loss": totals[0].item() / max(totals[1].item(), 1.0),
        "train_steps": steps,
        "train_tokens": int(totals[2].item()),
        "train_seconds": seconds,
        "train_tokens_per_s": totals[2].item() / seconds,
        "lr_end": engine.get_lr(),
    }


def _export(engine: Engine, tokenizer, target: Path) -> None:
    """Write the model to ``target`` through a temporary folder (all ranks take part in the gather)."""
    tmp = target.with_name(f".{target.name}.tmp")
    if engine.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
    engine.barrier()
    engine.export_hf(tmp, tokenizer=tokenizer)
    if engine.is_main:
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
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


def environment_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), **package_versions()}
    versions["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    return versions


def _write_json_atomic(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(content, indent=2) + "\n")
    tmp.replace(path)
