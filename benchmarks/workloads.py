"""Identical workloads for fastbert and its baselines: synthetic batches, twin models, train steps.

Every comparison here feeds both sides the same tokens: fastbert gets a
:class:`fastbert.model.Batch` of flat (unpadded) inputs, transformers the padded keyword
arguments built from the same sequences. Both models start
from the same weights (fastbert writes an HF directory, transformers loads it) and use
the same fused ``torch.optim.AdamW`` (transformers' Trainer default with torch >= 2.8).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from fastbert.model import IGNORE_INDEX, Batch, BertConfig, BertForPreTraining, BertForSequenceClassification, BertInputs
from fastbert.train.config import EngineConfig, OptimizerConfig

CLS, SEP, MASK = 101, 102, 103
FIRST_WORD_ID = 1000  # ids below are [PAD], [unused*] and specials in BERT's vocabulary
FASTBERT_CLASSES = {"pretraining": BertForPreTraining, "classification": BertForSequenceClassification}
ADAMW = dict(lr=1e-4, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01, fused=True)
PACKED_DATA = Path(os.environ.get("FASTBERT_BENCH_PACKED_DATA", Path(__file__).parent / ".data" / "wiki-s512"))
"""Prepared pretraining shards for the packed cases (made by benchmarks/gpu_data.sh; never committed)."""
COMPILE_BACKEND = "inductor"
"""torch.compile's backend for the compiled baselines (the CPU dry run of the GPU suite swaps in "eager")."""


@dataclass(eq=False)
class TwinBatch:
    """One batch for both sides (fastbert's flat Batch, transformers' padded kwargs), plus the counts throughput is reported in."""

    flat: Batch
    padded: dict
    real_tokens: int
    sequences: int
    masked_tokens: int

    def to(self, device: torch.device) -> "TwinBatch":
        padded = {k: v.to(device) if torch.is_tensor(v) else v for k, v in self.padded.items()}
        return TwinBatch(self.flat.to(device), padded, self.real_tokens, self.sequences, self.masked_tokens)


def _lengths(batch_size: int, min_len: int, max_len: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(min_len, max_len + 1, (batch_size,), generator=generator)


def _layouts(ids: list[torch.Tensor], types: list[torch.Tensor], extra_flat: dict, extra_padded: dict) -> tuple[Batch, dict]:
    lengths = torch.tensor([len(t) for t in ids])
    width = int(lengths.max())
    mask = torch.arange(width)[None, :] < lengths[:, None]
    padded_ids = torch.zeros(len(ids), width, dtype=torch.long)
    padded_types = torch.zeros_like(padded_ids)
    padded_ids[mask] = torch.cat(ids)
    padded_types[mask] = torch.cat(types)
    inputs = BertInputs.from_flat(
        torch.cat(ids),
        torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).to(torch.int32),
        width,
        torch.cat([torch.arange(n) for n in lengths.tolist()]),
        torch.cat(types),
    )
    flat = Batch(inputs, extra_flat, num_tokens=int(lengths.sum()), num_sequences=len(ids))
    padded = dict(input_ids=padded_ids, attention_mask=mask.long(), token_type_ids=padded_types, **extra_padded)
    return flat, padded


