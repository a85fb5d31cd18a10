"""The task heads on BERT's encoder: pretraining (MLM + NSP) and fine-tuning.

Every head's ``forward`` takes :class:`~fastbert.model.inputs.BertInputs` (or transformers'
padded tensors, through the same thin adapter as :class:`~fastbert.model.encoder.BertModel`)
plus the targets its loss needs, and computes the loss inside ``forward`` (ZeRO-3 gathers
parameters around a module's own forward only; the tied MLM decoder depends on that).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from .backends import Backends
from .config import BertConfig
from .encoder import BertModel, BertPreTrainedModel, FusedOwnerMixin
from .inputs import BertInputs
from .layout import rows_at


# ---------------------------------------------------------------------------------------------
# Pretraining: MLM (tied decoder, masked positions only) + NSP (on [CLS] only)
# ---------------------------------------------------------------------------------------------
class BertPredictionHeadTransform(FusedOwnerMixin, nn.Module):
    def __init__(self, config: BertConfig, backends: Backends):
        super().__init__()
        self.config, self.backends = config, backends
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(
        self, hidden: torch.Tensor, grad_sums: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)
    ) -> torch.Tensor:
        """``grad_sums``: the GELU's and the LayerNorm's slices of the forward's block (see
        :meth:`~fastbert.model.encoder.GradSums.mlm_transform`)."""
        ops = self.backends.ops(hidden.device)
        hidden = ops.bias_gelu(F.linear(hidden, self.dense.weight), self.dense.bias, self.config.gelu_approximate, grad_sums[0])
        return ops.layer_norm(hidden, self.LayerNorm.weight, self.LayerNorm.bias, self.config.layer_norm_eps, grad_sums=grad_sums[1])


class BertLMPredictionHead(nn.Module):
    """transform → decoder; the decoder's weight is the word-embedding table (tied)."""

    def __init__(self, config: BertConfig, backends: Backends):
        super().__init__()
        self.transform = BertPredictionHeadTransform(config, backends)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def init_own_parameters(self) -> None:
        nn.init.zeros_(self.bias)

    def forward(
        self, hidden: torch.Tensor, decoder_weight: torch.Tensor,
        grad_sums: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None),
    ) -> torch.Tensor:
        return F.linear(self.transform(hidden, grad_sums), decoder_weight, self.bias)


class BertPreTrainingHeads(nn.Module):
    def __init__(self, config: BertConfig, backends: Backends):
        super().__init__()
        self.predictions = BertLMPredictionHead(config, backends)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)


@dataclass
class PreTrainingOutput:
    loss: torch.Tensor | None = None
    """MLM + NSP (transformers' definition) when labels are given."""
    mlm_loss: torch.Tensor | None = None
    nsp_loss: torch.Tensor | None = None
    prediction_logits: torch.Tensor | None = None
    """Without labels only: [B, T, V] (padded input) or [N, V] (flat)."""
    seq_relationship_logits: torch.Tensor | None = None
    """[B or S, 2]."""
    masked_lm_logits: torch.Tensor | None = None
    """With labels: [M, V] for the M masked positions (the head runs only there)."""
    masked_lm_labels: torch.Tensor | None = None
    """With labels: [M]."""


class BertForPreTraining(BertPreTrainedModel):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.cls = BertPreTrainingHeads(config, self.bert.backends)
        self.post_init()

    def external_parameter_uses(self) -> Iterator[tuple[nn.Module, nn.Parameter]]:
        yield from super().external_parameter_uses()
        # The decoder reads the word-embedding table inside this module's forward.
        yield self, self.bert.embeddings.word_embeddings.weight

    def sparse_embedding_gradients(self) -> list[nn.Parameter]:
        # The tied decoder gives the table a dense gradient anyway: sparse rows would save nothing.
        return []

    def forward(
        self,
        input_ids: torch.Tensor | BertInputs,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        *,
        labels: torch.Tensor | None = None,
        next_sentence_label: torch.Tensor | None = None,
    ) -> PreTrainingOutput:
        """With inputs whose padding is kept and a ``masked_capacity`` every shape is static
        (:meth:`BertInputs.from_padded`): the MLM head then runs on exactly that many rows,
        the masked ones first, padded with ignored ones; there must not be more."""
        inputs = BertInputs.of(input_ids, attention_mask, token_type_ids, position_ids)
        # One gradient-sums block for the encoder and the MLM transform: one zero-fill launch.
        grad_sums = self.bert.grad_sums(inputs.input_ids.device)
        hidden = self.bert.encode(inputs, grad_sums=grad_sums)
        decoder_weight = self.bert.embeddings.word_embeddings.weight
        if labels is None:
            cls_hidden = hidden[inputs.layout.first_token_index]
        else:
            flat_labels = inputs.per_token(labels)
            masked = inputs.masked_positions(flat_labels)
            # The two heads' rows in one gather node: their gradients share one buffer.
            cls_hidden, masked_hidden = rows_at(hidden, inputs.layout.first_token_index, masked)
        nsp_logits = self.cls.seq_relationship(self.bert.pooler(cls_hidden))
        out = PreTrainingOutput(seq_relationship_logits=nsp_logits)

        if labels is None:
            out.prediction_logits = inputs.to_caller(self.cls.predictions(hidden, decoder_weight, grad_sums.mlm_transform()))
        else:
            out.masked_lm_labels = flat_labels[masked]
            out.masked_lm_logits = self.cls.predictions(masked_hidden, decoder_weight, grad_sums.mlm_transform())
            # Sum over masked tokens / count, as transformers' mean over non-ignored labels.
            out.mlm_loss = F.cross_entropy(out.masked_lm_logits.float(), out.masked_lm_labels)
            out.loss = out.mlm_loss
        if next_sentence_label is not None:
            out.nsp_loss = F.cross_entropy(nsp_logits.float(), next_sentence_label.view(-1))
            out.loss = out.nsp_loss if out.loss is None else out.loss + out.nsp_loss
        return out


