"""fastbert: fast BERT pretraining and fine-tuning with HuggingFace-compatible checkpoints."""

__version__ = "0.1.0"

from .model import (  # noqa: E402
    BertConfig,
    BertForMultipleChoice,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertModel,
)

__all__ = [
    "BertConfig",
    "BertModel",
    "BertForPreTraining",
    "BertForSequenceClassification",
    "BertForQuestionAnswering",
    "BertForMultipleChoice",
    "__version__",
]
