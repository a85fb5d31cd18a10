"""The local engine with each micro-batch's whole step replayed from a CUDA graph.

Why: at BERT-base sizes a step launches hundreds of kernels, and on an H200 the host took
longer to launch them than the GPU took to run them (29-37 ms per base step at batch
32 x 128, about 4 ms of it matmuls; benchmarks/results/2026-11-26-h200). A graph replay
launches them all at once.

One replay per micro-batch: the forward and backward, and, when the micro-batch closes an
accumulation window, the update as well (gradient norm and clipping, the non-finite check
that skips the step on the device, the optimizer, zeroed gradients). So each batch shape has
up to two graphs: one that only accumulates, one that also updates. Outside the replay the
host copies the batch in and runs the schedule (two in-place fills of the learning rates).

What capture needs, and where it comes from:

* static shapes: :func:`static_batch` pads every batch to ``[rows, seq_len]`` rows (dummy
  one-token rows fill a short batch; their labels are ignored) and the model keeps the
  padding and runs the MLM head on a fixed number of rows (``BertInputs.from_padded(...,
  keep_padding=True, masked_capacity=M)``);
* no host syncs, and no host value that changes between steps: the model's static path reads
  no data on the host (``tests/model/test_static_shapes.py`` runs it on the meta device); the
  update takes its learning rates from device tensors the schedule fills
  (:func:`.optim.learning_rates_on_device`) and its step number from a device counter
  (``tests/train/test_cuda_graphs.py`` traces emulated replays and asserts that every replay
  dispatches the same ops with the same arguments on the same persistent tensors);
* fixed memory: inputs are copied into buffers the graph reads; gradients, optimizer state and
  the engine's counters exist before capture and are only ever updated in place;
* fresh randomness on every replay: dropout draws from torch's CUDA generator, and the
  Triton kernels read their seeds from device memory, so replays advance the generator;
* autocast without its weight-cast cache, whose casts would be freed after capture.

Capture warms up by running the step for real (lazy initialisation of cuBLAS, autograd and
Triton has to happen outside the graph), so everything the step writes is saved before and
put back after: the first real update is the first replay's.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...errors import UserError
from ...model.inputs import IGNORE_INDEX, Batch, BertInputs, Unpadded
from ..config import EngineConfig
from ..host_memory import give_back_if_memory_is_low
from .local import LocalEngine
from .optim import learning_rates_on_device

logger = logging.getLogger(__name__)

MAX_GRAPHS = 8
"""Graphs captured before the engine refuses: a batch shape has one, two with accumulation (each
graph holds its own activations)."""
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
    """:class:`LocalEngine` whose training step is a graph replay per micro-batch.

    The returned outputs are the graph's own tensors, valid until the next step. Evaluation
    (:meth:`forward`) runs eagerly.
    """

    grads_set_to_none = False
    warmup_iterations = 2

    def __init__(self, model: nn.Module, config: EngineConfig, device: torch.device | None = None):
        super().__init__(model, config, device)
        _require_cuda(self.device)
        if not self._skips_on_device:
            raise UserError(f"CUDA graphs need an optimizer that skips a non-finite step on the device; {type(self.optimizer).__name__} does not")
        self.rows, self.seq_len = config.micro_batch_size, config.static_seq_len
        self.pad_id = getattr(getattr(model, "config", None), "pad_token_id", 0) or 0
        self.graphs: dict[tuple, _Captured] = {}
        self.pool = None
        # Where every update graph leaves its gradient norm (a graph's own outputs may be
        # overwritten by another graph's replay, since all share one memory pool).
        self._last_grad_norm = torch.zeros((), device=self.device)

    def _adds_sparse_gradients(self) -> bool:
        return False  # a graph needs gradients of fixed shape

    def train_step(self, batch: Batch) -> Any:
        host_batch, shape = static_batch(batch.to(torch.device("cpu")), self.rows, self.seq_len, self.pad_id)
        updates = self.window.closes_next
        key = (shape.rows, shape.seq_len, shape.masked_rows, tuple(sorted(host_batch)), updates)
        captured = self.graphs.get(key)
        if captured is None:
            captured = self.graphs[key] = self._capture(host_batch, shape, updates)
        for name, buffer in captured.inputs.items():
            buffer.copy_(host_batch[name], non_blocking=True)
        captured.graph.replay()
        if self.window.advance():
            self._grad_norm = self._last_grad_norm
            self._host_update()
        give_back_if_memory_is_low()
        return captured.outputs

    def _graph_step(self, buffers: dict[str, torch.Tensor], shape: StaticShape, updates: bool) -> Any:
        """What a graph records: the static-shape forward, the scaled backward and, at the end of
        an accumulation window, the update."""
        targets = dict(buffers)
        inputs = BertInputs.from_padded(
            targets.pop("input_ids"), targets.pop("attention_mask"), targets.pop("token_type_ids"),
            keep_padding=True, masked_capacity=shape.masked_rows,
        )
        with torch.autocast("cuda", dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None, cache_enabled=False):
            outputs = self.module(inputs, **targets)
        self._backward(outputs.loss)
        self.window.record(outputs.loss)
        if updates:
            self._device_update()
            self._last_grad_norm.copy_(self._grad_norm)
        return outputs

    def _capture(self, host_batch: dict[str, torch.Tensor], shape: StaticShape, updates: bool) -> _Captured:
        if len(self.graphs) >= MAX_GRAPHS:
            raise UserError(
                f"more than {MAX_GRAPHS} CUDA graphs (distinct batch shapes, times two with accumulation); "
                "fix the row length (static_seq_len) or train without cuda_graphs"
            )
        logger.info("capturing a CUDA graph for batches of %d x %d (MLM rows %s, update %s)",
                    shape.rows, shape.seq_len, shape.masked_rows, updates)
        with warnings.catch_warnings():
            # torch's AdamW warns when a capturable optimizer steps outside a capture: these steps
            # create its state and warm up, and their effects are undone below.
            warnings.filterwarnings("ignore", message=".*capturable=True.*")
            self._create_optimizer_state()
            written = self._tensors_a_step_writes()
            saved = [t.detach().to("cpu", copy=True) for t in written]
            buffers = {name: t.to(self.device) for name, t in host_batch.items()}
            # Warm up on a side stream, as capture requires.
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(self.warmup_iterations):
                    self._graph_step(buffers, shape, updates)
            torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        # thread_local: the DataLoader's pin-memory thread may call CUDA while this thread captures.
        with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
            outputs = self._graph_step(buffers, shape, updates)
        with torch.no_grad():
            for tensor, value in zip(written, saved, strict=True):
                tensor.copy_(value)
        return _Captured(graph, buffers, outputs)

    def _create_optimizer_state(self) -> None:
        """Give every parameter a ``.grad`` and its optimizer state before capture (both must exist,
        and stay, at fixed addresses). The optimizer creates its state on a first step: here one
        that ``found_inf`` skips, which leaves weights, moments and step counts as they were (LAMB
        zeroes the gradients of a skipped step: a window's accumulated ones are put back)."""
        params = [p for p in self.module.parameters() if p.requires_grad]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        if all(self.optimizer.state.get(p) for p in params):
            return
        accumulated = [p.grad.clone() for p in params]
        self.optimizer.found_inf = torch.ones((), device=self.device)
        self.optimizer.step()
        with torch.no_grad():
            for p, grad in zip(params, accumulated, strict=True):
                p.grad.copy_(grad)

    def _tensors_a_step_writes(self) -> list[torch.Tensor]:
        """Everything a step updates in place: weights, gradients, optimizer state, the engine's counters."""
        state = [v for per_param in self.optimizer.state.values() for v in per_param.values() if torch.is_tensor(v)]
        grads = [p.grad for p in self.module.parameters() if p.grad is not None]
        counters = [self.window.poison, self._first_skipped, self._updates, self._last_grad_norm]
        return [*self.module.parameters(), *self.module.buffers(), *grads, *state, *counters]

    def load_checkpoint(self, directory) -> dict[str, Any]:
        client_state = super().load_checkpoint(directory)
        # The loaded optimizer state (and learning rates) are new tensors: graphs recorded
        # before would update the old ones.
        learning_rates_on_device(self.optimizer, self.device)
        self.graphs.clear()
        return client_state


def _require_cuda(device: torch.device) -> None:
    if device.type != "cuda":
        raise UserError(f"CUDA graphs need a CUDA device; the model is on {device.type}")
