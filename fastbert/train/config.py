"""Typed training settings: the optimizer shared by every run, what engines need, and ``PretrainConfig``.

Nothing here imports torch, so the CLI can parse and validate every setting before the
heavy imports start.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import InputError, UserError

OPTIMIZERS = ("adamw", "lamb")


def check_setting(name: str, value: Any, allowed: str, ok: Callable[[Any], bool]) -> None:
    """A one-line error naming the setting, its value and what is allowed, unless ``ok(value)``
    (write ``ok`` so that NaN fails it: every comparison with NaN is false)."""
    if not ok(value):
        raise UserError(f"{name} must be {allowed}, got {value!r}")


def at_least(low: float) -> Callable[[Any], bool]:
    return lambda value: math.isfinite(value) and value >= low


def positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


def fraction_below_one(value: float) -> bool:
    return 0 <= value < 1


@dataclass
class OptimizerConfig:
    """The optimizer and its schedule, shared by pretraining and fine-tuning."""

    optimizer: str = "adamw"
    """"adamw" (torch, fused on CUDA and CPU) or "lamb" (fastbert.train.lamb)."""
    lr: float = 1e-4
    """Peak learning rate, reached at the end of warmup."""
    weight_decay: float = 0.01
    """Decoupled weight decay on matrices (never on biases or LayerNorm weights)."""
    beta1: float = 0.9
    """Adam/LAMB first-moment decay."""
    beta2: float = 0.999
    """Adam/LAMB second-moment decay."""
    eps: float = 1e-6
    """Adam/LAMB denominator epsilon."""
    warmup_steps: int | None = None
    """Steps of linear warmup; None means warmup_ratio × the run's optimizer steps."""
    warmup_ratio: float = 0.01
    """Fraction of the run's optimizer steps spent warming up when warmup_steps is None."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value (0 disables clipping)."""

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"optimizer {self.optimizer!r} is unknown; expected one of {', '.join(OPTIMIZERS)}")
        check_setting("lr", self.lr, "a finite number > 0", positive)
        check_setting("weight_decay", self.weight_decay, "a finite number >= 0", at_least(0))
        check_setting("beta1", self.beta1, "in [0, 1)", fraction_below_one)
        check_setting("beta2", self.beta2, "in [0, 1)", fraction_below_one)
        check_setting("eps", self.eps, "a finite number > 0", positive)
        check_setting("warmup_steps", self.warmup_steps, "an integer >= 0 or null (use warmup_ratio)", lambda v: v is None or v >= 0)
        check_setting("warmup_ratio", self.warmup_ratio, "in [0, 1]", lambda v: 0 <= v <= 1)
        check_setting("grad_clip", self.grad_clip, "a finite number >= 0 (0 disables clipping)", at_least(0))

    @property
    def betas(self) -> tuple[float, float]:
        return (self.beta1, self.beta2)

    def warmup_for(self, total_steps: int) -> int:
        return self.warmup_steps if self.warmup_steps is not None else round(self.warmup_ratio * total_steps)


OPTIMIZER_SETTINGS = tuple(f.name for f in dataclasses.fields(OptimizerConfig))


