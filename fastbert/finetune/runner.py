"""Fine-tune a BERT checkpoint on one task, for one or several seeds.

Per seed: load ``--init`` with a freshly initialised task head, train for ``epochs`` through
the training engine (local, or DeepSpeed when a config is given; each rank takes every
world_size-th micro-batch of the same seeded order, ``grad_accum_steps`` of them per
update), evaluate every dev split after each epoch, and keep the best epoch's model as an
HF directory, with its predictions for the files to predict. ``results.json`` gathers everything.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .. import atomic
from ..environment import environment_versions
from ..errors import InputError, UserError
from ..model import Batch, BertConfig, BertForMultipleChoice, BertForQuestionAnswering, BertForSequenceClassification
from ..tokenizer import load_tokenizer
from ..train.checkpoint import export_model
from ..train.config import EngineConfig
from ..train.engines import build_engine
from ..train.launch import Launch, start_launch
from ..train.loop import LoopConfig
from ..train.loop import train as train_loop
from ..train.run_dir import StartMode, claim_run_directory
from ..train.trackers import check_report_to
from .collate import collate, epoch_order, rank_batches, updates_per_epoch
from .config import FinetuneConfig
from .encoding import PairEncoder
from .evaluate import evaluate, submission
from .examples import LabelNames
from .features import Split, build_split
from .hub import resolve_init
from .sources import load_task_data
from .tasks import CLASSIFICATION, MULTIPLE_CHOICE, SPAN, Task, get_task

log = logging.getLogger(__name__)

HEADS = {SPAN: BertForQuestionAnswering, MULTIPLE_CHOICE: BertForMultipleChoice}


@dataclass
class Splits:
    """A run's data, tokenized: what every seed trains on, evaluates and predicts."""

    train: Split
    devs: list[Split]
    predict: list[Split]
    """Named by the submission file each one becomes (OUT/predictions/NAME.tsv)."""
    label_names: LabelNames | None
    num_labels: int


def run_finetune(config: FinetuneConfig) -> dict[str, Any]:
    """Train and evaluate every seed; write ``results.json`` into ``config.out`` and return it.

    The data is read and checked before anything trains, and ``config.out`` is held (locked)
    by this run until it ends."""
    task = get_task(config.task)
    check_report_to(config.report_to)  # a missing tracker package fails now, not after the data is encoded
    if config.cuda_graphs and task.kind != CLASSIFICATION:
        raise UserError(f"--cuda-graphs supports classification tasks; {task.name} is a {task.kind} task")
    launch = start_launch()
    init = resolve_init(str(config.init))
    data = load_task_data(task, config)
    tokenizer = load_tokenizer(init)
    encoder = PairEncoder(tokenizer.backend)
    started = time.perf_counter()
    max_len = _sequence_limit(config, init)

    def tokenized(name: str, examples: list) -> Split:
        source = data.sources.get(name, name)
        split = build_split(task.kind, name, examples, encoder, max_len, config.long_sequences, source)
        if split.truncated:
            log.info("%s: truncated %d of %d %s examples to %d tokens", task.name, split.truncated, len(split.items), name, max_len)
        return split

    splits = Splits(
        tokenized("train", data.train),
        [tokenized(name, examples) for name, examples in data.devs.items()],
        [tokenized(name, examples) for name, examples in data.predict.items()],
        data.label_names,
        data.num_labels,
    )
    for split in (splits.train, *splits.devs):
        if not split.items:
            raise InputError(data.sources.get(split.name, split.name), f"the {split.name} split holds no examples")
    log.info("%s: %d training items, dev %s", task.name, len(splits.train.items), {d.name: len(d.items) for d in splits.devs})

    with claim_run_directory(config.out, StartMode(overwrite=config.overwrite), launch, resumable=False):
        runs = [_run_seed(config, task, seed, splits, init, tokenizer, launch) for seed in config.seeds]
        return _write_results(config, task, runs, started, launch, init)


def _sequence_limit(config: FinetuneConfig, init: Path) -> int:
    """max_seq_len, capped by the positions the model has (a longer input would index past them)."""
    positions = BertConfig.load(init).max_position_embeddings
    if config.max_seq_len > positions:
        log.warning("--max-seq-len %d is more than %s's %d positions: inputs are cut at %d", config.max_seq_len, init, positions, positions)
    return min(config.max_seq_len, positions)


