"""BERT, unpadded end to end, with transformers' module tree and parameter names.

Every forward accepts two input layouts:

* padded, as transformers: ``input_ids [B, T]`` with an optional ``attention_mask``;
* flat: ``input_ids [N]`` holding only real tokens, ``cu_seqlens`` int32 ``[S+1]``,
  ``max_seqlen`` (a Python int, so no device sync), ``position_ids [N]`` restarting at 0
  for each sequence and ``token_type_ids [N]``. Packed rows are just consecutive
  sequences here.

Padded input is unpadded once; embeddings, LayerNorms, linears and GELUs then run on
``[N, hidden]`` through every layer. Outputs come back in the caller's layout. The fused
ops go through :mod:`fastbert.kernels`; attention through :mod:`.attention`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from fastbert import kernels

from .attention import varlen_attention
from .checkpoint import PretrainedMixin
from .config import BertConfig
from .layout import PaddedRowsLayout, SequenceLayout, Unpadded, padded_batch_defaults, unpad_batch

IGNORE_INDEX = -100


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------
@dataclass(eq=False)
class FlatInputs:
    """The encoder's view of a batch: real tokens only, plus how to return to the caller's layout."""

    input_ids: torch.Tensor
    token_type_ids: torch.Tensor
    position_ids: torch.Tensor
    layout: SequenceLayout
    padding: Unpadded | KeptPadding | None  # None when the caller passed the flat layout
    max_position_id: int | None = None
    """A bound on ``position_ids`` known without reading them (generated positions); None
    when the caller gave them, so they are checked on the device."""

    def to_caller(self, flat: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        return flat if self.padding is None else self.padding.repad(flat, fill)

    def per_token(self, t: torch.Tensor) -> torch.Tensor:
        """Per-token tensor from the caller's layout (e.g. MLM labels) to the flat one."""
        return t if self.padding is None else self.padding.gather(t)


