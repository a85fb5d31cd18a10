"""CUDA-graph training steps: the static batch a graph replays (CPU), and the graphed engine
against the eager one (GPU)."""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections import Counter
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from fastbert import BertConfig, BertForPreTraining
from fastbert.data.collator import to_padded
from fastbert.errors import UserError
from fastbert.model import IGNORE_INDEX, Batch, BertInputs
from fastbert.train.config import EngineConfig, OptimizerConfig
from fastbert.train.engines import GraphedEngine, LocalEngine, build_engine
from fastbert.train.engines.graphed import static_batch

VOCAB = 300


def flat_batch(lengths: list[int], seed: int = 0) -> Batch:
    """A batch as the pretraining collator makes it: flat tokens, cu_seqlens, MLM labels."""
    g = torch.Generator().manual_seed(seed)
    total = sum(lengths)
    ids = torch.randint(5, VOCAB, (total,), generator=g)
    labels = torch.where(torch.rand(total, generator=g) < 0.15, ids, IGNORE_INDEX)
    labels[0] = ids[0]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    types = (torch.rand(total, generator=g) < 0.5).long()
    inputs = BertInputs.from_flat(ids, cu, max(lengths), torch.cat([torch.arange(n) for n in lengths]), types)
    nsp = torch.randint(0, 2, (len(lengths),), generator=g)
    return Batch(inputs, {"labels": labels, "next_sentence_label": nsp}, num_tokens=total, num_sequences=len(lengths))