@dataclass
class EngineConfig:
    """What every engine needs: the optimizer, the step's shape, precision and distribution."""

    optim: OptimizerConfig = field(default_factory=OptimizerConfig)
    """The optimizer and its learning-rate schedule."""
    total_steps: int = 1000
    """Optimizer steps of the whole run; the learning rate decays linearly to 0 there."""
    grad_accum_steps: int = 1
    """Micro-batches per optimizer step on each rank."""
    micro_batch_size: int = 8
    """Sequences per micro-batch on each rank."""
    bf16: bool | None = None
    """bf16 autocast (local) / bf16 training (DeepSpeed); None means on CUDA only."""
    deepspeed_config: dict[str, Any] | None = field(default=None, repr=False)
    """A DeepSpeed config dict; None trains in this process without DeepSpeed."""
    seed: int = 0
    """Seed for parameter init and dropout (set before the model is built)."""
    cuda_graphs: bool = False
    """Replay each micro-batch's step (forward, backward and, closing a window, the update) from a
    CUDA graph (local engine on CUDA; see fastbert.train.engines.graphed). Batches are padded to
    micro_batch_size x static_seq_len."""
    static_seq_len: int | None = None
    """Row length of CUDA-graph batches; None: the longest sequence rounded up to 64."""
    compile: bool = False
    """torch.compile the model's forward (and so its backward) in the local engine; shapes are
    dynamic, so varying batch lengths do not recompile."""

    def __post_init__(self) -> None:
        for name in ("total_steps", "grad_accum_steps", "micro_batch_size"):
            check_setting(name, getattr(self, name), "an integer >= 1", lambda v: v >= 1)
        if self.cuda_graphs and self.deepspeed_config is not None:
            raise UserError("cuda_graphs works with the local engine only; DeepSpeed runs its own step")
        if self.compile and (self.deepspeed_config is not None or self.cuda_graphs):
            raise UserError("compile works with the local engine without cuda_graphs; under DeepSpeed use its "
                            "own \"compile\" config section")

    @property
    def warmup_steps(self) -> int:
        return self.optim.warmup_for(self.total_steps)

    def use_bf16(self, device_type: str) -> bool:
        return device_type == "cuda" if self.bf16 is None else self.bf16


@dataclass(frozen=True)
class CheckpointPolicy:
    """Which checkpoints carry an HF export and which are kept (the final model is always exported)."""

    keep_last: int = 3
    """Keep the newest N complete checkpoints, deleting older ones once a new one is complete (0 keeps all)."""
    keep_every: int = 0
    """Also keep every checkpoint whose step is a multiple of M, whatever keep_last says (0: none)."""
    hf_every: int = 0
    """Add an HF export to checkpoints whose step is a multiple of N (0: only the final checkpoint)."""

    def __post_init__(self) -> None:
        for name in ("keep_last", "keep_every", "hf_every"):
            check_setting(name, getattr(self, name), "an integer >= 0", lambda v: v >= 0)

    def exports_hf(self, step: int) -> bool:
        return self.hf_every > 0 and step % self.hf_every == 0

    def keeps(self, step: int) -> bool:
        """Whether keep_every protects the checkpoint of ``step`` from deletion."""
        return self.keep_every > 0 and step % self.keep_every == 0