def _sentence_pair(length: int, vocab_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """[CLS] A [SEP] B [SEP] with random word ids; A takes a random share of the length."""
    ids = torch.randint(FIRST_WORD_ID, vocab_size, (length,), generator=generator)
    split = int(torch.randint(2, max(3, length - 1), (1,), generator=generator))
    ids[0], ids[split - 1], ids[-1] = CLS, SEP, SEP
    types = torch.zeros(length, dtype=torch.long)
    types[split:] = 1
    return ids, types


def pretraining_batches(
    count: int, batch_size: int, min_len: int, max_len: int,
    vocab_size: int = 30522, mask_prob: float = 0.15, seed: int = 0,
) -> list[TwinBatch]:
    """Distinct MLM+NSP batches: lengths uniform in [min_len, max_len], ``mask_prob`` of real tokens masked."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        ids, types, labels = [], [], []
        for length in _lengths(batch_size, min_len, max_len, generator).tolist():
            seq, seg = _sentence_pair(length, vocab_size, generator)
            masked = torch.rand(length, generator=generator) < mask_prob
            labels.append(torch.where(masked, seq, IGNORE_INDEX))
            ids.append(torch.where(masked, MASK, seq))
            types.append(seg)
        nsp = torch.randint(0, 2, (batch_size,), generator=generator)
        flat_labels = torch.cat(labels)
        padded_labels = torch.full((batch_size, max(len(t) for t in ids)), IGNORE_INDEX)
        for row, lab in enumerate(labels):
            padded_labels[row, : len(lab)] = lab
        flat, padded = _layouts(
            ids, types,
            dict(labels=flat_labels, next_sentence_label=nsp),
            dict(labels=padded_labels, next_sentence_label=nsp),
        )
        # As fastbert's collator does: the MLM positions counted on the host, with the labels.
        flat.inputs.mlm_positions = (flat_labels != IGNORE_INDEX).nonzero().flatten()
        batches.append(TwinBatch(flat, padded, len(flat_labels), batch_size, len(flat.inputs.mlm_positions)))
    return batches


def packed_pretraining_batches(directory: Path, count: int, rows: int, row_len: int, seed: int = 0) -> list[TwinBatch]:
    """``count`` batches of real prepared pairs, each the sequences that fill ``rows`` rows of
    ``row_len`` tokens as fastbert's :class:`PackedBatchSampler` packs them (best fit), masked by
    its collator. fastbert reads a batch flat (its attention keeps the sequences apart, so a
    row's worth of tokens may hold several); transformers gets the same sequences one to a row,
    padded to the longest (its sdpa path has no packing)."""
    from fastbert.data.collator import PackedBatchSampler, PretrainingCollator, to_padded
    from fastbert.data.dataset import PretrainingDataset
    from fastbert.tokenizer import load_tokenizer

    if not (Path(directory) / "metadata.json").is_file():
        raise FileNotFoundError(f"{directory}: no prepared shards (bash benchmarks/gpu_data.sh writes them)")
    dataset = PretrainingDataset(directory)
    collator = PretrainingCollator.from_tokenizer(load_tokenizer(dataset.tokenizer_dir), seed=seed)
    sampler = PackedBatchSampler(dataset.sequence_lengths(), row_len, rows, seed, drop_last=True)
    batches = []
    for indices in list(sampler)[:count]:
        flat = collator([dataset[i] for i in indices])
        padded = to_padded(flat, dataset.pad_id)
        batches.append(TwinBatch(flat, padded, flat.num_tokens, flat.num_sequences, len(flat.inputs.mlm_positions)))
    if len(batches) < count:
        raise ValueError(f"{directory}: {len(batches)} batches of {rows} x {row_len} tokens, {count} needed")
    return batches


def classification_batches(
    count: int, batch_size: int, min_len: int, max_len: int, num_labels: int = 2,
    vocab_size: int = 30522, seed: int = 0,
) -> list[TwinBatch]:
    """Distinct sequence-classification batches of sentence pairs with random labels."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        pairs = [_sentence_pair(n, vocab_size, generator) for n in _lengths(batch_size, min_len, max_len, generator).tolist()]
        labels = torch.randint(0, num_labels, (batch_size,), generator=generator)
        flat, padded = _layouts([p[0] for p in pairs], [p[1] for p in pairs], dict(labels=labels), dict(labels=labels))
        batches.append(TwinBatch(flat, padded, flat.num_tokens, batch_size, 0))
    return batches


IMPLEMENTATIONS = ("fastbert", "fastbert-torch", "transformers-sdpa")
"""fastbert as configured (Triton kernels on CUDA), fastbert forced onto its torch reference ops, transformers."""
GRAPHED = "fastbert-graphs"
"""fastbert with forward, backward and update replayed from one CUDA graph per step (``cuda_graphs: true``); CUDA only."""
COMPILED = "fastbert-torch-compile"
"""torch.compile (inductor) of fastbert's torch reference ops, on the graphed variant's static batches."""
TRANSFORMERS_COMPILED = "transformers-sdpa-compile"
"""torch.compile (inductor) of transformers' model, on batches padded to the case's full length."""


def save_initial_weights(task: str, config: BertConfig, directory: str) -> None:
    """Write a seeded fastbert model of ``task`` ("pretraining" or "classification") as an HF directory."""
    torch.manual_seed(0)
    FASTBERT_CLASSES[task](config).save_pretrained(directory)


def load_model(task: str, impl: str, directory: str, device: torch.device) -> torch.nn.Module:
    """One implementation of ``task`` with the weights in ``directory``, in training mode (dropout on)."""
    if impl == "transformers-sdpa":
        import transformers

        cls = {"pretraining": transformers.BertForPreTraining, "classification": transformers.BertForSequenceClassification}[task]
        model = cls.from_pretrained(directory, attn_implementation="sdpa")
    else:
        model = FASTBERT_CLASSES[task].from_pretrained(directory)
        if impl in ("fastbert-torch", COMPILED):
            model.backends.use(kernels="torch")
    return model.to(device).train()


def input_layout(impl: str) -> str:
    """fastbert reads the flat layout; transformers the padded one."""
    return "padded" if impl.startswith("transformers") else "flat"


def train_step(model: torch.nn.Module, layout: str, autocast_dtype: torch.dtype | None = None) -> Callable[[TwinBatch], None]:
    """A closure doing forward, backward and an AdamW step on ``batch.flat`` or ``batch.padded``."""
    optimizer = torch.optim.AdamW(model.parameters(), **ADAMW)
    device_type = next(model.parameters()).device.type

    def forward(batch: TwinBatch):
        if layout == "flat":
            return model(batch.flat.inputs, **batch.flat.targets)
        return model(**batch.padded)

    def step(batch: TwinBatch) -> None:
        with torch.autocast(device_type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            loss = forward(batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def graphed_train_step(model: torch.nn.Module, autocast_dtype: torch.dtype | None, rows: int, seq_len: int) -> Callable[[TwinBatch], None]:
    """:func:`train_step` as the graphed engine runs it: forward, backward and the same AdamW
    update replayed from one CUDA graph per step (no clipping, as on the other sides; the engine
    still takes the gradient norm it logs, one multi-tensor launch inside the graph).

    It takes ``batch.flat`` on the host, as a data loader hands it over: padding it to
    ``rows x seq_len`` and copying it in are part of the timed step.
    """
    from fastbert.train.engines import GraphedEngine

    device = next(model.parameters()).device
    optim = OptimizerConfig(lr=ADAMW["lr"], beta1=ADAMW["betas"][0], beta2=ADAMW["betas"][1], eps=ADAMW["eps"],
                            weight_decay=ADAMW["weight_decay"], warmup_steps=0, grad_clip=0.0)
    config = EngineConfig(optim=optim, total_steps=10**9, micro_batch_size=rows, static_seq_len=seq_len,
                          cuda_graphs=True, bf16=autocast_dtype is not None)
    graphed = GraphedEngine(model, config, device)

    def step(batch: TwinBatch) -> None:
        graphed.train_step(batch.flat)

    return step


def compiled_train_step(model: torch.nn.Module, autocast_dtype: torch.dtype | None, rows: int, seq_len: int) -> Callable[[TwinBatch], None]:
    """:func:`train_step` through ``torch.compile(model)``, fed what :func:`graphed_train_step`
    feeds its graph (host batches padded to ``rows x seq_len``, a fixed number of MLM rows),
    so one compilation serves every batch."""
    from fastbert.train.engines.graphed import static_batch

    compiled = torch.compile(model, backend=COMPILE_BACKEND)
    optimizer = torch.optim.AdamW(model.parameters(), **ADAMW)
    device = next(model.parameters()).device

    def step(batch: TwinBatch) -> None:
        host, shape = static_batch(batch.flat, rows, seq_len, pad_id=0)
        targets = {k: v.to(device, non_blocking=True) for k, v in host.items()}
        ids, mask, types = (targets.pop(name) for name in ("input_ids", "attention_mask", "token_type_ids"))
        inputs = BertInputs.from_padded(ids, mask, types, keep_padding=True, masked_capacity=shape.masked_rows)
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            loss = compiled(inputs, **targets).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def compiled_transformers_step(model: torch.nn.Module, autocast_dtype: torch.dtype | None, seq_len: int) -> Callable[[TwinBatch], None]:
    """:func:`train_step` through ``torch.compile`` of transformers' model, each batch padded to
    ``seq_len`` columns (padding on the host, inside the timed step) so that one compilation
    serves every batch."""
    compiled = torch.compile(model, backend=COMPILE_BACKEND)
    optimizer = torch.optim.AdamW(model.parameters(), **ADAMW)
    device = next(model.parameters()).device

    def step(batch: TwinBatch) -> None:
        kwargs = {}
        for name, value in batch.padded.items():
            if value.dim() == 2:  # per token: ids, mask, token types, MLM labels
                value = torch.nn.functional.pad(value, (0, seq_len - value.shape[1]), value=IGNORE_INDEX if name == "labels" else 0)
            kwargs[name] = value.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            loss = compiled(**kwargs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def pretraining_flops(config: BertConfig, batch: TwinBatch) -> float:
    """Model FLOPs of one training step (forward + backward = 3x forward matmuls), counting real tokens.

    Matmuls only: QKV/output/FFN linears, attention scores and values, the MLM head on the
    masked tokens and NSP/pooler. The same number serves both sides, so MFU compares the
    useful work done, whatever padding or full-vocabulary logits a baseline spends extra.
    """
    h, ffn, layers, vocab = config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.vocab_size
    lengths = batch.flat.inputs.layout.lengths.double()
    linear = 2 * batch.real_tokens * layers * (4 * h * h + 2 * h * ffn)
    attention = 2 * layers * 2 * h * float((lengths**2).sum())
    heads = 2 * batch.masked_tokens * (h * h + h * vocab) + 2 * batch.sequences * (h * h + 2 * h)
    return 3.0 * (linear + attention + heads)
