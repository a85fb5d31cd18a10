"""The local engine with forward + backward replayed from a CUDA graph, captured once per batch shape.

Why: at BERT-base sizes a step launches about a thousand kernels, and on an H200 the host
took longer to launch them than the GPU took to run them (29-37 ms per base step at batch
32 x 128, about 4 ms of it matmuls; benchmarks/results/2026-11-26-h200). A graph replay
launches them all at once.

What capture needs, and where it comes from:

* static shapes: :func:`static_batch` pads every batch to ``[rows, seq_len]`` rows (dummy
  one-token rows fill a short batch; their labels are ignored) and the model keeps the
  padding and runs the MLM head on a fixed number of rows (``BertInputs.from_padded(...,
  keep_padding=True, masked_capacity=M)``);
* no host syncs in forward or backward: the model's static path reads no data on the host
  (``tests/model/test_static_shapes.py`` runs it on the meta device to prove it);
* fixed memory: inputs are copied into buffers the graph reads, and gradients accumulate
  into ``.grad`` tensors that exist before capture (zeroed in place, never freed);
* fresh randomness on every replay: dropout draws from torch's CUDA generator, and the
  Triton kernels read their seeds from device memory, so replays advance the generator;
* autocast without its weight-cast cache, whose casts would be freed after capture.

Clipping, the optimizer step and the non-finite check stay eager between replays (a few
fused launches), so the update is exactly the eager engine's.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...errors import UserError
from ...model.inputs import IGNORE_INDEX, Batch, BertInputs, Unpadded
from ..config import EngineConfig
from .local import LocalEngine

logger = logging.getLogger(__name__)

MAX_GRAPHS = 8
"""Distinct batch shapes captured before the engine refuses (each graph holds its own activations)."""
SEQ_LEN_MULTIPLE = 64
"""Without a fixed row length, rows are padded to the longest sequence rounded up to this."""
MASKED_FRACTION_CAPACITY = 0.2
"""MLM rows per batch as a fraction of token slots: room for BERT's 15% (rounded per sequence)."""
MASKED_ROWS_MULTIPLE = 64


@dataclass
class StaticShape:
    """The padded batch shape a graph is captured for."""

    rows: int
    seq_len: int
    masked_rows: int | None  # None when the batch has no MLM labels


def static_batch(batch: Batch, rows: int, seq_len: int | None, pad_id: int) -> tuple[dict[str, torch.Tensor], StaticShape]:
    """A host batch as padded ``[rows, seq_len]`` tensors: ``input_ids``, ``attention_mask``,
    ``token_type_ids`` and the targets.

    Real sequences come first, then dummy rows of one ``pad_id`` token whose labels
    (MLM ``labels``, ``next_sentence_label``, classification ``labels``) are ignored.
    ``seq_len`` None means the longest sequence rounded up to a multiple of 64. Positions
    are left to the model (the column index), which is what they are in a row of their own.
    """
    inputs = batch.inputs
    count, longest = inputs.num_sequences, inputs.layout.max_seqlen
    if seq_len is None:
        seq_len = SEQ_LEN_MULTIPLE * math.ceil(longest / SEQ_LEN_MULTIPLE)
    if count > rows or longest > seq_len:
        raise UserError(f"a batch of {count} sequences x {longest} tokens does not fit the CUDA-graph shape {rows} x {seq_len}")

    def fit(per_token: torch.Tensor, fill: int) -> torch.Tensor:
        """A per-token tensor of the flat stream into the [rows, seq_len] grid."""
        grid = torch.full((rows, seq_len), fill, dtype=per_token.dtype)
        grid[:count, :longest] = inputs.layout.pad(per_token, fill)
        return grid

    out = {
        "input_ids": fit(inputs.input_ids, pad_id),
        "attention_mask": fit(torch.ones_like(inputs.input_ids), 0),
        "token_type_ids": fit(inputs.token_type_ids, 0),
    }
    out["attention_mask"][count:, 0] = 1  # dummy rows: one token, so no row attends to nothing
    masked_rows = None
    token_shape = _caller_token_shape(inputs)
    for name, value in batch.targets.items():
        if not torch.is_tensor(value):
            raise UserError(f"CUDA graphs replay tensor targets only; {name}={value!r} is not one")
        if token_shape == (count,):
            raise UserError("a batch of one-token sequences: per-token and per-sequence labels look alike")
        if value.shape == token_shape:  # per-token (MLM) labels
            out[name] = fit(inputs.per_token(value), IGNORE_INDEX)
            masked = int((value != IGNORE_INDEX).sum())
            masked_rows = max(_round_up(math.ceil(MASKED_FRACTION_CAPACITY * rows * seq_len), MASKED_ROWS_MULTIPLE),
                              _round_up(masked, MASKED_ROWS_MULTIPLE))
            masked_rows = min(masked_rows, rows * seq_len)
        elif value.shape == (count,):  # per-sequence labels
            if value.is_floating_point():
                raise UserError(f"CUDA graphs pad batches with ignored rows; float {name} (regression) cannot be ignored")
            filled = torch.full((rows,), IGNORE_INDEX, dtype=value.dtype)
            filled[:count] = value
            out[name] = filled
        else:
            raise UserError(f"target {name} of shape {tuple(value.shape)} is neither per token nor per sequence")
    return out, StaticShape(rows, seq_len, masked_rows)


