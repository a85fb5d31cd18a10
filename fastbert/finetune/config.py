"""``FinetuneConfig``: the typed settings of a fine-tuning run, behind the ``fastbert finetune`` flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..train.config import OptimizerConfig, check_setting

LONG_SEQUENCE_POLICIES = ("truncate", "refuse")
MIN_SEQ_LEN = 8
"""[CLS], two [SEP] and room for text on both sides of a pair (or a question and a window of context)."""


@dataclass
class FinetuneConfig:
    """One fine-tuning run (all seeds)."""

    task: str
    """The task (fastbert.finetune.tasks.TASKS)."""
    data_dir: Path
    """Folder holding the task's files (as `fastbert data download` lays them out)."""
    init: Path
    """HF BERT directory (or fastbert export) with model weights and tokenizer."""
    out: Path
    """Output folder: results.json and the best epoch's model (per seed when there are several)."""
    epochs: int = 3
    """Passes over the training set per seed."""
    batch_size: int = 32
    """Sequences (multiple choice: examples) per micro-batch on each rank."""
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
    command: list[str] = field(default_factory=list)
    """The command line that started the run, recorded in results.json."""

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "log_every"):
            check_setting(f"--{name.replace('_', '-')}", getattr(self, name), "an integer >= 1", lambda v: v >= 1)
        check_setting("--max-seq-len", self.max_seq_len, f"an integer >= {MIN_SEQ_LEN}", lambda v: v >= MIN_SEQ_LEN)
        check_setting("--max-train-examples", self.max_train_examples, "an integer >= 1 or absent (all)",
                      lambda v: v is None or v >= 1)
        check_setting("--long-sequences", self.long_sequences, " or ".join(LONG_SEQUENCE_POLICIES), lambda v: v in LONG_SEQUENCE_POLICIES)
        if not self.seeds:
            raise UserError("no seeds given")
        for seed in self.seeds:
            check_setting("--seeds", seed, "integers >= 0", lambda v: v >= 0)
