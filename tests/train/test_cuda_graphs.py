"""CUDA-graph training steps: the static batch a graph replays (CPU), and the graphed engine
against the eager one (GPU)."""

from __future__ import annotations

import pytest
import torch

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
                lr: float = 1e-3, dropout: float = 0.0) -> LocalEngine:
    """A local (or graphed) engine on the tiny model (same initial weights every time), eight steps long."""
    config = EngineConfig(optim=OptimizerConfig(lr=lr, warmup_steps=0), total_steps=8, grad_accum_steps=accumulation,
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


@pytest.fixture
def emulated_cuda_graphs(monkeypatch):
    """CUDA-graph semantics on a CPU, for the engine and loop plumbing around them: capture
    runs its body once (as warmup would; the engine restores the gradients after it) and a
    replay re-runs that body on the same input buffers, writing into the captured outputs."""
    import contextlib
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
    capture = graphed.GraphedEngine._capture

    def capture_with_replay(self, host_batch, shape):
        captured = capture(self, host_batch, shape)

        def body():
            fresh = self._replayed_step(captured.inputs, shape)
            with torch.no_grad():
                for field in dataclasses.fields(fresh):
                    value = getattr(fresh, field.name)
                    if torch.is_tensor(value):
                        getattr(captured.outputs, field.name).copy_(value)

        captured.graph.body = body
        return captured

    monkeypatch.setattr(graphed.GraphedEngine, "_capture", capture_with_replay)


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
            assert len(engine.graphs) == 1 and engine.global_step == 8 // accumulation
    for eager, graphed in zip(records[False], records[True], strict=True):
        for key in ("loss", "mlm_loss", "nsp_loss", "mlm_acc", "nsp_acc", "grad_norm"):
            assert graphed[key] == pytest.approx(eager[key], rel=1e-4, abs=1e-6), key
        assert graphed["tokens_per_s"] > 0


# --------------------------------------------------------------------------------------------- GPU
def run_steps(engine: LocalEngine, batches: list[Batch]) -> list[float]:
    return [engine.train_step(batch).loss.item() for batch in batches]


@pytest.mark.gpu
@pytest.mark.parametrize("accumulation", [1, 2])
def test_graphed_engine_trains_like_the_eager_engine(accumulation):
    batches = [flat_batch([30, 17, 25, 9], seed=s) for s in range(8)]
    runs = {}
    for graphs in (False, True):
        engine = make_engine("cuda", rows=4, seq_len=32, graphs=graphs, accumulation=accumulation)
        start = torch.cat([p.detach().flatten().clone() for p in engine.module.parameters()])
        losses = run_steps(engine, batches)
        update = torch.cat([p.detach().flatten() for p in engine.module.parameters()]) - start
        runs[graphs] = (losses, update, engine)
    (eager, eager_update, _), (graphed, graphed_update, engine) = runs[False], runs[True]
    # bf16 autocast on both sides; the graphed side also runs padding rows through the layers.
    assert graphed == pytest.approx(eager, rel=2e-2), (graphed, eager)
    assert engine.global_step == 8 // accumulation and len(engine.graphs) == 1
    cosine = torch.nn.functional.cosine_similarity(graphed_update, eager_update, dim=0)
    assert graphed_update.norm() > 0 and cosine > 0.98, float(cosine)


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