def read_deepspeed_config(path: str | os.PathLike | None) -> dict[str, Any] | None:
    """The DeepSpeed JSON config at ``path`` (None for none); whether to default one is the engine's call."""
    if path is None:
        return None
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such DeepSpeed config file")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(path, f"not valid JSON ({err.msg})", line=err.lineno) from None
    if not isinstance(config, dict):
        raise InputError(path, "expected a JSON object")
    return config


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
    optim: OptimizerConfig = field(default_factory=OptimizerConfig)
    """The optimizer and schedule; YAML and --set take its settings flat (lr: 1e-4) or as an optim mapping."""
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
    keep_last: int = CheckpointPolicy.keep_last
    """Keep the newest N complete checkpoints, deleting older ones once a new one is complete (0 keeps all)."""
    keep_every: int = CheckpointPolicy.keep_every
    """Also keep every checkpoint whose step is a multiple of M (0: none)."""
    hf_every: int = CheckpointPolicy.hf_every
    """Add an HF export to checkpoints whose step is a multiple of N (0: only the final model)."""
    max_minutes: float | None = None
    """Stop with a checkpoint after this much wall time (null: no limit)."""
    num_workers: int = 2
    """DataLoader worker processes per rank (0 collates in the training process)."""
    cuda_graphs: bool = False
    """Replay each step (forward, backward, update) from CUDA graphs (one GPU, no DeepSpeed): batches
    are padded to batch_size x the data's max_seq_len, removing the per-kernel launch cost."""
    compile: bool = False
    """torch.compile the model (one process, no DeepSpeed, no cuda_graphs)."""
    eval_data: str | None = None
    """Held-out pairs to evaluate on: a `fastbert data prepare` directory of documents kept out of
    training, prepared with the same tokenizer (its validation split if it has one); None: the
    training data's own validation split when it has one, else no held-out evaluation."""
    eval_every: int = 0
    """Evaluate on eval_data every N steps, and at the end (0: only at the end)."""
    eval_pairs: int | None = 2048
    """Evaluate on at most this many pairs of eval_data, spread evenly over it (None: all)."""
    report_to: str = "jsonl"
    """Where metrics go besides OUT/metrics.jsonl (always written): comma-separated tensorboard,
    wandb, mlflow (each an optional extra, e.g. pip install 'fastbert[tensorboard]')."""

    def settings(self) -> dict[str, Any]:
        """Every setting as plain YAML-able values; ``load`` of them gives this config back."""
        return dataclasses.asdict(self)

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "grad_accum_steps", "log_every"):
            check_setting(name, getattr(self, name), "an integer >= 1", lambda v: v >= 1)
        for name in ("save_every", "num_workers", "seed"):
            check_setting(name, getattr(self, name), "an integer >= 0", lambda v: v >= 0)
        check_setting("eval_every", self.eval_every, "an integer >= 0 (0: evaluate only at the end)", lambda v: v >= 0)
        check_setting("eval_pairs", self.eval_pairs, "an integer >= 1, or null for all", lambda v: v is None or v >= 1)
        check_setting("mlm_probability", self.mlm_probability, "in (0, 1)", lambda v: 0 < v < 1)
        check_setting("max_minutes", self.max_minutes, "a finite number > 0 or null (no limit)", lambda v: v is None or positive(v))
        self.checkpoint_policy()

    def checkpoint_policy(self) -> "CheckpointPolicy":
        return CheckpointPolicy(self.keep_last, self.keep_every, self.hf_every)

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
        """A copy with ``values`` applied, each checked against the field's type.

        Optimizer settings may be flat (``lr: 1e-4``, as the YAML files write them) or an
        ``optim`` mapping; flat ones win where both are given.
        """
        values = dict(values)
        nested = values.pop("optim", {})
        if not isinstance(nested, dict):
            raise UserError(f"{source}: setting 'optim' is {nested!r}; expected a mapping of optimizer settings")
        flat = {name: values.pop(name) for name in OPTIMIZER_SETTINGS if name in values}
        optim = _checked(OptimizerConfig, nested, source, prefix="optim.") | _checked(OptimizerConfig, flat, source)
        changes = _checked(PretrainConfig, values, source, also_valid=OPTIMIZER_SETTINGS)
        return dataclasses.replace(self, **changes, optim=dataclasses.replace(self.optim, **optim))

    def engine_config(self, deepspeed_config: dict[str, Any] | None, static_seq_len: int | None = None) -> EngineConfig:
        return EngineConfig(
            optim=self.optim, total_steps=self.max_steps, grad_accum_steps=self.grad_accum_steps,
            micro_batch_size=self.batch_size, bf16=self.bf16, deepspeed_config=deepspeed_config, seed=self.seed,
            cuda_graphs=self.cuda_graphs, static_seq_len=static_seq_len, compile=self.compile,
        )


def _checked(cls: type, values: dict[str, Any], source: str, prefix: str = "", also_valid: tuple[str, ...] = ()) -> dict[str, Any]:
    """``values`` type-checked against the fields of ``cls``; an unknown name gets the list of valid ones."""
    hints = typing.get_type_hints(cls)
    checked = {}
    for key, value in values.items():
        if key not in hints:
            valid = ", ".join(prefix + name for name in [*hints, *also_valid])
            raise UserError(f"{source}: unknown setting {prefix + str(key)!r}; expected one of {valid}")
        checked[key] = _coerce(value, hints[key], f"{source}: setting {prefix + key!r}")
    return checked


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
