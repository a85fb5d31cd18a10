"""Identical workloads for fastbert and its baselines: synthetic batches, twin models, train steps.

Every comparison here feeds both sides the same tokens: fastbert gets the flat (unpadded)
layout, transformers the padded one built from the same sequences. Both models start
from the same weights (fastbert writes an HF directory, transformers loads it) and use
the same fused ``torch.optim.AdamW`` (transformers' Trainer default with torch >= 2.8).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from fastbert.model import BertConfig, BertForPreTraining, BertForSequenceClassification

CLS, SEP, MASK = 101, 102, 103
FIRST_WORD_ID = 1000  # ids below are [PAD], [unused*] and specials in BERT's vocabulary
IGNORE_INDEX = -100
FASTBERT_CLASSES = {"pretraining": BertForPreTraining, "classification": BertForSequenceClassification}
ADAMW = dict(lr=1e-4, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01, fused=True)


@dataclass(eq=False)
class Batch:
    """One batch in both layouts, plus the counts throughput is reported in."""

    flat: dict
    padded: dict
    real_tokens: int
    sequences: int
    masked_tokens: int

    def to(self, device: torch.device) -> "Batch":
        move = lambda d: {k: v.to(device) if torch.is_tensor(v) else v for k, v in d.items()}  # noqa: E731
        return Batch(move(self.flat), move(self.padded), self.real_tokens, self.sequences, self.masked_tokens)


def _lengths(batch_size: int, min_len: int, max_len: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(min_len, max_len + 1, (batch_size,), generator=generator)


def _layouts(ids: list[torch.Tensor], types: list[torch.Tensor], extra_flat: dict, extra_padded: dict) -> tuple[dict, dict]:
    lengths = torch.tensor([len(t) for t in ids])
    width = int(lengths.max())
    mask = torch.arange(width)[None, :] < lengths[:, None]
    padded_ids = torch.zeros(len(ids), width, dtype=torch.long)
    padded_types = torch.zeros_like(padded_ids)
    padded_ids[mask] = torch.cat(ids)
    padded_types[mask] = torch.cat(types)
    flat = dict(
        input_ids=torch.cat(ids),
        token_type_ids=torch.cat(types),
        position_ids=torch.cat([torch.arange(n) for n in lengths.tolist()]),
        cu_seqlens=torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).to(torch.int32),
        max_seqlen=width,
        **extra_flat,
    )
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
) -> list[Batch]:
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
        masked_tokens = int((flat_labels != IGNORE_INDEX).sum())
        batches.append(Batch(flat, padded, len(flat_labels), batch_size, masked_tokens))
    return batches


def classification_batches(
    count: int, batch_size: int, min_len: int, max_len: int, num_labels: int = 2,
    vocab_size: int = 30522, seed: int = 0,
) -> list[Batch]:
    """Distinct sequence-classification batches of sentence pairs with random labels."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        pairs = [_sentence_pair(n, vocab_size, generator) for n in _lengths(batch_size, min_len, max_len, generator).tolist()]
        labels = torch.randint(0, num_labels, (batch_size,), generator=generator)
        flat, padded = _layouts([p[0] for p in pairs], [p[1] for p in pairs], dict(labels=labels), dict(labels=labels))
        batches.append(Batch(flat, padded, len(flat["input_ids"]), batch_size, 0))
    return batches


IMPLEMENTATIONS = ("fastbert", "fastbert-torch", "transformers-sdpa")
"""fastbert as configured (Triton kernels on CUDA), fastbert forced onto its torch reference ops, transformers."""
GRAPHED = "fastbert-graphs"
"""fastbert with forward + backward replayed from a CUDA graph (``cuda_graphs: true``); CUDA only."""
COMPILED = "fastbert-torch-compile"
"""torch.compile (inductor) of fastbert's torch reference ops, on the graphed variant's static batches."""


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
        overrides = {"kernel_backend": "torch"} if impl in ("fastbert-torch", COMPILED) else {}
        model = FASTBERT_CLASSES[task].from_pretrained(directory, **overrides)
    return model.to(device).train()


def input_layout(impl: str) -> str:
    """fastbert reads the flat layout; transformers the padded one."""
    return "padded" if impl.startswith("transformers") else "flat"


def train_step(model: torch.nn.Module, layout: str, autocast_dtype: torch.dtype | None = None) -> Callable[[Batch], None]:
    """A closure doing forward, backward and an AdamW step on ``batch.flat`` or ``batch.padded``."""
    optimizer = torch.optim.AdamW(model.parameters(), **ADAMW)
    device_type = next(model.parameters()).device.type

    def step(batch: Batch) -> None:
        with torch.autocast(device_type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            loss = model(**getattr(batch, layout)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def graphed_train_step(model: torch.nn.Module, autocast_dtype: torch.dtype | None, rows: int, seq_len: int) -> Callable[[Batch], None]:
    """:func:`train_step` with forward and backward replayed from a CUDA graph.

    It takes ``batch.flat`` on the host, as a data loader hands it over: padding it to
    ``rows x seq_len`` and copying it in are part of the timed step.
    """
    from fastbert.train.cuda_graphs import GraphedForwardBackward

    optimizer = torch.optim.AdamW(model.parameters(), **ADAMW)
    graphed = GraphedForwardBackward(model, autocast_dtype, 1.0, rows=rows, seq_len=seq_len, pad_id=0)

    def step(batch: Batch) -> None:
        graphed(batch.flat)
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)  # the graph accumulates into these .grad tensors

    return step


def compiled_train_step(model: torch.nn.Module, autocast_dtype: torch.dtype | None, rows: int, seq_len: int) -> Callable[[Batch], None]:
    """:func:`train_step` through ``torch.compile(model)``, fed what :func:`graphed_train_step`
    feeds its graph (host batches padded to ``rows x seq_len``, a fixed number of MLM rows),
    so one compilation serves every batch."""
    from fastbert.train.cuda_graphs import static_batch

    compiled = torch.compile(model)
    optimizer = torch.optim.AdamW(model.parameters(), **ADAMW)
    device = next(model.parameters()).device

    def step(batch: Batch) -> None:
        host, shape = static_batch(batch.flat, rows, seq_len, pad_id=0)
        inputs = {k: v.to(device, non_blocking=True) for k, v in host.items()}
        extra = {} if shape.masked_rows is None else {"max_masked_tokens": shape.masked_rows}
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            loss = compiled(**inputs, keep_padding=True, **extra).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def pretraining_flops(config: BertConfig, batch: Batch) -> float:
    """Model FLOPs of one training step (forward + backward = 3x forward matmuls), counting real tokens.

    Matmuls only: QKV/output/FFN linears, attention scores and values, the MLM head on the
    masked tokens and NSP/pooler. The same number serves both sides, so MFU compares the
    useful work done, whatever padding or full-vocabulary logits a baseline spends extra.
    """
    h, ffn, layers, vocab = config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.vocab_size
    lengths = (batch.flat["cu_seqlens"][1:] - batch.flat["cu_seqlens"][:-1]).double()
    linear = 2 * batch.real_tokens * layers * (4 * h * h + 2 * h * ffn)
    attention = 2 * layers * 2 * h * float((lengths**2).sum())
    heads = 2 * batch.masked_tokens * (h * h + h * vocab) + 2 * batch.sequences * (h * h + 2 * h)
    return 3.0 * (linear + attention + heads)
