"""Forward + backward of a training micro-batch as one CUDA graph, captured once per batch shape.

Why: at BERT-base sizes a step launches about a thousand kernels, and on an H200 the host
took longer to launch them than the GPU took to run them (29-37 ms per base step at batch
32 x 128, about 4 ms of it matmuls; benchmarks/results/2026-11-26-h200). A graph replay
launches them all at once.

What capture needs, and where it comes from:

* static shapes: :func:`static_batch` pads every batch to ``[rows, seq_len]`` rows (dummy
  one-token rows fill a short batch; their labels are ignored) and the model keeps the
  padding (``keep_padding``) and runs the MLM head on a fixed number of rows;
* no host syncs in forward or backward: the model's static path reads no data on the host
  (``tests/model/test_static_shapes.py`` runs it on the meta device to prove it);
* fixed memory: inputs are copied into buffers the graph reads, and gradients accumulate
  into ``.grad`` tensors that exist before capture (the engine zeroes them in place);
* fresh randomness on every replay: dropout draws from torch's CUDA generator, and the
  Triton kernels read their seeds from device memory, so replays advance the generator;
* autocast without its weight-cast cache, whose casts would be freed after capture.

Clipping, the optimizer step and the training loop's non-finite check stay eager between
replays (a few fused launches), so the update is exactly the eager engine's.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..data.collator import IGNORE_INDEX, to_padded
from ..errors import UserError

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


def static_batch(batch: dict[str, Any], rows: int, seq_len: int | None, pad_id: int) -> tuple[dict[str, torch.Tensor], StaticShape]:
    """A flat (``cu_seqlens``) or padded ``[B, T]`` CPU batch as padded ``[rows, seq_len]`` tensors.

    Real sequences come first, then dummy rows of one ``pad_id`` token whose labels
    (``labels``, ``next_sentence_label``, ``labels`` of classification) are ignored.
    ``seq_len`` None means the longest sequence rounded up to a multiple of 64.
    """
    if batch.get("cu_seqlens") is not None:
        batch = to_padded(batch, pad_id)
    ids = batch["input_ids"]
    mask = batch.get("attention_mask")
    mask = torch.ones_like(ids) if mask is None else mask
    count, longest = ids.shape
    if seq_len is None:
        seq_len = SEQ_LEN_MULTIPLE * math.ceil(longest / SEQ_LEN_MULTIPLE)
    if count > rows or longest > seq_len:
        raise UserError(f"a batch of {count} sequences x {longest} tokens does not fit the CUDA-graph shape {rows} x {seq_len}")

    def fit(t: torch.Tensor, fill: int) -> torch.Tensor:
        out = torch.full((rows, seq_len), fill, dtype=t.dtype)
        out[:count, :longest] = t
        return out

    out = {"input_ids": fit(ids, pad_id), "attention_mask": fit(mask, 0)}
    out["attention_mask"][count:, 0] = 1  # dummy rows: one token, so no row attends to nothing
    if batch.get("token_type_ids") is not None:
        out["token_type_ids"] = fit(batch["token_type_ids"], 0)
    masked_rows = None
    labels = batch.get("labels")
    if labels is not None and labels.dim() == 2:  # per-token (MLM) labels
        out["labels"] = fit(labels, IGNORE_INDEX)
        masked = int((labels != IGNORE_INDEX).sum())
        masked_rows = max(_round_up(math.ceil(MASKED_FRACTION_CAPACITY * rows * seq_len), MASKED_ROWS_MULTIPLE),
                          _round_up(masked, MASKED_ROWS_MULTIPLE))
        masked_rows = min(masked_rows, rows * seq_len)
    for name in ("next_sentence_label", "labels"):
        value = batch.get(name)
        if value is not None and value.dim() == 1 and value.is_floating_point():
            raise UserError(f"CUDA graphs pad batches with ignored rows; float {name} (regression) cannot be ignored")
        if value is not None and value.dim() == 1:  # per-sequence labels
            filled = torch.full((rows,), IGNORE_INDEX, dtype=value.dtype)
            filled[:count] = value
            out[name] = filled
    return out, StaticShape(rows, seq_len, masked_rows)


def _round_up(value: int, multiple: int) -> int:
    return multiple * math.ceil(value / multiple)


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    inputs: dict[str, torch.Tensor]
    outputs: Any


class GraphedForwardBackward:
    """``module(**batch)`` and ``(loss * loss_scale).backward()`` replayed from CUDA graphs.

    Gradients accumulate into the parameters' ``.grad`` as an eager backward would; the
    returned outputs are the graph's own tensors, valid until the next call.
    """

    def __init__(self, module: nn.Module, autocast_dtype: torch.dtype | None, loss_scale: float,
                 rows: int, seq_len: int | None, pad_id: int, warmup_iterations: int = 2):
        self.module = module
        self.autocast_dtype = autocast_dtype
        self.loss_scale = loss_scale
        self.rows, self.seq_len, self.pad_id = rows, seq_len, pad_id
        self.warmup_iterations = warmup_iterations
        self.graphs: dict[tuple, _Captured] = {}
        self.pool = None
        self.device = next(module.parameters()).device
        _require_cuda(self.device)

    def __call__(self, batch: dict[str, Any]) -> Any:
        host_batch, shape = static_batch(_to_cpu(batch), self.rows, self.seq_len, self.pad_id)
        key = (shape.rows, shape.seq_len, shape.masked_rows, tuple(sorted(host_batch)))
        captured = self.graphs.get(key)
        if captured is None:
            captured = self.graphs[key] = self._capture(host_batch, shape)
        for name, buffer in captured.inputs.items():
            buffer.copy_(host_batch[name], non_blocking=True)
        captured.graph.replay()
        return captured.outputs

    def _forward_backward(self, inputs: dict[str, torch.Tensor], shape: StaticShape) -> Any:
        extra = {"keep_padding": True}
        if shape.masked_rows is not None:
            extra["max_masked_tokens"] = shape.masked_rows
        with torch.autocast("cuda", dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None, cache_enabled=False):
            outputs = self.module(**inputs, **extra)
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
        inputs = {name: t.to(self.device) for name, t in host_batch.items()}
        # Warm up on a side stream, as capture requires (lazy init of cuBLAS, autograd and
        # Triton kernels happens outside the graph).
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup_iterations):
                self._forward_backward(inputs, shape)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        # thread_local: the DataLoader's pin-memory thread may call CUDA while this thread captures.
        with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
            outputs = self._forward_backward(inputs, shape)
        with torch.no_grad():
            for p, saved in zip(params, accumulated):
                p.grad.copy_(saved)
        return _Captured(graph, inputs, outputs)


def _require_cuda(device: torch.device) -> None:
    if device.type != "cuda":
        raise UserError(f"CUDA graphs need a CUDA device; the model is on {device.type}")


def _to_cpu(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v.cpu() if torch.is_tensor(v) else v for k, v in batch.items()}
