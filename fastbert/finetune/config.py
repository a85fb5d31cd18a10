"""``FinetuneConfig``: the typed settings of a fine-tuning run, behind the ``fastbert finetune`` flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..train.config import OptimizerConfig, check_setting
from .tasks import MULTIPLE_CHOICE, get_task

LONG_SEQUENCE_POLICIES = ("truncate", "refuse")
MIN_SEQ_LEN = 8
"""[CLS], two [SEP] and room for text on both sides of a pair (or a question and a window of context)."""


@dataclass
class FinetuneConfig:
    """One fine-tuning run (all seeds)."""

    task: str
    """The task (fastbert.finetune.tasks.TASKS): a GLUE task, squad, squad_v2, swag, or a generic
    classification, regression or multiple-choice task on your own data."""
    init: str
    """HF BERT directory (or fastbert export) with weights and tokenizer, or a Hugging Face Hub model id."""
    out: Path
    """Output folder: results.json and the best epoch's model (per seed when there are several)."""
    data_dir: Path | None = None
    """Folder holding a named task's files (as `fastbert data download` lays them out)."""
    train_file: Path | None = None
    """Generic tasks: training data (.csv, .tsv, .jsonl or .parquet)."""
    validation_file: Path | None = None
    """Generic tasks: dev data in the same columns, evaluated after every epoch."""
    dataset: str | None = None
    """Generic tasks: a `datasets` dataset instead of files (a save_to_disk directory, or a Hub name)."""
    dataset_config: str | None = None
    """The dataset's configuration (e.g. sst2 for glue)."""
    train_split: str = "train"
    """--dataset: the split to train on."""
    validation_split: str = "validation"
    """--dataset: the split to evaluate on."""
    text_columns: tuple[str, ...] = ()
    """Generic tasks: the text column(s), one or two (multiple-choice: the context, then each choice)."""
    label_column: str = "label"
    """Generic tasks: the label column (class name or integer; a number for regression; the choice index)."""
    predict_file: Path | None = None
    """Also predict this file (the task's format; labels optional) with the best epoch's model."""
    predict_test: bool = False
    """Also predict the task's test split(s) (GLUE's test*.tsv in --data-dir; --dataset: its test split)."""
    epochs: int = 3
    """Passes over the training set per seed."""
    batch_size: int = 32
    """Sequences (multiple choice: examples) per micro-batch on each rank."""
    grad_accum_steps: int = 1
    """Micro-batches per optimizer step; an update sees batch_size x grad_accum_steps x ranks examples."""
    max_seq_len: int = 128
    """Tokens per encoded input (at most the model's max_position_embeddings, which caps it)."""
    long_sequences: str = "truncate"
    """Inputs longer than max_seq_len: "truncate" them (the log counts them) or "refuse" (an error naming the first)."""
    optim: OptimizerConfig = field(default_factory=lambda: OptimizerConfig(lr=2e-5, warmup_ratio=0.1))
    """The optimizer and schedule; BERT's fine-tuning recipe by default (lr 2e-5, 10% warmup)."""
    seeds: tuple[int, ...] = (42,)
    """Seeds to run, one full run each (their statistics go to results.json)."""
    deepspeed_config: dict[str, Any] | None = field(default=None, repr=False)
    """A DeepSpeed config dict; None trains in this process without DeepSpeed."""
    max_train_examples: int | None = None
    """Train on the first N training examples only (quick runs)."""
    cuda_graphs: bool = False
    """Replay training steps from CUDA graphs (classification tasks, one GPU; see fastbert.train.engines.graphed)."""
    compile: bool = False
    """torch.compile the model (one process, no DeepSpeed, no cuda_graphs)."""
    log_every: int = 50
    """Log training metrics every N optimizer steps."""
    overwrite: bool = False
    """Replace an earlier run in --out (its results.json, models and metrics); without it such an --out is refused."""
    report_to: str = "jsonl"
    """Where metrics go besides metrics.jsonl (always written): comma-separated tensorboard, wandb,
    mlflow (optional extras; see fastbert.train.trackers). Training metrics every log_every steps,
    dev metrics every epoch."""
    command: list[str] = field(default_factory=list)
    """The command line that started the run, recorded in results.json."""

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "grad_accum_steps", "log_every"):
            check_setting(f"--{name.replace('_', '-')}", getattr(self, name), "an integer >= 1", lambda v: v >= 1)
        check_setting("--max-seq-len", self.max_seq_len, f"an integer >= {MIN_SEQ_LEN}", lambda v: v >= MIN_SEQ_LEN)
        check_setting("--max-train-examples", self.max_train_examples, "an integer >= 1 or absent (all)",
                      lambda v: v is None or v >= 1)
        check_setting("--long-sequences", self.long_sequences, " or ".join(LONG_SEQUENCE_POLICIES), lambda v: v in LONG_SEQUENCE_POLICIES)
        if not self.seeds:
            raise UserError("no seeds given")
        for seed in self.seeds:
            check_setting("--seeds", seed, "integers >= 0", lambda v: v >= 0)
        self._check_data_source()

    def _check_data_source(self) -> None:
        """Each task reads its data one way; say which flags belong to which before anything loads."""
        task = get_task(self.task)
        if (self.predict_file or self.predict_test) and task.layout is None and not task.custom:
            raise UserError(f"--predict-file/--predict-test write GLUE's submission format: for the GLUE and generic tasks, not {task.name}")
        custom_flags = ("train_file", "validation_file", "dataset", "text_columns")
        if not task.custom:
            given = [f"--{_flag(name)}" for name in custom_flags if getattr(self, name)]
            if given:
                raise UserError(f"{', '.join(given)}: for the classification, regression and multiple-choice tasks; "
                                f"--task {task.name} reads --data-dir")
            if self.data_dir is None:
                raise UserError(f"--task {task.name} needs --data-dir (the folder `fastbert data download` writes)")
            return
        if self.data_dir is not None:
            raise UserError(f"--data-dir is for the named tasks; --task {task.name} reads --train-file/--validation-file or --dataset")
        if self.dataset is not None and (self.train_file or self.validation_file):
            raise UserError("give either --dataset or --train-file/--validation-file, not both")
        if self.dataset is None and not (self.train_file and self.validation_file):
            raise UserError(f"--task {task.name} needs --train-file and --validation-file (or --dataset)")
        if self.predict_test and self.dataset is None:
            raise UserError("--predict-test predicts a dataset's test split; for files use --predict-file")
        if task.kind == MULTIPLE_CHOICE:
            if len(self.text_columns) < 3:
                raise UserError("--text-columns for multiple-choice: the context column, then two or more choice columns")
        elif len(self.text_columns) not in (1, 2):
            raise UserError(f"--text-columns for {task.name}: one or two text columns, got {len(self.text_columns)}")


def _flag(name: str) -> str:
    return name.replace("_", "-")