def _write_results(config: FinetuneConfig, task: Task, runs: list[dict[str, Any]], started: float, launch: Launch,
                   init: Path) -> dict[str, Any]:
    results = {
        "task": task.name,
        "command": config.command,
        "config": settings(config),
        "init_dir": str(init),
        "versions": environment_versions(),
        "runs": runs,
        "summary": summarize(runs),
        "wall_time_s": time.perf_counter() - started,
    }
    if launch.is_main:
        with atomic.reporting_full_disk(config.out, "results.json", outcome="the models are written, results.json is not"):
            atomic.write_json(config.out / "results.json", results)
        _print_summary(task, results["summary"], config.seeds)
    return results


def _run_seed(
    config: FinetuneConfig, task: Task, seed: int, splits: Splits, init: Path, tokenizer, launch: Launch
) -> dict[str, Any]:
    run_dir = config.out if len(config.seeds) == 1 else config.out / f"seed_{seed}"
    torch.manual_seed(seed)  # the new head's initialisation and dropout
    model = _load_model(task, init, splits)
    train, devs = splits.train, splits.devs
    world_size = launch.world_size
    accum = config.grad_accum_steps
    # The loop, the schedule and the per-epoch evaluation all count optimizer steps.
    steps_per_epoch = updates_per_epoch(len(train.items), config.batch_size, world_size, accum)
    if steps_per_epoch < 1:
        raise UserError(
            f"{len(train.items)} training items make no full update of {accum} micro-batch(es) of {config.batch_size} "
            f"per rank for {world_size} rank(s)"
        )
    engine = build_engine(model, EngineConfig(
        optim=config.optim,
        total_steps=steps_per_epoch * config.epochs,
        grad_accum_steps=accum,
        micro_batch_size=config.batch_size,
        deepspeed_config=config.deepspeed_config,
        seed=seed,
        cuda_graphs=config.cuda_graphs,  # rows padded to the longest sequence rounded up to 64
        compile=config.compile,
    ))

    def batches(step: int) -> Iterator[Batch]:
        """This rank's micro-batches from optimizer step ``step`` on: epoch after epoch of the seeded order."""
        for epoch in range(step // steps_per_epoch + 1, config.epochs + 1):
            order = epoch_order(len(train.items), seed, epoch)
            skip = step - (epoch - 1) * steps_per_epoch if epoch == step // steps_per_epoch + 1 else 0
            for indices in rank_batches(order, config.batch_size, engine.rank, engine.world_size, accum)[skip * accum :]:
                yield collate([train.items[i] for i in indices])

    main_split, main_metric = devs[0].name, task.metrics[0]
    epochs: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    eval_batch = 2 * config.batch_size

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
            "eval": {dev.name: evaluate(engine, task, dev, eval_batch) for dev in devs},
        }
        epochs.append(record)
        log.info("seed %d epoch %d: loss %.4f, %s", seed, epoch, record["train_loss"], _format_eval(record["eval"]))
        if best is None or record["eval"][main_split][main_metric] > best["eval"][main_split][main_metric]:
            best = {"epoch": epoch, "eval": record["eval"]}
            export_model(engine, run_dir / "model", tokenizer)
            for split in splits.predict:  # every rank runs the forward (ZeRO-3 gathers weights collectively)
                text = submission(engine, task.kind, split, eval_batch, splits.label_names)
                if engine.is_main:
                    atomic.write_text(run_dir / "predictions" / f"{split.name}.tsv", text)
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
        "predictions": {split.name: str(run_dir / "predictions" / f"{split.name}.tsv") for split in splits.predict},
    }
    return run


def settings(config: FinetuneConfig) -> dict[str, Any]:
    """The run's settings as plain values (paths as text), for results.json and the trackers."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items() if k != "command"}


class LossOnly:
    """Fine-tuning logs the training loss (the loop's own); its task metrics come from the dev sets."""

    def batch_sums(self, batch: Batch, outputs: Any) -> dict[str, torch.Tensor | float]:
        return {}

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        return {}


def _load_model(task: Task, init: Path, splits: Splits):
    head = HEADS.get(task.kind, BertForSequenceClassification)
    if head is not BertForSequenceClassification:
        return head.from_pretrained(init)
    model = head.from_pretrained(init, num_labels=splits.num_labels)
    if splits.label_names is not None:  # transformers' pipelines then show the class names
        model.config.extra.update(splits.label_names.config_fields())
    return model


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
