"""BERT encoder and heads; checkpoints interchangeable with transformers."""

from .attention import varlen_attention
from .bert import (
    BertForMultipleChoice,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertModel,
    BertPreTrainedModel,
    ClassifierOutput,
    EncoderOutput,
    PreTrainingOutput,
    QuestionAnsweringOutput,
)
from .config import PRESETS, BertConfig
from .layout import SequenceLayout

__all__ = [
    "BertConfig",
    "PRESETS",
    "BertModel",
    "BertPreTrainedModel",
    "BertForPreTraining",
    "BertForSequenceClassification",
    "BertForQuestionAnswering",
    "BertForMultipleChoice",
    "EncoderOutput",
    "PreTrainingOutput",
    "ClassifierOutput",
    "QuestionAnsweringOutput",
    "SequenceLayout",
    "varlen_attention",
]