@dataclass(eq=False)
class KeptPadding:
    """The caller's ``[B, T]`` layout when the stream keeps its padding (:class:`PaddedRowsLayout`)."""

    layout: PaddedRowsLayout

    def repad(self, flat: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        return self.layout.pad(flat, fill)

    def gather(self, padded: torch.Tensor) -> torch.Tensor:
        return padded.reshape(-1, *padded.shape[2:])


def flatten_inputs(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    token_type_ids: torch.Tensor | None,
    position_ids: torch.Tensor | None,
    cu_seqlens: torch.Tensor | None,
    max_seqlen: int | None,
    keep_padding: bool = False,
) -> FlatInputs:
    """The flat stream of a batch; ``keep_padding`` keeps padded input's padding (static shapes, no host sync)."""
    if cu_seqlens is None:
        generated_positions = position_ids is None
        if keep_padding:
            inputs = _keep_padding(input_ids, attention_mask, token_type_ids, position_ids)
        else:
            padded = unpad_batch(input_ids, attention_mask, token_type_ids, position_ids)
            inputs = FlatInputs(padded.input_ids, padded.token_type_ids, padded.position_ids, padded.layout, padded)
        inputs.max_position_id = input_ids.shape[-1] - 1 if generated_positions else None
        return inputs
    if keep_padding:
        raise ValueError("keep_padding applies to padded [batch, seq] input, not to the flat (cu_seqlens) layout")
    if input_ids.dim() != 1:
        raise ValueError(f"with cu_seqlens, input_ids must be flat [total_tokens]; got shape {tuple(input_ids.shape)}")
    if position_ids is None or max_seqlen is None:
        raise ValueError("the flat layout needs position_ids (restarting per sequence) and max_seqlen")
    if token_type_ids is None:
        token_type_ids = torch.zeros_like(input_ids)
    return FlatInputs(input_ids, token_type_ids, position_ids, SequenceLayout(cu_seqlens.to(torch.int32), int(max_seqlen)), None)


def _keep_padding(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    token_type_ids: torch.Tensor | None,
    position_ids: torch.Tensor | None,
) -> FlatInputs:
    mask, token_type_ids, position_ids = padded_batch_defaults(input_ids, attention_mask, token_type_ids, position_ids)
    layout = PaddedRowsLayout.from_mask(mask)
    flat = [t.reshape(-1) for t in (input_ids, token_type_ids, position_ids)]
    return FlatInputs(*flat, layout, KeptPadding(layout))


# ---------------------------------------------------------------------------------------------
# Encoder modules (names mirror transformers so state dicts are interchangeable)
# ---------------------------------------------------------------------------------------------
class FusedOwnerMixin:
    """Marks modules whose forward passes their children's parameters straight to fused kernels.

    Sharding schemes that gather a module's own parameters just before its forward (ZeRO-3)
    must gather these too; :meth:`BertPreTrainedModel.external_parameter_uses` lists them.
    """


class BertEmbeddings(FusedOwnerMixin, nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids, token_type_ids, position_ids) -> torch.Tensor:
        return kernels.embedding_layer_norm(
            input_ids, token_type_ids, position_ids,
            self.word_embeddings.weight, self.token_type_embeddings.weight, self.position_embeddings.weight,
            self.LayerNorm.weight, self.LayerNorm.bias, self.config.layer_norm_eps,
            self.config.hidden_dropout_prob if self.training else 0.0,
            backend=self.config.kernel_backend,
        )


class BertSelfAttention(FusedOwnerMixin, nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor, layout: SequenceLayout) -> torch.Tensor:
        # One matmul for Q, K and V: the three projections read the same input.
        weight = torch.cat([self.query.weight, self.key.weight, self.value.weight])
        bias = torch.cat([self.query.bias, self.key.bias, self.value.bias])
        qkv = F.linear(hidden, weight, bias).view(-1, 3, self.config.num_attention_heads, self.config.head_dim)
        dropout_p = self.config.attention_probs_dropout_prob if self.training else 0.0
        context = varlen_attention(qkv, layout, dropout_p, self.config.attention_backend)
        return context.reshape(-1, self.config.hidden_size)


class BertResidualOutput(FusedOwnerMixin, nn.Module):
    """dense → (+bias, dropout, +residual, LayerNorm) fused: BERT's "output" block after attention and FFN."""

    def __init__(self, config: BertConfig, in_features: int):
        super().__init__()
        self.config = config
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return kernels.layer_norm(
            F.linear(x, self.dense.weight), self.LayerNorm.weight, self.LayerNorm.bias, self.config.layer_norm_eps,
            residual=residual,
            dropout_p=self.config.hidden_dropout_prob if self.training else 0.0,
            x_bias=self.dense.bias,
            backend=self.config.kernel_backend,
        )


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertResidualOutput(config, config.hidden_size)

    def forward(self, hidden: torch.Tensor, layout: SequenceLayout) -> torch.Tensor:
        return self.output(self.self(hidden, layout), hidden)


class BertIntermediate(FusedOwnerMixin, nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return kernels.bias_gelu(
            F.linear(hidden, self.dense.weight), self.dense.bias, self.config.gelu_approximate,
            backend=self.config.kernel_backend,
        )


class BertLayer(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertResidualOutput(config, config.intermediate_size)

    def forward(self, hidden: torch.Tensor, layout: SequenceLayout) -> torch.Tensor:
        attended = self.attention(hidden, layout)
        return self.output(self.intermediate(attended), attended)


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, hidden: torch.Tensor, layout: SequenceLayout) -> torch.Tensor:
        for layer in self.layer:
            hidden = layer(hidden, layout)
        return hidden


class BertPooler(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, cls_hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(cls_hidden))


# ---------------------------------------------------------------------------------------------
# Base class and the bare encoder
# ---------------------------------------------------------------------------------------------
class BertPreTrainedModel(PretrainedMixin, nn.Module):
    config: BertConfig

    def _init_weights(self, module: nn.Module) -> bool:
        """transformers' initialisation: normal(0, initializer_range) weights, zero biases, unit
        LayerNorms; whether ``module`` has parameters of its own that this covers."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, 0.0, std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, BertLMPredictionHead):
            nn.init.zeros_(module.bias)
        else:
            return False
        return True

    def post_init(self) -> None:
        self.apply(self._init_weights)

    def init_parameters(self, names: set[str]) -> None:
        for prefix, module in self.named_modules():
            own = {f"{prefix}.{n}" if prefix else n for n, _ in module.named_parameters(recurse=False)}
            if own & names:
                if not self._init_weights(module):
                    raise RuntimeError(f"no initialisation defined for {type(module).__name__} ({prefix})")
                names = names - own
        if names:
            raise RuntimeError(f"parameters without an owning module: {sorted(names)}")

    def external_parameter_uses(self) -> Iterator[tuple[nn.Module, nn.Parameter]]:
        """(module, parameter) pairs where ``module``'s forward uses a parameter it does not own directly."""
        for module in self.modules():
            if isinstance(module, FusedOwnerMixin):
                for param in module.parameters():
                    yield module, param

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        params = {id(p): p for p in self.parameters()}
        if exclude_embeddings:
            for module in self.modules():
                if isinstance(module, nn.Embedding):
                    params.pop(id(module.weight), None)
        return sum(p.numel() for p in params.values())


@dataclass
class EncoderOutput:
    last_hidden_state: torch.Tensor
    """[B, T, H] for padded input (zeros at padding), [N, H] for flat input."""
    pooler_output: torch.Tensor | None
    """tanh(dense([CLS])) per sequence: [B or S, H]."""


class BertModel(BertPreTrainedModel):
    def __init__(self, config: BertConfig, add_pooling_layer: bool = True):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.post_init()

    def encode(self, inputs: FlatInputs) -> torch.Tensor:
        """Real tokens in, ``[N, H]`` hidden states out."""
        self._check_positions(inputs)
        hidden = self.embeddings(inputs.input_ids, inputs.token_type_ids, inputs.position_ids)
        return self.encoder(hidden, inputs.layout)

    def _check_positions(self, inputs: FlatInputs) -> None:
        # An out-of-range position would read past the table (silently, in a Triton kernel).
        limit = self.config.max_position_embeddings
        if inputs.max_position_id is not None:  # generated positions: known without a device sync
            if inputs.max_position_id >= limit:
                raise ValueError(
                    f"sequence length {inputs.max_position_id + 1} > max_position_embeddings {limit}: sequence too long"
                )
        elif inputs.input_ids.numel() and int(inputs.position_ids.max()) >= limit:
            raise ValueError(
                f"position id {int(inputs.position_ids.max())} >= max_position_embeddings {limit}: sequence too long"
            )

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        *,
        cu_seqlens: torch.Tensor | None = None,
        max_seqlen: int | None = None,
        keep_padding: bool = False,
    ) -> EncoderOutput:
        inputs = flatten_inputs(input_ids, attention_mask, token_type_ids, position_ids, cu_seqlens, max_seqlen, keep_padding)
        hidden = self.encode(inputs)
        pooled = self.pooler(hidden[inputs.layout.first_token_index]) if self.pooler is not None else None
        return EncoderOutput(inputs.to_caller(hidden), pooled)


# ---------------------------------------------------------------------------------------------
# Pretraining: MLM (tied decoder, masked positions only) + NSP (on [CLS] only)
# ---------------------------------------------------------------------------------------------
class BertPredictionHeadTransform(FusedOwnerMixin, nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        backend = self.config.kernel_backend
        hidden = kernels.bias_gelu(F.linear(hidden, self.dense.weight), self.dense.bias, self.config.gelu_approximate, backend=backend)
        return kernels.layer_norm(hidden, self.LayerNorm.weight, self.LayerNorm.bias, self.config.layer_norm_eps, backend=backend)


class BertLMPredictionHead(nn.Module):
    """transform → decoder; the decoder's weight is the word-embedding table (tied)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: torch.Tensor, decoder_weight: torch.Tensor) -> torch.Tensor:
        return F.linear(self.transform(hidden), decoder_weight, self.bias)


class BertPreTrainingHeads(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)
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
        self.cls = BertPreTrainingHeads(config)
        self.post_init()

    def external_parameter_uses(self) -> Iterator[tuple[nn.Module, nn.Parameter]]:
        yield from super().external_parameter_uses()
        # The decoder reads the word-embedding table inside this module's forward.
        yield self, self.bert.embeddings.word_embeddings.weight

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        *,
        cu_seqlens: torch.Tensor | None = None,
        max_seqlen: int | None = None,
        labels: torch.Tensor | None = None,
        next_sentence_label: torch.Tensor | None = None,
        keep_padding: bool = False,
        max_masked_tokens: int | None = None,
    ) -> PreTrainingOutput:
        """``keep_padding`` with ``max_masked_tokens`` makes every shape static (see
        :class:`PaddedRowsLayout`): the MLM head then runs on exactly ``max_masked_tokens``
        rows, the masked ones first, padded with ignored ones; there must not be more."""
        inputs = flatten_inputs(input_ids, attention_mask, token_type_ids, position_ids, cu_seqlens, max_seqlen, keep_padding)
        hidden = self.bert.encode(inputs)
        pooled = self.bert.pooler(hidden[inputs.layout.first_token_index])
        nsp_logits = self.cls.seq_relationship(pooled)
        decoder_weight = self.bert.embeddings.word_embeddings.weight
        out = PreTrainingOutput(seq_relationship_logits=nsp_logits)

        if labels is None:
            out.prediction_logits = inputs.to_caller(self.cls.predictions(hidden, decoder_weight))
        else:
            flat_labels = inputs.per_token(labels)
            masked = _masked_positions(flat_labels, max_masked_tokens)
            out.masked_lm_labels = flat_labels[masked]
            out.masked_lm_logits = self.cls.predictions(hidden[masked], decoder_weight)
            # Sum over masked tokens / count, as transformers' mean over non-ignored labels.
            out.mlm_loss = F.cross_entropy(out.masked_lm_logits.float(), out.masked_lm_labels)
            out.loss = out.mlm_loss
        if next_sentence_label is not None:
            out.nsp_loss = F.cross_entropy(nsp_logits.float(), next_sentence_label.view(-1))
            out.loss = out.nsp_loss if out.loss is None else out.loss + out.nsp_loss
        return out


def _masked_positions(flat_labels: torch.Tensor, capacity: int | None) -> torch.Tensor:
    """Flat indices of the MLM positions; with a ``capacity``, exactly that many (masked
    first, in order, then ignored ones) so the shape never depends on the data."""
    is_masked = flat_labels != IGNORE_INDEX
    if capacity is None:
        return is_masked.nonzero().flatten()
    if capacity > flat_labels.numel():
        raise ValueError(f"max_masked_tokens {capacity} exceeds the batch's {flat_labels.numel()} token slots")
    if is_masked.device.type == "cpu" and not torch.compiler.is_compiling():
        if int(is_masked.sum()) > capacity:
            raise ValueError(f"{int(is_masked.sum())} masked tokens exceed max_masked_tokens {capacity}")
    else:  # checked without a host sync; a device assert is loud, never a silently dropped label
        torch._assert_async(is_masked.sum() <= capacity, "masked tokens exceed max_masked_tokens")
    return torch.argsort((~is_masked).to(torch.uint8), stable=True)[:capacity]


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
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        *,
        cu_seqlens: torch.Tensor | None = None,
        max_seqlen: int | None = None,
        labels: torch.Tensor | None = None,
        keep_padding: bool = False,
    ) -> ClassifierOutput:
        pooled = self.bert(
            input_ids, attention_mask, token_type_ids, position_ids,
            cu_seqlens=cu_seqlens, max_seqlen=max_seqlen, keep_padding=keep_padding,
        ).pooler_output
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
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        *,
        cu_seqlens: torch.Tensor | None = None,
        max_seqlen: int | None = None,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
        keep_padding: bool = False,
    ) -> QuestionAnsweringOutput:
        inputs = flatten_inputs(input_ids, attention_mask, token_type_ids, position_ids, cu_seqlens, max_seqlen, keep_padding)
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

    Padded input is ``[B, C, T]``; flat input lists the B*C sequences choice-major within
    each example and needs ``num_choices``.
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
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        *,
        cu_seqlens: torch.Tensor | None = None,
        max_seqlen: int | None = None,
        num_choices: int | None = None,
        labels: torch.Tensor | None = None,
        keep_padding: bool = False,
    ) -> ClassifierOutput:
        if cu_seqlens is None:
            num_choices = input_ids.shape[1]

            def merge(t):
                return None if t is None else t.reshape(-1, t.shape[-1])

            input_ids, attention_mask, token_type_ids, position_ids = map(
                merge, (input_ids, attention_mask, token_type_ids, position_ids)
            )
        elif num_choices is None:
            raise ValueError("flat multiple-choice input needs num_choices")
        pooled = self.bert(
            input_ids, attention_mask, token_type_ids, position_ids,
            cu_seqlens=cu_seqlens, max_seqlen=max_seqlen, keep_padding=keep_padding,
        ).pooler_output
        logits = self.classifier(self.dropout(pooled)).view(-1, num_choices)
        loss = None if labels is None else F.cross_entropy(logits.float(), labels.view(-1))
        return ClassifierOutput(loss, logits)
