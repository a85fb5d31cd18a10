"""fastbert: fast BERT pretraining and fine-tuning with HuggingFace-compatible checkpoints."""

from __future__ import annotations

__version__ = "0.1.0"

_MODEL_EXPORTS = (
    "BertConfig",
    "BertModel",
    "BertForPreTraining",
    "BertForSequenceClassification",
    "BertForQuestionAnswering",
    "BertForMultipleChoice",
)
__all__ = [*_MODEL_EXPORTS, "__version__"]


def __getattr__(name: str):
    # Lazy: data-preparation workers and `fastbert --help` should not pay for importing torch.
    if name in _MODEL_EXPORTS:
        from . import model

        return getattr(model, name)
    raise AttributeError(f"module 'fastbert' has no attribute {name!r}")