def _caller_token_shape(inputs: BertInputs) -> tuple[int, ...]:
    """The shape a per-token target has in the layout the batch was built from."""
    if isinstance(inputs.restore, Unpadded):
        return (inputs.restore.batch_size, inputs.restore.seq_len)
    return tuple(inputs.layout.key_padding_mask.shape) if inputs.restore is not None else (inputs.input_ids.numel(),)


def _round_up(value: int, multiple: int) -> int:
    return multiple * math.ceil(value / multiple)


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    inputs: dict[str, torch.Tensor]
    outputs: Any


class GraphedEngine(LocalEngine):
    """:class:`LocalEngine` whose training forward + backward is a graph replay.

    Gradients accumulate into the parameters' ``.grad`` as an eager backward would; the
    returned outputs are the graph's own tensors, valid until the next step. Evaluation
    (:meth:`forward`) runs eagerly.
    """

    grads_set_to_none = False
    warmup_iterations = 2

    def __init__(self, model: nn.Module, config: EngineConfig, device: torch.device | None = None):
        super().__init__(model, config, device)
        _require_cuda(self.device)
        self.rows, self.seq_len = config.micro_batch_size, config.static_seq_len
        self.pad_id = getattr(getattr(model, "config", None), "pad_token_id", 0) or 0
        self.loss_scale = 1.0 / config.grad_accum_steps
        self.graphs: dict[tuple, _Captured] = {}
        self.pool = None

    def forward_backward(self, batch: Batch) -> Any:
        host_batch, shape = static_batch(batch.to(torch.device("cpu")), self.rows, self.seq_len, self.pad_id)
        key = (shape.rows, shape.seq_len, shape.masked_rows, tuple(sorted(host_batch)))
        captured = self.graphs.get(key)
        if captured is None:
            captured = self.graphs[key] = self._capture(host_batch, shape)
        for name, buffer in captured.inputs.items():
            buffer.copy_(host_batch[name], non_blocking=True)
        captured.graph.replay()
        return captured.outputs

    def _replayed_step(self, buffers: dict[str, torch.Tensor], shape: StaticShape) -> Any:
        """What the graph records: the static-shape forward and the scaled backward."""
        targets = dict(buffers)
        inputs = BertInputs.from_padded(
            targets.pop("input_ids"), targets.pop("attention_mask"), targets.pop("token_type_ids"),
            keep_padding=True, masked_capacity=shape.masked_rows,
        )
        with torch.autocast("cuda", dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None, cache_enabled=False):
            outputs = self.module(inputs, **targets)
        (outputs.loss * self.loss_scale).backward()
        return outputs

    def _capture(self, host_batch: dict[str, torch.Tensor], shape: StaticShape) -> _Captured:
        if len(self.graphs) >= MAX_GRAPHS:
            raise UserError(
                f"more than {MAX_GRAPHS} distinct batch shapes for CUDA graphs; fix the row length "
                "(static_seq_len) or train without cuda_graphs"
            )
        logger.info("capturing a CUDA graph for batches of %d x %d (MLM rows %s)", shape.rows, shape.seq_len, shape.masked_rows)
        params = [p for p in self.module.parameters() if p.requires_grad]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        accumulated = [p.grad.clone() for p in params]  # warmup must not change them
        buffers = {name: t.to(self.device) for name, t in host_batch.items()}
        # Warm up on a side stream, as capture requires (lazy init of cuBLAS, autograd and
        # Triton kernels happens outside the graph).
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup_iterations):
                self._replayed_step(buffers, shape)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        # thread_local: the DataLoader's pin-memory thread may call CUDA while this thread captures.
        with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
            outputs = self._replayed_step(buffers, shape)
        with torch.no_grad():
            for p, saved in zip(params, accumulated):
                p.grad.copy_(saved)
        return _Captured(graph, buffers, outputs)


def _require_cuda(device: torch.device) -> None:
    if device.type != "cuda":
        raise UserError(f"CUDA graphs need a CUDA device; the model is on {device.type}")
