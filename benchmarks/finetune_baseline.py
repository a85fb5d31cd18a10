"""The transformers side of the fine-tuning benchmarks: the same items, order, optimizer and schedule.

fastbert's runner trains on flat batches of tokenized items; here a transformers model gets
the same items padded, in the same seeded order (:func:`fastbert.finetune.collate.epoch_order`),
with torch's fused AdamW over the same parameter groups, the same linear schedule and the
same gradient clipping, and keeps the epoch with the best dev metric.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from fastbert.finetune.collate import Item, epoch_order, rank_batches
from fastbert.train.host_memory import give_back_if_memory_is_low
from fastbert.train.schedule import build_scheduler, parameter_groups

BETAS, EPS = (0.9, 0.999), 1e-6  # fastbert's OptimizerConfig defaults, used on both sides


@dataclass(frozen=True)
class Recipe:
    epochs: int
    batch_size: int
    lr: float
    max_seq_len: int
    warmup_ratio: float
    weight_decay: float
    grad_clip: float


def padded(items: list[Item], device: torch.device) -> dict[str, torch.Tensor]:
    """The transformers (padded) form of single-sequence items."""
    sequences = [item.sequences[0] for item in items]
    width = max(len(s.input_ids) for s in sequences)
    ids = torch.zeros(len(items), width, dtype=torch.long)
    types = torch.zeros_like(ids)
    mask = torch.zeros_like(ids)
    for row, seq in enumerate(sequences):
        n = len(seq.input_ids)
        ids[row, :n] = torch.tensor(seq.input_ids)
        types[row, :n] = torch.tensor(seq.token_type_ids)
        mask[row, :n] = 1
    batch = {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}
    return {k: v.to(device) for k, v in batch.items()}


def targets(items: list[Item], device: torch.device) -> dict[str, torch.Tensor]:
    """The items' loss targets as transformers' keyword arguments (labels, start/end positions)."""
    return {key: torch.tensor([item.targets[key] for item in items], device=device) for key in items[0].targets}


def train_transformers(
    model: torch.nn.Module,
    train_items: list[Item],
    recipe: Recipe,
    seed: int,
    device: torch.device,
    evaluate: Callable[[torch.nn.Module], dict[str, Any]],
    better: Callable[[dict[str, Any], dict[str, Any]], bool],
) -> dict[str, Any]:
    """Train ``model`` as fastbert's runner trains, evaluating after every epoch; the best epoch and the times."""
    steps_per_epoch = -(-len(train_items) // recipe.batch_size)
    total = steps_per_epoch * recipe.epochs
    optimizer = torch.optim.AdamW(parameter_groups(model, recipe.weight_decay), lr=recipe.lr, betas=BETAS, eps=EPS, fused=True)
    scheduler = build_scheduler(optimizer, round(recipe.warmup_ratio * total), total)
    autocast = dict(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    best, started, train_seconds = None, time.perf_counter(), 0.0
    for epoch in range(1, recipe.epochs + 1):
        model.train()
        epoch_start = time.perf_counter()
        for indices in rank_batches(epoch_order(len(train_items), seed, epoch), recipe.batch_size, 0, 1):
            items = [train_items[i] for i in indices]
            with torch.autocast(**autocast):
                loss = model(**padded(items, device), **targets(items, device)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            # The same process keeps fastbert's heap settings once its side has run: the same
            # hand-back when memory runs short, or the larger shapes (SQuAD) get this side killed.
            give_back_if_memory_is_low()
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_seconds += time.perf_counter() - epoch_start
        model.eval()
        with torch.no_grad(), torch.autocast(**autocast):
            evals = evaluate(model)
        if best is None or better(evals, best["eval"]):
            best = {"epoch": epoch, "eval": evals}
    return {"seed": seed, "best": best, "wall_time_s": time.perf_counter() - started, "train_seconds": train_seconds}


def write_comparison(report: dict[str, Any], stem, title: str, context: list[str], table: list[str]) -> None:
    """Both fine-tuning benchmarks' report: the speedups, ``stem``.json, and ``stem``.md (printed too)
    with how the run was made, ``context`` lines about its data, and the results ``table``."""
    fastbert, transformers = report["fastbert"], report["transformers"]
    report["speedup_train"] = transformers["train_seconds"]["mean"] / fastbert["train_seconds"]["mean"]
    report["speedup_wall"] = transformers["wall_time_s"]["mean"] / fastbert["wall_time_s"]["mean"]
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    load = report["load_average_1m"]
    text = "\n".join([
        f"# {title}",
        "",
        f"Device: {report['device']}. Command: `{report['command']}`.",
        *context,
        f"Hyperparameters: {json.dumps(report['hyperparameters'])}.",
        f"Load average (1 min) at start / end: {load['start']:.2f} / {load['end']:.2f}.",
        "",
        *table,
        "",
        f"Training speedup (transformers / fastbert): {report['speedup_train']:.2f}x; "
        f"wall-time ratio {report['speedup_wall']:.2f}x.",
        "",
    ])
    stem.with_suffix(".md").write_text(text)
    print(text)
