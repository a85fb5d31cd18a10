"""A deterministic, resumable data order that does not depend on the number of ranks.

Epoch ``e`` visits the samples in the order ``default_rng([seed, e]).permutation(n)``.
Optimizer step ``s`` consumes the next ``global_batch = micro × accumulation × world``
samples of that order, cut into ``accumulation × world`` micro-batch slots; rank ``r``
takes slots ``a × world + r`` for ``a = 0 .. accumulation-1``. So a 2-rank run without
accumulation sees exactly the micro-batches of a 1-rank run with accumulation 2, and the
position in the data is a function of the step alone (resume needs nothing else).
The tail of each epoch that does not fill a global batch is skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..errors import UserError


@dataclass(frozen=True)
class DataOrder:
    num_samples: int
    micro_batch_size: int
    grad_accum_steps: int
    world_size: int
    rank: int
    seed: int

    @property
    def global_batch_size(self) -> int:
        return self.micro_batch_size * self.grad_accum_steps * self.world_size

    @property
    def steps_per_epoch(self) -> int:
        steps = self.num_samples // self.global_batch_size
        if steps == 0:
            raise UserError(
                f"the data has {self.num_samples} sequences, fewer than one global batch of {self.global_batch_size} "
                "(micro batch × accumulation × ranks); prepare more data or lower the batch size"
            )
        return steps

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, sample offset within the epoch's order) at the start of optimizer step ``step``."""
        epoch, offset = divmod(step, self.steps_per_epoch)
        return epoch, offset * self.global_batch_size

    def epoch_order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_samples)

    def micro_batches(self, start_step: int = 0) -> Iterator[list[tuple[int, int]]]:
        """This rank's micro-batches from ``start_step`` on, forever, as lists of (epoch, sample index)."""
        epoch, offset = self.position(start_step)
        while True:
            order = self.epoch_order(epoch)
            for base in range(offset, self.steps_per_epoch * self.global_batch_size, self.global_batch_size):
                for accum in range(self.grad_accum_steps):
                    start = base + (accum * self.world_size + self.rank) * self.micro_batch_size
                    yield [(epoch, int(i)) for i in order[start : start + self.micro_batch_size]]
            epoch, offset = epoch + 1, 0
