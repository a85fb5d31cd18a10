"""BERT's configuration, with transformers' field names so config.json files interoperate."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError

SUPPORTED_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh")
RUN_TIME_KEYS = ("kernel_backend", "attention_backend")
"""Backend choices that fastbert once wrote into config.json; they belong to a run
(fastbert.model.Backends), so loading drops them."""


@dataclass
class BertConfig:
    """A BERT encoder's shape and regularisation; field names and defaults follow transformers.

    Only what the weights mean lives here: which kernels run is chosen at run time
    (:class:`fastbert.model.Backends`) and never saved.
    """

    vocab_size: int = 30522
    """Rows of the word-embedding table (and columns of the MLM decoder)."""
    hidden_size: int = 768
    """Width of every token's hidden state."""
    num_hidden_layers: int = 12
    """Transformer layers in the encoder."""
    num_attention_heads: int = 12
    """Attention heads per layer; must divide hidden_size."""
    intermediate_size: int = 3072
    """Width of the feed-forward block's inner layer."""
    hidden_act: str = "gelu"
    """Feed-forward activation: "gelu" (exact erf, BERT's) or "gelu_new"/"gelu_pytorch_tanh" (tanh form)."""
    hidden_dropout_prob: float = 0.1
    """Dropout on embeddings and on the attention and FFN outputs."""
    attention_probs_dropout_prob: float = 0.1
    """Dropout on attention probabilities."""
    max_position_embeddings: int = 512
    """Longest sequence the position table covers."""
    type_vocab_size: int = 2
    """Segment (token type) ids: 0 for [CLS] A [SEP], 1 for B [SEP]."""
    initializer_range: float = 0.02
    """Std of the normal initialisation of weights."""
    layer_norm_eps: float = 1e-12
    """LayerNorm epsilon."""
    pad_token_id: int = 0
    """Id of [PAD]."""
    num_labels: int = 2
    """Outputs of a sequence-classification head (1 means regression)."""
    problem_type: str | None = None
    """"regression", "single_label_classification" or "multi_label_classification"; inferred when None."""
    classifier_dropout: float | None = None
    """Dropout before the classifier; hidden_dropout_prob when None."""
    extra: dict[str, Any] = field(default_factory=dict, repr=False)
    """Fields of a config.json this class does not model, kept so that a save round-trips them."""

    def __post_init__(self) -> None:
        for name in _POSITIVE_INTEGERS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"{name} must be an integer >= 1, got {value!r}")
        for name in _PROBABILITIES:
            value = getattr(self, name)
            if not (value is None and name == "classifier_dropout") and not (_is_number(value) and 0 <= value < 1):
                raise UserError(f"{name} must be a probability in [0, 1), got {value!r}")
        for name in ("layer_norm_eps", "initializer_range"):
            if not (_is_number(getattr(self, name)) and 0 < getattr(self, name) < float("inf")):
                raise UserError(f"{name} must be a finite number > 0, got {getattr(self, name)!r}")
        if self.hidden_size % self.num_attention_heads:
            raise UserError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_attention_heads}"
            )
        if self.hidden_act not in SUPPORTED_ACTIVATIONS:
            raise UserError(
                f"hidden_act {self.hidden_act!r} is not supported; expected one of {', '.join(SUPPORTED_ACTIVATIONS)}"
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def gelu_approximate(self) -> str:
        return "none" if self.hidden_act == "gelu" else "tanh"

    # ---- presets -----------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "BertConfig":
        """A named size: tiny, mini, small, base or large (BERT's published shapes)."""
        try:
            shape = PRESETS[name]
        except KeyError:
            raise UserError(f"unknown model preset {name!r}; expected one of {', '.join(PRESETS)}") from None
        _check_field_names(overrides)
        return cls(**{**shape, **overrides})

    # ---- config.json -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**self.extra, **data, "model_type": "bert"}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BertConfig":
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known and k not in ("model_type", *RUN_TIME_KEYS)}
        if "id2label" in data and "num_labels" not in data:
            kwargs["num_labels"] = len(data["id2label"])
        return cls(**kwargs, extra=extra)

    def save(self, path: str | os.PathLike, architectures: list[str] | None = None) -> None:
        data = self.to_dict()
        if architectures:
            data["architectures"] = architectures
        Path(path).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, **overrides: Any) -> "BertConfig":
        """The config of an HF BERT directory (or its config.json), with fields overridden, as transformers spells it."""
        config = cls.load(directory)
        if "num_labels" in overrides and overrides["num_labels"] != config.num_labels:
            for stale in ("id2label", "label2id"):  # describe the old head's labels
                config.extra.pop(stale, None)
        _check_field_names(overrides)
        for name, value in overrides.items():
            setattr(config, name, value)
        config.__post_init__()
        return config

    @classmethod
    def load(cls, path: str | os.PathLike) -> "BertConfig":
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise UserError(f"{path}: no such config file")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UserError(f"{path}: not a valid JSON config ({err})") from None
        if data.get("model_type", "bert") != "bert":
            raise UserError(f"{path}: model_type {data['model_type']!r} is not a BERT model")
        try:
            return cls.from_dict(data)
        except UserError as err:
            raise UserError(f"{path}: {err}") from None
        except TypeError as err:
            raise UserError(f"{path}: bad config field ({err})") from None


PRESETS: dict[str, dict[str, int]] = {
    # Shapes from Turc et al. (2019) "Well-Read Students Learn Better" and the original BERT.
    "tiny": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512),
    "mini": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
    "small": dict(hidden_size=512, num_hidden_layers=4, num_attention_heads=8, intermediate_size=2048),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
}


_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(BertConfig)) - {"extra"}
_POSITIVE_INTEGERS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                      "max_position_embeddings", "type_vocab_size", "num_labels")
_PROBABILITIES = ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_field_names(overrides: dict[str, Any]) -> None:
    """Overrides (model_overrides, from_pretrained keywords) must name BertConfig fields."""
    for name in overrides:
        if name not in _FIELD_NAMES:
            raise UserError(f"unknown config field {name!r}; BertConfig's fields (what model_overrides takes) are "
                            + ", ".join(sorted(_FIELD_NAMES)))
