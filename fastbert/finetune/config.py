"""``FinetuneConfig``: the typed settings of a fine-tuning run, behind the ``fastbert finetune`` flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..train.config import OptimizerConfig


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
    """Tokens per encoded input; longer inputs are truncated."""
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
    report_to: str = "jsonl"
    """Where metrics go besides metrics.jsonl (always written): comma-separated tensorboard, wandb,
    mlflow (optional extras; see fastbert.train.trackers). Training metrics every log_every steps,
    dev metrics every epoch."""
    command: list[str] = field(default_factory=list)
    """The command line that started the run, recorded in results.json."""

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "max_seq_len", "log_every"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not self.seeds:
            raise UserError("no seeds given")