# ---------------------------------------------------------------------------------------------
# Fine-tuning heads
# ---------------------------------------------------------------------------------------------
@dataclass
class ClassifierOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor


def _classifier_dropout(config: BertConfig) -> nn.Dropout:
    p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
    return nn.Dropout(p)


class BertForSequenceClassification(BertPreTrainedModel):
    """Pooled [CLS] → dropout → linear; cross-entropy, or MSE when ``num_labels == 1`` (regression)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.num_labels = config.num_labels
        self.bert = BertModel(config)
        self.dropout = _classifier_dropout(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | BertInputs,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        *,
        labels: torch.Tensor | None = None,
    ) -> ClassifierOutput:
        # Only the pooled [CLS] rows reach the logits: the last layer runs on them alone (as the
        # MLM head runs on masked tokens only), about a sixth of MiniLM's encoder work on short rows.
        pooled = self.bert.pooled(BertInputs.of(input_ids, attention_mask, token_type_ids, position_ids))
        logits = self.classifier(self.dropout(pooled))
        loss = None if labels is None else self._loss(logits, labels)
        return ClassifierOutput(loss, logits)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        problem = self.config.problem_type
        if problem is None:
            if self.num_labels == 1:
                problem = "regression"
            elif labels.dtype in (torch.long, torch.int):
                problem = "single_label_classification"
            else:
                problem = "multi_label_classification"
        if problem == "regression":
            return F.mse_loss(logits.float().view(-1), labels.float().view(-1))
        if problem == "single_label_classification":
            return F.cross_entropy(logits.float().view(-1, self.num_labels), labels.view(-1))
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


@dataclass
class QuestionAnsweringOutput:
    loss: torch.Tensor | None
    start_logits: torch.Tensor
    """[B, T] (padded input) or [N] (flat); padding gets the dtype's lowest value."""
    end_logits: torch.Tensor


class BertForQuestionAnswering(BertPreTrainedModel):
    """Span extraction: per-token start/end logits. Positions are token indices within each sequence."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | BertInputs,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        *,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
    ) -> QuestionAnsweringOutput:
        inputs = BertInputs.of(input_ids, attention_mask, token_type_ids, position_ids)
        logits = self.qa_outputs(self.bert.encode(inputs)).float()
        lowest = torch.finfo(logits.dtype).min
        start, end = (inputs.to_caller(logits[:, i], fill=lowest) for i in range(2))
        loss = None
        if start_positions is not None and end_positions is not None:
            # Per-sequence softmax over that sequence's own tokens.
            per_seq = [inputs.layout.pad(logits[:, i], fill=lowest) for i in range(2)]
            limit = per_seq[0].shape[1]
            loss = (
                F.cross_entropy(per_seq[0], start_positions.view(-1).clamp(0, limit), ignore_index=limit)
                + F.cross_entropy(per_seq[1], end_positions.view(-1).clamp(0, limit), ignore_index=limit)
            ) / 2
        return QuestionAnsweringOutput(loss, start, end)


class BertForMultipleChoice(BertPreTrainedModel):
    """Each choice is its own sequence; pooled [CLS] → linear → one score; softmax across choices.

    Padded input is ``[B, C, T]``; :class:`BertInputs` list the B*C sequences choice-major
    within each example and need ``num_choices``.
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.dropout = _classifier_dropout(config)
        self.classifier = nn.Linear(config.hidden_size, 1)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | BertInputs,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        *,
        num_choices: int | None = None,
        labels: torch.Tensor | None = None,
    ) -> ClassifierOutput:
        if not isinstance(input_ids, BertInputs):
            num_choices = input_ids.shape[1]

            def merge(t):
                return None if t is None else t.reshape(-1, t.shape[-1])

            input_ids, attention_mask, token_type_ids, position_ids = map(
                merge, (input_ids, attention_mask, token_type_ids, position_ids)
            )
        elif num_choices is None:
            raise ValueError("multiple-choice BertInputs need num_choices")
        pooled = self.bert.pooled(BertInputs.of(input_ids, attention_mask, token_type_ids, position_ids))
        logits = self.classifier(self.dropout(pooled)).view(-1, num_choices)
        loss = None if labels is None else F.cross_entropy(logits.float(), labels.view(-1))
        return ClassifierOutput(loss, logits)
