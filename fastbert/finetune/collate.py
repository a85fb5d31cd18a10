"""Fine-tuning batches in the model's flat layout, and their seeded order.

A batch concatenates the real tokens of its sequences (no padding) into
:meth:`BertInputs.from_flat` inputs. A multiple-choice item contributes its choices as
consecutive sequences, which is the order the model expects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..model.inputs import Batch, BertInputs
from .encoding import EncodedSequence


@dataclass(frozen=True)
class Item:
    """One training or evaluation unit: its sequence(s) and the targets the model's loss takes."""

    sequences: tuple[EncodedSequence, ...]
    targets: dict[str, int | float] = field(default_factory=dict)
    """E.g. {"labels": 1} or {"start_positions": 9, "end_positions": 11}; ints become int64, floats float32."""


def collate(items: list[Item]) -> Batch:
    """The flat-layout batch of ``items`` (with ``num_choices`` when items hold several sequences)."""
    sequences = [seq for item in items for seq in item.sequences]
    lengths = [len(seq.input_ids) for seq in sequences]
    cu_seqlens = np.zeros(len(sequences) + 1, dtype=np.int32)
    np.cumsum(lengths, out=cu_seqlens[1:])
    inputs = BertInputs.from_flat(
        torch.tensor([t for seq in sequences for t in seq.input_ids], dtype=torch.long),
        torch.from_numpy(cu_seqlens),
        max(lengths),
        torch.tensor([p for n in lengths for p in range(n)], dtype=torch.long),
        torch.tensor([t for seq in sequences for t in seq.token_type_ids], dtype=torch.long),
    )
    targets: dict[str, Any] = {}
    if len(items[0].sequences) > 1:
        targets["num_choices"] = len(items[0].sequences)
    for key, value in items[0].targets.items():
        dtype = torch.float32 if isinstance(value, float) else torch.long
        targets[key] = torch.tensor([item.targets[key] for item in items], dtype=dtype)
    return Batch(inputs, targets, num_tokens=int(cu_seqlens[-1]), num_sequences=len(sequences))


def epoch_order(num_items: int, seed: int, epoch: int) -> np.ndarray:
    """A permutation of the items for one epoch; the same on every rank for a given seed and epoch."""
    return np.random.default_rng([seed, epoch]).permutation(num_items)


def updates_per_epoch(num_items: int, batch_size: int, world_size: int, accum_steps: int) -> int:
    """Optimizer steps in one epoch: whole windows of ``accum_steps`` micro-batches on every rank."""
    return -(-num_items // batch_size) // (world_size * accum_steps)


def rank_batches(order: np.ndarray, batch_size: int, rank: int, world_size: int, accum_steps: int = 1) -> list[np.ndarray]:
    """This rank's micro-batches of ``order``: batch i goes to rank i mod world_size.

    Only whole accumulation windows are kept (a trailing remainder of fewer than
    world_size x accum_steps batches is dropped), so every rank takes the same number of
    optimizer steps, each over the same number of micro-batches: one update sees
    consecutive batches of the order, as one large batch would.
    """
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    usable = updates_per_epoch(len(order), batch_size, world_size, accum_steps) * world_size * accum_steps
    return batches[rank:usable:world_size]
