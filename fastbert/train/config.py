"""``PretrainConfig``: the typed training settings behind ``configs/pretrain/*.yaml``."""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import InputError, UserError
from .engine import EngineConfig


@dataclass
class PretrainConfig:
    """Model shape and training hyperparameters of a pretraining run (CLI flags override YAML)."""

    model: str = "base"
    """Model preset: tiny, mini, small, base or large (fastbert.model.PRESETS)."""
    model_overrides: dict[str, Any] = field(default_factory=dict)
    """BertConfig fields to change on top of the preset, e.g. {hidden_dropout_prob: 0.0}."""
    init_from: str | None = None
    """An HF BERT directory to start from instead of random weights (continued pretraining)."""
    max_steps: int = 1000
    """Optimizer steps; the learning rate reaches 0 there."""
    batch_size: int = 32
    """Sequences per micro-batch on each rank."""
    grad_accum_steps: int = 1
    """Micro-batches per optimizer step; global batch = batch_size × grad_accum_steps × ranks."""
    optimizer: str = "adamw"
    """"adamw" or "lamb"."""
    lr: float = 1e-4
    """Peak learning rate."""
    weight_decay: float = 0.01
    """Decoupled weight decay (not on biases or LayerNorm weights)."""
    beta1: float = 0.9
    """First-moment decay."""
    beta2: float = 0.999
    """Second-moment decay."""
    eps: float = 1e-6
    """Optimizer epsilon."""
    warmup_steps: int | None = None
    """Linear warmup steps; None means warmup_ratio × max_steps."""
    warmup_ratio: float = 0.01
    """Warmup fraction when warmup_steps is None."""
    grad_clip: float = 1.0
    """Global gradient-norm clip (0 disables)."""
    mlm_probability: float = 0.15
    """Fraction of tokens chosen for masked-LM prediction."""
    bf16: bool | None = None
    """bf16 mixed precision; None means on CUDA only."""
    seed: int = 1234
    """Seed of the init, the data order, the masks and dropout."""
    log_every: int = 10
    """Log metrics every N steps."""
    save_every: int = 0
    """Checkpoint every N steps (0: only at the end)."""
    max_minutes: float | None = None
    """Stop with a checkpoint after this much wall time."""
    num_workers: int = 2
    """DataLoader worker processes per rank (0 collates in the training process)."""
    cuda_graphs: bool = False
    """Replay forward + backward from CUDA graphs (one GPU, no DeepSpeed): batches are padded
    to batch_size x the data's max_seq_len, removing the per-kernel launch cost."""

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PretrainConfig":
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: no such config file")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            line = err.problem_mark.line + 1 if getattr(err, "problem_mark", None) else None
            raise InputError(path, f"not valid YAML ({getattr(err, 'problem', err)})", line=line) from None
        if not isinstance(data, dict):
            raise InputError(path, "expected a mapping of setting: value")
        return cls().updated(data, source=str(path))

    def updated(self, values: dict[str, Any], source: str) -> "PretrainConfig":
        """A copy with ``values`` applied, each checked against the field's type."""
        hints = typing.get_type_hints(PretrainConfig)
        names = [f.name for f in dataclasses.fields(self)]
        changes = {}
        for key, value in values.items():
            if key not in hints:
                raise UserError(f"{source}: unknown setting {key!r}; expected one of {', '.join(names)}")
            changes[key] = _coerce(value, hints[key], f"{source}: setting {key!r}")
        return dataclasses.replace(self, **changes)

    def engine_config(self, deepspeed_config: dict[str, Any] | None) -> EngineConfig:
        return EngineConfig(
            lr=self.lr, weight_decay=self.weight_decay, betas=(self.beta1, self.beta2), eps=self.eps,
            optimizer=self.optimizer, total_steps=self.max_steps, warmup_steps=self.warmup_steps,
            warmup_ratio=self.warmup_ratio, grad_clip=self.grad_clip, grad_accum_steps=self.grad_accum_steps,
            micro_batch_size=self.batch_size, bf16=self.bf16, deepspeed_config=deepspeed_config, seed=self.seed,
            cuda_graphs=self.cuda_graphs,
        )


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against a field type; numbers written as strings ("1e-4", which YAML 1.1 reads as text) are parsed."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None and type(None) in options:
        return None
    for option in options:
        base = typing.get_origin(option) or option
        if base is bool and isinstance(value, bool):
            return value
        if base is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if base is float and isinstance(value, (int, float, str)) and not isinstance(value, bool):
            try:
                return float(value)
            except ValueError:
                continue
        if base in (str, dict) and isinstance(value, base):
            return value
    expected = " or ".join("null" if o is type(None) else getattr(typing.get_origin(o) or o, "__name__", str(o)) for o in options)
    raise UserError(f"{where} is {value!r}; expected {expected}")