def tiny_model(dropout: float = 0.0) -> BertForPreTraining:
    torch.manual_seed(0)
    config = BertConfig.preset("tiny", vocab_size=VOCAB, max_position_embeddings=64,
                               hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    return BertForPreTraining(config)


def make_engine(device: str, rows: int, seq_len: int, graphs: bool = True, accumulation: int = 1,
                lr: float = 1e-3, dropout: float = 0.0, optimizer: str = "adamw") -> LocalEngine:
    """A local (or graphed) engine on the tiny model (same initial weights every time), eight
    steps long (the learning rate decays every step)."""
    config = EngineConfig(optim=OptimizerConfig(optimizer=optimizer, lr=lr, warmup_steps=0), total_steps=8, grad_accum_steps=accumulation,
                          micro_batch_size=rows, cuda_graphs=graphs, static_seq_len=seq_len)
    return (GraphedEngine if graphs else LocalEngine)(tiny_model(dropout), config, device=torch.device(device))


def test_static_batch_pads_rows_and_columns_with_ignored_dummies():
    batch = flat_batch([5, 3, 7])
    static, shape = static_batch(batch, rows=4, seq_len=16, pad_id=0)
    assert (shape.rows, shape.seq_len) == (4, 16)
    assert static["input_ids"].shape == static["attention_mask"].shape == static["labels"].shape == (4, 16)
    reference = to_padded(batch, pad_id=0)
    assert torch.equal(static["input_ids"][:3, :7], reference["input_ids"])
    assert torch.equal(static["attention_mask"][:3, :7], reference["attention_mask"])
    assert torch.equal(static["labels"][:3, :7], reference["labels"])
    assert not static["attention_mask"][:, 7:].any()
    # The dummy row has one token, no MLM label and an ignored NSP label.
    assert static["attention_mask"][3].tolist() == [1] + [0] * 15
    assert (static["labels"][3] == IGNORE_INDEX).all()
    assert static["next_sentence_label"].tolist() == batch.targets["next_sentence_label"].tolist() + [IGNORE_INDEX]
    masked = int((batch.targets["labels"] != IGNORE_INDEX).sum())
    assert masked <= shape.masked_rows and shape.masked_rows % 64 == 0


def test_static_batch_row_length_defaults_to_a_multiple_of_64_and_refuses_misfits():
    _, shape = static_batch(flat_batch([70, 3]), rows=2, seq_len=None, pad_id=0)
    assert shape.seq_len == 128
    with pytest.raises(UserError, match="does not fit the CUDA-graph shape 2 x 16"):
        static_batch(flat_batch([5, 3, 7]), rows=2, seq_len=16, pad_id=0)
    with pytest.raises(UserError, match="does not fit"):
        static_batch(flat_batch([20]), rows=2, seq_len=16, pad_id=0)
    regression = Batch.of_inputs(BertInputs.from_padded(torch.ones(2, 4, dtype=torch.long)), labels=torch.tensor([0.5, 1.0]))
    with pytest.raises(UserError, match="regression"):
        static_batch(regression, rows=2, seq_len=16, pad_id=0)


def test_static_batch_of_a_classification_batch_keeps_per_sequence_labels():
    batch = flat_batch([5, 3, 7])
    batch.targets = {"labels": torch.tensor([1, 0, 1])}
    static, shape = static_batch(batch, rows=4, seq_len=8, pad_id=0)
    assert static["labels"].tolist() == [1, 0, 1, IGNORE_INDEX] and shape.masked_rows is None
    assert static["input_ids"].shape == (4, 8)


def test_model_on_static_batch_equals_model_on_flat_batch():
    model = tiny_model()
    batch = flat_batch([9, 4, 12, 1], seed=3)
    static, shape = static_batch(batch, rows=6, seq_len=32, pad_id=0)
    flat = model(batch.inputs, **batch.targets)
    ids, mask, types = (static.pop(name) for name in ("input_ids", "attention_mask", "token_type_ids"))
    padded = model(BertInputs.from_padded(ids, mask, types, keep_padding=True, masked_capacity=shape.masked_rows), **static)
    torch.testing.assert_close(padded.mlm_loss, flat.mlm_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(padded.nsp_loss, flat.nsp_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(padded.seq_relationship_logits[:4], flat.seq_relationship_logits, rtol=1e-5, atol=1e-5)


def test_engine_refuses_cuda_graphs_off_cuda_and_with_deepspeed():
    with pytest.raises(UserError, match="CUDA graphs need a CUDA device"):
        GraphedEngine(tiny_model(), EngineConfig(cuda_graphs=True, micro_batch_size=4), device=torch.device("cpu"))
    with pytest.raises(UserError, match="local engine only"):
        EngineConfig(cuda_graphs=True, deepspeed_config={"zero_optimization": {"stage": 2}})
    with pytest.raises(UserError, match="local engine only"):  # a launch of several processes runs DeepSpeed
        with pytest.MonkeyPatch.context() as patch:
            for name, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}.items():
                patch.setenv(name, value)
            build_engine(tiny_model(), EngineConfig(cuda_graphs=True))


def test_finetune_refuses_cuda_graphs_for_tasks_other_than_classification(tmp_path):
    from fastbert.finetune.config import FinetuneConfig
    from fastbert.finetune.runner import run_finetune

    config = FinetuneConfig(task="stsb", data_dir=tmp_path, init=tmp_path, out=tmp_path / "out", cuda_graphs=True)
    with pytest.raises(UserError, match="supports classification tasks; stsb is a regression task"):
        run_finetune(config)


class ReplayTrace(TorchDispatchMode):
    """The ops one emulated replay dispatches, each with its arguments as a graph would fix them:
    scalars by value, tensors that persist between steps (weights, gradients, optimizer state,
    learning rates, counters, input buffers) by which one they are, others by shape and dtype;
    and where each host read came from."""

    def __init__(self, persistent: dict[int, int]):
        super().__init__()
        self.persistent = persistent
        self.ops: list[tuple] = []
        self.host_reads: list[str] = []  # the fastbert function that made each

    def _describe(self, value):
        if not torch.is_tensor(value):
            return repr(value)
        index = self.persistent.get(value.untyped_storage().data_ptr())
        return ("persistent", index) if index is not None else ("temporary", tuple(value.shape), value.dtype)

    def launch(self, kernel: str, grid, args, kwargs) -> None:
        """A Triton kernel launch (under the interpreter), recorded as an op."""
        self.ops.append((f"triton.{kernel}", tuple(map(self._describe, pytree.tree_leaves((grid, args, kwargs))))))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.namespace != "profiler":  # record_function's markers (optimizer.step, zero_grad) launch nothing
            self.ops.append((str(func), tuple(map(self._describe, pytree.tree_leaves((args, kwargs))))))
        if str(func) in HOST_READS:
            self.host_reads.append(_fastbert_caller())
        return func(*args, **kwargs)


def _trace_triton_launches(monkeypatch, emulation) -> None:
    """Record the interpreter's kernel launches into the active trace (without the many small ops
    it dispatches to run a kernel: no GPU runs those)."""
    from torch.utils._python_dispatch import _disable_current_modes
    from triton.runtime.interpreter import InterpretedFunction

    launch = InterpretedFunction.run

    def traced(self, *args, grid, warmup, **kwargs):
        if emulation.active is None or warmup:
            return launch(self, *args, grid=grid, warmup=warmup, **kwargs)
        emulation.active.launch(self.__name__, grid, args, kwargs)
        with _disable_current_modes():
            return launch(self, *args, grid=grid, warmup=warmup, **kwargs)

    monkeypatch.setattr(InterpretedFunction, "run", traced)


def _fastbert_caller() -> str:
    """The innermost fastbert function on the stack."""
    frame = sys._getframe(1)
    while frame is not None and f"{os.sep}fastbert{os.sep}" not in frame.f_code.co_filename:
        frame = frame.f_back
    return frame.f_code.co_name if frame is not None else "outside fastbert"


class DeviceWorkBesideReplays(TorchDispatchMode):
    """Counts, by op, what a step dispatches on the persistent tensors (those a GPU holds: input
    buffers, learning rates, weights, optimizer state) outside graph replays: what the host still
    launches per step."""

    def __init__(self, emulation):
        super().__init__()
        self.emulation = emulation
        self.ops: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self.emulation.replaying and any(
            torch.is_tensor(t) and t.untyped_storage().data_ptr() in self.emulation.persistent
            for t in pytree.tree_leaves((args, kwargs))
        ):
            self.ops[str(func).rsplit(".", 1)[0]] += 1
        return func(*args, **kwargs)


@pytest.fixture
def emulated_cuda_graphs(monkeypatch):
    """CUDA-graph semantics on a CPU, for the engine and loop plumbing around them: capture
    runs its body once (the engine puts back what it wrote, as after warmup) and a replay
    re-runs that body on the same input buffers, writing into the captured outputs. With
    ``trace`` set, every replay's ops are traced (:class:`ReplayTrace`) into ``traces``, by graph
    (slow under the Triton interpreter, which dispatches many small ops per kernel)."""
    import dataclasses

    from fastbert.train.engines import graphed

    class Stream:
        def wait_stream(self, other):
            pass

    class Graph:
        def replay(self):
            self.body()

    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda: Stream())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: None)
    monkeypatch.setattr(torch.cuda, "graph", lambda graph, pool=None, capture_error_mode="global": contextlib.nullcontext())
    monkeypatch.setattr(graphed, "_require_cuda", lambda device: None)
    emulation = SimpleNamespace(trace=False, traces={}, active=None, replaying=False, persistent={})
    _trace_triton_launches(monkeypatch, emulation)
    capture = graphed.GraphedEngine._capture

    def capture_with_replay(self, host_batch, shape, updates):
        captured = capture(self, host_batch, shape, updates)
        persistent = [*self._tensors_a_step_writes(), *captured.inputs.values(), *(g["lr"] for g in self.optimizer.param_groups if torch.is_tensor(g["lr"]))]
        storages = {t.untyped_storage().data_ptr(): i for i, t in enumerate(persistent)}
        emulation.persistent.update(storages)
        replays = emulation.traces.setdefault((shape.rows, shape.seq_len, shape.masked_rows, updates), [])

        def body():
            with ReplayTrace(storages) if emulation.trace else contextlib.nullcontext() as trace:
                emulation.active, emulation.replaying = trace, True
                fresh = self._graph_step(captured.inputs, shape, updates)
                emulation.active, emulation.replaying = None, False
            if trace is not None:
                replays.append((trace.ops, trace.host_reads))
            with torch.no_grad():
                for field in dataclasses.fields(fresh):
                    value = getattr(fresh, field.name)
                    if torch.is_tensor(value):
                        getattr(captured.outputs, field.name).copy_(value)

        captured.graph.body = body
        return captured

    monkeypatch.setattr(graphed.GraphedEngine, "_capture", capture_with_replay)
    return emulation


