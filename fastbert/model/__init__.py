"""BERT encoder and heads; checkpoints interchangeable with transformers."""

from .attention import varlen_attention
from .backends import Backends
from .config import PRESETS, BertConfig
from .encoder import BertModel, BertPreTrainedModel, EncoderOutput
from .heads import (
    BertForMultipleChoice,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    ClassifierOutput,
    PreTrainingOutput,
    QuestionAnsweringOutput,
)
from .inputs import IGNORE_INDEX, Batch, BertInputs
from .layout import SequenceLayout

__all__ = [
    "Backends",
    "Batch",
    "BertInputs",
    "IGNORE_INDEX",
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
