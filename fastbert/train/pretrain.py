"""MLM + NSP pretraining: data order, model, engine and the training loop wired together."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from ..model.inputs import IGNORE_INDEX, Batch
from .config import PretrainConfig
from .engines import build_engine
from .evaluation import HeldOutEvaluation, held_out_batches
from .launch import start_launch
from .loop import LoopConfig, LoopResult, train
from .metrics import flops_per_token
from .run_dir import StartMode, claim_run_directory
from .run_record import write_run_record
from .sampler import DataOrder
from .trackers import check_report_to

logger = logging.getLogger(__name__)

PRETRAINING_DEFAULTS = {"attention_probs_dropout_prob": 0.0}
"""Where fresh pretraining departs from BERT's 2018 settings. Attention dropout 0, as
MosaicBERT and ModernBERT pretrain: FlashAttention (flash-attn or torch's varlen kernel)
runs on unpadded tokens only without it, where padded SDPA with a mask would run
otherwise. BERT's 0.1 is one setting away: ``--set model_overrides={attention_probs_dropout_prob: 0.1}``."""


class PretrainingMetrics:
    """MLM and NSP losses and accuracies (MLM over masked tokens, NSP over sequences)."""

    def batch_sums(self, batch: Batch, outputs: Any) -> dict[str, torch.Tensor | float]:
        # Static-shape (CUDA graph) outputs carry ignored MLM rows, and dummy sequences
        # after the batch's real ones: count only real labels and the first rows.
        mlm_labels = outputs.masked_lm_labels
        # Pinned by the DataLoader on CUDA, so this copy does not block the host.
        nsp_labels = batch.targets["next_sentence_label"].to(outputs.seq_relationship_logits.device, non_blocking=True)
        nsp_logits = outputs.seq_relationship_logits[: nsp_labels.numel()]
        return {
            "mlm_loss": outputs.mlm_loss.detach(),
            "nsp_loss": outputs.nsp_loss.detach(),
            "mlm_correct": (outputs.masked_lm_logits.argmax(-1) == mlm_labels).sum(),
            "mlm_count": (mlm_labels != IGNORE_INDEX).sum(),
            "nsp_correct": (nsp_logits.argmax(-1) == nsp_labels).sum(),
            "nsp_count": nsp_labels.numel(),
        }

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        return {
            "mlm_loss": sums["mlm_loss"] / sums["micro_batches"],
            "mlm_acc": sums["mlm_correct"] / max(1.0, sums["mlm_count"]),
            "nsp_loss": sums["nsp_loss"] / sums["micro_batches"],
            "nsp_acc": sums["nsp_correct"] / max(1.0, sums["nsp_count"]),
        }


class EpochTaggedDataset(torch.utils.data.Dataset):
    """Indexes the pretraining dataset by (epoch, sample) so the collator can seed masks by both."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, index = key
        return {**self.dataset[index], "epoch": epoch}


class EpochCollator:
    """Runs the MLM collator with the epoch its samples are tagged with (a micro-batch never spans epochs)."""

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, samples: list[dict[str, Any]]) -> Batch:
        self.collator.set_epoch(samples[0]["epoch"])
        return self.collator(samples)


@dataclass
class PretrainingData:
    """What a rank trains on: the prepared pairs, their seeded order and the masking collator.

    :meth:`batches` is the exact stream ``fastbert pretrain`` trains on; benchmarks reuse it.
    """

    dataset: Any
    order: DataOrder
    tokenizer: Any
    collator: EpochCollator
    num_workers: int
    pin_memory: bool

    def batches(self, step: int) -> Iterator[Batch]:
        """This rank's micro-batches from optimizer step ``step`` on (an exact resume starts there)."""
        loader = torch.utils.data.DataLoader(
            EpochTaggedDataset(self.dataset),
            batch_sampler=self.order.micro_batches(step),
            collate_fn=self.collator,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            # A private generator: worker seeding must not consume the global (dropout) RNG.
            generator=torch.Generator(),
        )
        return iter(loader)


def pretraining_data(
    config: PretrainConfig,
    dataset: Any,
    *,
    rank: int = 0,
    world_size: int = 1,
    tokenizer_dir: str | os.PathLike | None = None,
    pin_memory: bool = False,
) -> PretrainingData:
    """The batches of ``dataset`` (a :class:`~fastbert.data.dataset.PretrainingDataset` or ``BlendedDataset``) that ``rank`` trains on."""
    from ..data.collator import PretrainingCollator

    order = DataOrder(len(dataset), config.batch_size, config.grad_accum_steps, world_size, rank, config.seed)
    tokenizer = _find_tokenizer(dataset, tokenizer_dir)
    collator = EpochCollator(PretrainingCollator.from_tokenizer(tokenizer, seed=config.seed, mlm_probability=config.mlm_probability))
    return PretrainingData(dataset, order, tokenizer, collator, config.num_workers, pin_memory)


def run_pretraining(
    config: PretrainConfig,
    data_dir: str | os.PathLike | list[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    deepspeed_config: dict[str, Any] | None = None,
    start: StartMode = StartMode(),
    tokenizer_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> LoopResult:
    """Pretrain into ``out_dir``, which this run holds (locked) until it ends; ``start`` says
    what it may find there (an earlier run to resume or overwrite)."""
    from ..data.dataset import open_pretraining_data
    from ..model import BertConfig

    check_report_to(config.report_to)  # a missing tracker package fails now, not at the first log
    launch = start_launch()
    dataset = open_pretraining_data(data_dir)  # one prepared directory, or DIR:WEIGHT entries to blend
    held_out = _held_out_dataset(config, data_dir, dataset)
    if config.init_from:
        model_config = BertConfig.from_pretrained(config.init_from, **config.model_overrides)
    else:
        shape = {"vocab_size": dataset.vocab_size, "max_position_embeddings": max(512, dataset.max_seq_len)}
        model_config = BertConfig.preset(config.model, **{**shape, **PRETRAINING_DEFAULTS, **config.model_overrides})
    if model_config.vocab_size < dataset.vocab_size:
        raise UserError(f"{dataset.name}: the data's vocabulary ({dataset.vocab_size}) is larger than the model's ({model_config.vocab_size})")
    with claim_run_directory(out_dir, start, launch):
        return _pretrain(config, dataset, held_out, model_config, Path(out_dir), data_dir, deepspeed_config, start,
                         tokenizer_dir, progress)


def _pretrain(config, dataset, held_out, model_config, out_dir, data_dir, deepspeed_config, start, tokenizer_dir,
              progress) -> LoopResult:
    from ..model import BertForPreTraining

    torch.manual_seed(config.seed)  # identical initial weights on every rank
    if config.init_from:
        model = BertForPreTraining.from_pretrained(config.init_from, **config.model_overrides)
    else:
        model = BertForPreTraining(model_config)
    model_flops = _flops_model(model)  # before ZeRO-3 partitions the parameters away

    # The CUDA-graph row length, when graphs are on, is the data's.
    engine = build_engine(model, config.engine_config(deepspeed_config, static_seq_len=dataset.max_seq_len))
    torch.manual_seed(config.seed + 1 + engine.rank)  # a distinct dropout stream per rank
    data = pretraining_data(
        config, dataset, rank=engine.rank, world_size=engine.world_size,
        tokenizer_dir=tokenizer_dir, pin_memory=engine.device.type == "cuda",
    )
    evaluate = None
    if held_out is not None:
        batches = held_out_batches(held_out, data.tokenizer, batch_size=2 * config.batch_size, max_pairs=config.eval_pairs,
                                   mlm_probability=config.mlm_probability)
        evaluate = HeldOutEvaluation(engine, batches)
    if engine.is_main:
        write_run_record(out_dir, config, data_dir=data_dir, deepspeed_config=deepspeed_config,
                         world_size=engine.world_size, resume=start.resuming)
    loop_config = LoopConfig(
        out_dir=out_dir,
        max_steps=config.max_steps,
        log_every=config.log_every,
        eval_every=config.eval_every,
        save_every=config.save_every,
        checkpoint_policy=config.checkpoint_policy(),
        max_minutes=config.max_minutes,
        progress=progress,
        run_info={"seed": config.seed, "global_batch_size": data.order.global_batch_size, "data_pairs": len(dataset)},
        report_to=config.report_to,
        settings=config.settings(),
    )
    if engine.is_main:
        logger.info(
            "pretraining %s (%.1fM parameters) on %d pairs: global batch %d = %d × %d accumulation × %d ranks, %d steps per epoch",
            config.model, sum(p.numel() for p in model.parameters()) / 1e6, len(dataset), data.order.global_batch_size,
            config.batch_size, config.grad_accum_steps, engine.world_size, data.order.steps_per_epoch,
        )
    return train(
        engine, data.batches, loop_config, PretrainingMetrics(), evaluate=evaluate, resume=start.resuming,
        tokenizer=data.tokenizer, flops_per_token=model_flops,
    )


def _held_out_dataset(config: PretrainConfig, data_dir, dataset):
    """The held-out pairs to evaluate on (None: no evaluation), checked against the training data.

    ``eval_data`` names them (a prepared directory: its validation split when it has one, else
    its pairs); without it, the training data's own validation split (``data prepare
    --validation-fraction``) is used when every training directory has one."""
    from ..data.dataset import open_pretraining_data, parse_data_sources, read_split_names

    if config.eval_data:
        splits = read_split_names(config.eval_data)
        held_out = open_pretraining_data(config.eval_data, "validation" if "validation" in splits else "train")
    elif all("validation" in read_split_names(directory) for directory, _ in parse_data_sources(_as_list(data_dir))):
        held_out = open_pretraining_data(data_dir, "validation")
    elif config.eval_every:
        raise UserError("eval_every is set but there are no held-out pairs: prepare the data with --validation-fraction "
                        "or --validation-documents, or name a prepared directory of held-out documents with eval_data")
    else:
        return None
    if held_out.tokenizer["hash"] != dataset.tokenizer["hash"]:
        raise UserError(f"{held_out.name}: prepared with another tokenizer than {dataset.name}; "
                        "prepare the held-out documents with the training data's tokenizer")
    return held_out


def _as_list(data_dir) -> list:
    return [data_dir] if isinstance(data_dir, (str, os.PathLike)) else list(data_dir)


def _flops_model(model) -> Any:
    non_embedding = model.num_parameters(exclude_embeddings=True)
    layers, hidden = model.config.num_hidden_layers, model.config.hidden_size
    return lambda avg_seq_len: flops_per_token(non_embedding, layers, hidden, avg_seq_len)


def _find_tokenizer(dataset, tokenizer_dir: str | os.PathLike | None):
    """The data's tokenizer (masking needs its vocabulary; the export ships it): the given one, else the data's copy."""
    from ..tokenizer import load_tokenizer, tokenizer_hash

    path = Path(tokenizer_dir) if tokenizer_dir else dataset.tokenizer_dir
    if not path.is_dir():
        raise UserError(f"{path}: tokenizer directory not found (the data was prepared with it; pass --tokenizer DIR)")
    tokenizer = load_tokenizer(path)
    if tokenizer_hash(tokenizer) != dataset.tokenizer["hash"]:
        raise UserError(f"{path}: this tokenizer differs from the one {dataset.name} was prepared with")
    return tokenizer