@pytest.mark.parametrize("accumulation, kernels", [(1, "torch"), (2, "torch"), (2, "triton")])
def test_training_loop_with_emulated_graphs_logs_what_eager_training_logs(
    emulated_cuda_graphs, tmp_path, monkeypatch, accumulation, kernels
):
    from fastbert.train.loop import LoopConfig, train
    from fastbert.train.pretrain import PretrainingMetrics

    monkeypatch.setenv("FASTBERT_KERNELS", kernels)  # triton: through the interpreter here

    batches = [flat_batch([9, 4, 12, 6 - s % 3], seed=s) for s in range(8)]
    records = {}
    for graphs in (False, True):
        engine = make_engine("cpu", rows=5, seq_len=16, graphs=graphs, accumulation=accumulation)
        loop = LoopConfig(out_dir=tmp_path / str(graphs), max_steps=8 // accumulation, log_every=1, progress=False)
        result = train(engine, lambda step: iter(batches), loop, PretrainingMetrics())
        records[graphs] = result.records
        if graphs:
            assert len(engine.graphs) == min(accumulation, 2) and engine.global_step == 8 // accumulation  # accumulate, update
    for eager, graphed in zip(records[False], records[True], strict=True):
        for key in ("loss", "mlm_loss", "nsp_loss", "mlm_acc", "nsp_acc", "grad_norm"):
            assert graphed[key] == pytest.approx(eager[key], rel=1e-4, abs=1e-6), key
        assert graphed["tokens_per_s"] > 0


HOST_READS = {"aten._local_scalar_dense.default", "aten.nonzero.default", "aten.masked_select.default", "aten._unique2.default"}
"""Ops that read the device on the host (a sync, which capture refuses)."""
CPU_ONLY_READS = {"masked_positions"}
"""Reads the emulation makes that a GPU does not: the masked-label count is checked on the host for
CPU tensors and by a device assert otherwise (the meta-device run of tests/model/test_static_shapes.py
shows that the model's static path reads nothing)."""
UPDATE_OPS = {"adamw": "aten._fused_adamw_", "lamb": "aten._foreach_addcmul_"}
CLIP_OP = "aten._foreach_norm"


def assert_replays_repeat_their_capture(traces: dict[tuple, list]) -> None:
    for replays in traces.values():
        for trace in replays[1:]:
            assert trace == replays[0], first_difference(replays[0][0], trace[0])


def first_difference(expected: list[tuple], got: list[tuple]) -> str:
    index = next((i for i, (a, b) in enumerate(zip(expected, got)) if a != b), min(len(expected), len(got)))
    return f"op {index} of {len(expected)}: recorded {expected[index:index + 1]}, replayed {got[index:index + 1]}"


def graphed_and_eager(optimizer: str, accumulation: int, steps: int, device: str = "cpu",
                      dropout: float = 0.0) -> tuple[GraphedEngine, LocalEngine]:
    """A graphed engine (emulated on the CPU) and an eager one with the same settings and weights:
    a warmup and a decay, so that the learning rate changes every step, and clipping on."""
    optim = OptimizerConfig(optimizer=optimizer, lr=1e-3, warmup_steps=steps // 2, grad_clip=1.0)
    config = EngineConfig(optim=optim, total_steps=steps, grad_accum_steps=accumulation, micro_batch_size=5,
                          cuda_graphs=True, static_seq_len=16)
    on = torch.device(device)
    return (GraphedEngine(tiny_model(dropout), config, device=on),
            LocalEngine(tiny_model(dropout), replace(config, cuda_graphs=False), device=on))


@pytest.mark.parametrize("optimizer, accumulation, kernels, dropout", [
    ("adamw", 1, "torch", 0.0), ("adamw", 2, "torch", 0.0), ("lamb", 2, "torch", 0.0),
    ("adamw", 2, "triton", 0.1), ("lamb", 1, "torch", 0.1),
])
def test_every_replay_dispatches_what_capture_recorded_and_the_update_is_inside(
    emulated_cuda_graphs, monkeypatch, optimizer, accumulation, kernels, dropout
):
    """What a CUDA graph assumes of what it recorded, checked on emulated replays: the same ops and
    Triton launches with the same scalar arguments on the same persistent tensors every time and no
    host read, while the learning rate changes every step; dropout's random draws inside the graph
    (which a replay advances); clipping and the optimizer inside the graph that closes a window,
    one replay per micro-batch; and (without dropout, whose draws differ) the training eager
    training does."""
    monkeypatch.setenv("FASTBERT_KERNELS", kernels)  # triton: through the interpreter here
    emulated_cuda_graphs.trace = True
    steps = 6
    graphed, eager = graphed_and_eager(optimizer, accumulation, steps, dropout=dropout)
    batches = [flat_batch([9, 4, 12, 6 - s % 3], seed=s) for s in range(steps * accumulation)]
    learning_rates, beside_replays = set(), []
    for batch in batches:
        with DeviceWorkBesideReplays(emulated_cuda_graphs) as beside:
            outputs = graphed.train_step(batch)
        beside_replays.append(beside.ops)
        graphed_loss = float(outputs.loss.detach())
        eager_loss = float(eager.train_step(batch).loss.detach())
        if not dropout:
            assert graphed_loss == pytest.approx(eager_loss, rel=1e-4)
        learning_rates.add(graphed.get_lr())
    assert graphed.global_step == steps and len(learning_rates) == 4  # warmup 1/3, 2/3, 1; decay 2/3, 1/3, 0
    assert graphed.get_lr() == pytest.approx(eager.get_lr(), rel=1e-6)
    if not dropout:
        assert graphed.grad_norm == pytest.approx(eager.grad_norm, rel=1e-4)
        for a, b in zip(graphed.module.parameters(), eager.module.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)

    kinds = {key[-1]: replays for key, replays in emulated_cuda_graphs.traces.items()}
    assert sorted(kinds) == ([False, True] if accumulation > 1 else [True])  # one graph per kind, one shape
    assert sum(map(len, kinds.values())) == len(batches)  # one replay per micro-batch
    # Once captured, the host adds per micro-batch the copies of the batch's five tensors into
    # the graph's buffers and, per update, the schedule's fills of the two learning rates (and
    # LambdaLR's copies of them).
    schedule = Counter({"aten.fill_": 2, "aten.clone": 2})
    for micro_step, ops in enumerate(beside_replays[accumulation:], start=accumulation + 1):
        assert ops == Counter({"aten.copy_": 5}) + (schedule if micro_step % accumulation == 0 else Counter()), ops
    assert_replays_repeat_their_capture(emulated_cuda_graphs.traces)
    for updates, replays in kinds.items():
        ops, host_reads = replays[0]
        assert set(host_reads) <= CPU_ONLY_READS, host_reads
        names = {name for name, _ in ops}
        assert any(name.startswith("triton.") for name in names) == (kernels == "triton")
        # The update's scalars (norm, clip divisor, skip flag, step count) are one launch there.
        assert ("triton._update_verdict_kernel" in names) == (updates and kernels == "triton"), names
        # The draws: the Triton kernels' seeds; the torch ops' CPU mask (kernels/dropout.py).
        assert any(name.startswith("aten.randint") for name in names) == bool(dropout)
        update_ops = {name for name in names if name.startswith((UPDATE_OPS[optimizer], CLIP_OP))}
        assert bool(update_ops) == updates and (not updates or len({op.rsplit(".", 1)[0] for op in update_ops}) == 2), update_ops


def test_the_gpu_suites_graphed_workload_runs_on_emulated_graphs(emulated_cuda_graphs):
    """A dry run of ``fastbert-graphs`` as benchmarks/test_pretraining.py builds it on a GPU."""
    from benchmarks.workloads import graphed_train_step, pretraining_batches

    vocab = 1200  # the workload draws word ids from 1000 on, as BERT's vocabulary starts its words there
    model = BertForPreTraining(BertConfig.preset("tiny", vocab_size=vocab, max_position_embeddings=64))
    step = graphed_train_step(model, autocast_dtype=None, rows=4, seq_len=32)
    start = [p.detach().clone() for p in model.parameters()]
    for batch in pretraining_batches(3, 4, 8, 32, vocab_size=vocab):
        step(batch)
    assert all(not torch.equal(a, b) for a, b in zip(start, model.parameters(), strict=True))


@pytest.mark.parametrize("optimizer", ["adamw", "lamb"])
def test_a_graphed_run_resumed_from_its_checkpoint_goes_on_exactly(emulated_cuda_graphs, tmp_path, optimizer):
    """Loading replaces the optimizer's state and learning rates with new tensors: graphs recorded
    before must not go on updating the old ones."""
    emulated_cuda_graphs.trace = True
    batches = [flat_batch([9, 4, 12, 6 - s % 3], seed=s) for s in range(8)]
    reference, _ = graphed_and_eager(optimizer, accumulation=1, steps=8)
    for batch in batches:
        reference.train_step(batch)
    first, _ = graphed_and_eager(optimizer, accumulation=1, steps=8)
    for batch in batches[:4]:
        first.train_step(batch)
    first.save_checkpoint(tmp_path, {})
    resumed, _ = graphed_and_eager(optimizer, accumulation=1, steps=8)
    resumed.train_step(batches[7])  # captures a graph and moves the weights, before the load
    resumed.load_checkpoint(tmp_path)
    for batch in batches[4:]:
        resumed.train_step(batch)
    assert resumed.global_step == 8 and resumed.get_lr() == reference.get_lr()
    for a, b in zip(reference.module.parameters(), resumed.module.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert_replays_repeat_their_capture(emulated_cuda_graphs.traces)  # a graph recorded before the load is not replayed


@pytest.mark.parametrize("optimizer", ["adamw", "lamb"])
def test_a_replayed_step_with_a_non_finite_loss_leaves_the_weights_and_is_named(emulated_cuda_graphs, optimizer):
    check_a_non_finite_loss_is_skipped_and_named(optimizer, "cpu")


def check_a_non_finite_loss_is_skipped_and_named(optimizer: str, device: str) -> None:
    """The skip is data inside the graph, not a host decision: a loss made infinite through a
    device tensor (what a replay sees) skips that update, later ones go on, the step is named."""
    from fastbert.train.engines.base import TrainingDiverged

    graphed, _ = graphed_and_eager(optimizer, accumulation=1, steps=6, device=device)
    factor = torch.ones((), device=device)

    def scale_loss(module, args, kwargs, outputs):
        outputs.loss = outputs.loss * factor

    graphed.module.register_forward_hook(scale_loss, with_kwargs=True)
    batches = [flat_batch([9, 4, 12, 5], seed=s) for s in range(4)]
    for batch in batches[:2]:
        graphed.train_step(batch)
    graphed.raise_if_diverged()
    before = [p.detach().clone() for p in graphed.module.parameters()]
    factor.fill_(math.inf)
    assert not math.isfinite(float(graphed.train_step(batches[2]).loss.detach()))  # step 3
    assert all(torch.equal(a, b) for a, b in zip(before, graphed.module.parameters(), strict=True))
    factor.fill_(1.0)
    graphed.train_step(batches[3])
    assert not all(torch.equal(a, b) for a, b in zip(before, graphed.module.parameters(), strict=True))
    with pytest.raises(TrainingDiverged, match="non-finite loss at step 3;"):
        graphed.raise_if_diverged()


# --------------------------------------------------------------------------------------------- GPU
def run_steps(engine: LocalEngine, batches: list[Batch]) -> list[float]:
    return [engine.train_step(batch).loss.item() for batch in batches]


@pytest.mark.gpu
@pytest.mark.parametrize("accumulation, optimizer", [(1, "adamw"), (2, "adamw"), (2, "lamb")])
def test_graphed_engine_trains_like_the_eager_engine(accumulation, optimizer):
    batches = [flat_batch([30, 17, 25, 9], seed=s) for s in range(8)]
    runs = {}
    for graphs in (False, True):
        engine = make_engine("cuda", rows=4, seq_len=32, graphs=graphs, accumulation=accumulation, optimizer=optimizer)
        start = torch.cat([p.detach().flatten().clone() for p in engine.module.parameters()])
        losses = run_steps(engine, batches)
        update = torch.cat([p.detach().flatten() for p in engine.module.parameters()]) - start
        runs[graphs] = (losses, update, engine)
    (eager, eager_update, _), (graphed, graphed_update, engine) = runs[False], runs[True]
    # bf16 autocast on both sides; the graphed side also runs padding rows through the layers.
    assert graphed == pytest.approx(eager, rel=2e-2), (graphed, eager)
    assert engine.global_step == 8 // accumulation and len(engine.graphs) == accumulation
    cosine = torch.nn.functional.cosine_similarity(graphed_update, eager_update, dim=0)
    assert graphed_update.norm() > 0 and cosine > 0.98, float(cosine)


@pytest.mark.gpu
@pytest.mark.parametrize("optimizer", ["adamw", "lamb"])
def test_a_non_finite_loss_inside_a_real_graph_is_skipped_and_named(optimizer):
    check_a_non_finite_loss_is_skipped_and_named(optimizer, "cuda")


@pytest.mark.gpu
def test_evaluation_runs_eagerly_beside_a_graphed_training_step():
    engine = make_engine("cuda", rows=4, seq_len=32)
    batch = flat_batch([30, 17, 25, 9])
    run_steps(engine, [batch])
    logits = engine.forward(batch).seq_relationship_logits
    assert logits.shape == (4, 2)  # the eager model's own rows, not the graph's padded ones
    assert engine.module.training  # forward() evaluates in eval mode and puts training mode back


@pytest.mark.gpu
@pytest.mark.parametrize("kernels", ["triton", "torch"])
def test_graph_replays_draw_fresh_dropout_masks(kernels, monkeypatch):
    monkeypatch.setenv("FASTBERT_KERNELS", kernels)
    engine = make_engine("cuda", rows=4, seq_len=32, lr=1e-9, dropout=0.3)
    batch = flat_batch([30, 17, 25, 9])
    losses = run_steps(engine, [batch] * 4)
    # Same batch, (almost) unchanged weights: only dropout can move the loss. A seed frozen
    # into the graph would replay one mask and give four (nearly) equal losses.
    gaps = [abs(a - b) / abs(a) for i, a in enumerate(losses) for b in losses[i + 1:]]
    assert min(gaps) > 1e-4, losses
    torch.manual_seed(7)
    first = run_steps(engine, [batch])
    torch.manual_seed(7)
    assert run_steps(engine, [batch]) == pytest.approx(first, rel=1e-3)  # and manual_seed still reproduces them
