"""BERT's encoder: embeddings, N x layer, pooler, with transformers' module tree and parameter names.

The encoder runs on the flat stream of :class:`~fastbert.model.inputs.BertInputs`: padded
input is unpadded once, then embeddings, LayerNorms, linears and GELUs run on
``[N, hidden]`` through every layer and outputs come back in the caller's layout. The fused
ops go through :mod:`fastbert.kernels` (the implementation each model's
:class:`~fastbert.model.backends.Backends` picked), attention through :mod:`.attention`.
The task heads are in :mod:`.heads`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import varlen_attention
from .backends import Backends
from .checkpoint import PretrainedMixin
from .config import BertConfig
from .inputs import BertInputs
from .layout import SequenceLayout
from .residual_fork import linear_with_residual, share_rows


@dataclass(frozen=True)
class DropoutSeeds:
    """The seeds of one forward's fused dropout kernels (embeddings, then two per layer), drawn
    in one launch instead of one per kernel; ``block`` None lets each op draw its own mask
    (the torch ops, or no dropout)."""

    block: torch.Tensor | None = None

    def __getitem__(self, index: int) -> torch.Tensor | None:
        return None if self.block is None else self.block[index : index + 1]  # a view: no launch

    def layer(self, index: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Layer ``index``'s (attention output, FFN output) seeds."""
        return self[1 + 2 * index], self[2 + 2 * index]


@dataclass(frozen=True)
class GradSums:
    """One forward's zero-filled fp32 buffer into which the fused kernels' backward add the
    per-column parameter gradients: the embedding LayerNorm's weight and bias and the
    token-type table; per layer, the two LayerNorms' weight, bias and fused dense bias and the
    FFN's GELU bias; the MLM head transform's GELU bias and LayerNorm. One zero-fill launch
    for the whole model instead of a partial-sum reduction launch per op. ``block`` None: each
    op reduces its own (the torch ops, evaluation, deterministic algorithms).

    Layout: embeddings, the layers in order, the MLM transform (allocated whether or not a head
    uses it: 3 x hidden floats zeroed in the same launch)."""

    block: torch.Tensor | None
    config: BertConfig

    @staticmethod
    def numel(config: BertConfig) -> int:
        h = config.hidden_size
        return (2 + config.type_vocab_size) * h + config.num_hidden_layers * (6 * h + config.intermediate_size) + 3 * h

    def embeddings(self) -> torch.Tensor | None:
        """The embedding LayerNorm's slice (weight, bias, then the token-type rows); a view: no launch."""
        return None if self.block is None else self.block[: self._layers_start]

    def layer(self, index: int) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """Layer ``index``'s slices (views: no launch) for its attention-output LayerNorm, its
        GELU and its FFN-output LayerNorm."""
        if self.block is None:
            return None, None, None
        h, i = self.config.hidden_size, self.config.intermediate_size
        start = self._layers_start + index * (6 * h + i)
        return self.block[start : start + 3 * h], self.block[start + 3 * h : start + 3 * h + i], self.block[start + 3 * h + i : start + 6 * h + i]

    def mlm_transform(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The MLM head transform's slices for its GELU (dense bias) and its LayerNorm."""
        if self.block is None:
            return None, None
        h = self.config.hidden_size
        return self.block[-3 * h : -2 * h], self.block[-2 * h :]

    @property
    def _layers_start(self) -> int:
        return (2 + self.config.type_vocab_size) * self.config.hidden_size


# ---------------------------------------------------------------------------------------------
# Encoder modules (names mirror transformers so state dicts are interchangeable)
# ---------------------------------------------------------------------------------------------
class FusedOwnerMixin:
    """Marks modules whose forward passes their children's parameters straight to fused kernels.

    Sharding schemes that gather a module's own parameters just before its forward (ZeRO-3)
    must gather these too; :meth:`BertPreTrainedModel.external_parameter_uses` lists them.
    """


class BertEmbeddings(FusedOwnerMixin, nn.Module):
    def __init__(self, config: BertConfig, backends: Backends):
        super().__init__()
        self.config, self.backends = config, backends
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.sparse_word_gradient = False
        """Whether the word table's gradient arrives as the batch's rows (a sparse tensor) rather
        than a dense [vocab, hidden] tensor; set through
        :meth:`BertPreTrainedModel.sparse_embedding_gradients`, by an engine that keeps a dense
        ``.grad`` to add the rows into."""

    def forward(
        self, input_ids, token_type_ids, position_ids, seed: torch.Tensor | None = None, grad_sums: torch.Tensor | None = None
    ) -> torch.Tensor:
        words, word_ids = self.word_embeddings.weight, input_ids
        if self.sparse_word_gradient and torch.is_grad_enabled():
            # Gather the batch's rows first and hand the fused op that small table: its backward
            # then makes a [tokens, hidden] gradient, which reaches the word table as sparse rows,
            # instead of zero-filling a fresh [vocab, hidden] tensor every step (47 MB for BERT's
            # vocabulary: about 10 ms of a 0.22 s CoLA step on a 2-core CPU).
            words = F.embedding(input_ids.reshape(-1), words, sparse=True)
            word_ids = torch.arange(input_ids.numel(), device=input_ids.device).view_as(input_ids)
        return self.backends.ops(input_ids.device).embedding_layer_norm(
            word_ids, token_type_ids, position_ids,
            words, self.token_type_embeddings.weight, self.position_embeddings.weight,
            self.LayerNorm.weight, self.LayerNorm.bias, self.config.layer_norm_eps,
            self.config.hidden_dropout_prob if self.training else 0.0, seed, grad_sums,
        )


class BertSelfAttention(FusedOwnerMixin, nn.Module):
    def __init__(self, config: BertConfig, backends: Backends):
        super().__init__()
        self.config, self.backends = config, backends
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self._share_qkv_storage()

    def _share_qkv_storage(self) -> None:
        # Q, K and V stay three Linears (checkpoint names, per-tensor optimizer norms) whose
        # weights, and biases, lie back to back in memory: the fused projection reads them as
        # one matrix without copying them every forward.
        share_rows(self.query.weight, self.key.weight, self.value.weight)
        share_rows(self.query.bias, self.key.bias, self.value.bias)

    def _apply(self, fn, recurse=True):
        # A move or cast (.to, .cuda, to_empty) gives each parameter its own new storage.
        super()._apply(fn, recurse)
        self._share_qkv_storage()
        return self

    def forward(
        self, hidden: torch.Tensor, layout: SequenceLayout, first_tokens_only: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(context, the input as the residual that follows), both ``[N, H]``, or ``[S, H]``
        with ``first_tokens_only``."""
        # One matmul for Q, K and V: the three projections read the same input.
        qkv, residual = linear_with_residual(
            hidden, (self.query.weight, self.key.weight, self.value.weight), (self.query.bias, self.key.bias, self.value.bias)
        )
        qkv = qkv.view(-1, 3, self.config.num_attention_heads, self.config.head_dim)
        dropout_p = self.config.attention_probs_dropout_prob if self.training else 0.0
        backend = self.backends.attention_for(qkv.device, dropout_p, qkv.dtype, layout.supports_varlen)
        context = varlen_attention(qkv, layout, dropout_p, backend, first_tokens_only)
        if first_tokens_only:
            residual = residual[layout.first_token_index]
        return context.reshape(-1, self.config.hidden_size), residual


class BertResidualOutput(FusedOwnerMixin, nn.Module):
    """dense → (+bias, dropout, +residual, LayerNorm) fused: BERT's "output" block after attention and FFN."""

    def __init__(self, config: BertConfig, backends: Backends, in_features: int):
        super().__init__()
        self.config, self.backends = config, backends
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor, seed: torch.Tensor | None = None, grad_sums: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.backends.ops(x.device).layer_norm(
            F.linear(x, self.dense.weight), self.LayerNorm.weight, self.LayerNorm.bias, self.config.layer_norm_eps,
            residual, self.config.hidden_dropout_prob if self.training else 0.0, self.dense.bias, seed, grad_sums,
        )


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig, backends: Backends):
        super().__init__()
        self.self = BertSelfAttention(config, backends)
        self.output = BertResidualOutput(config, backends, config.hidden_size)

    def forward(
        self, hidden: torch.Tensor, layout: SequenceLayout, first_tokens_only: bool = False, seed: torch.Tensor | None = None,
        grad_sums: torch.Tensor | None = None,
    ) -> torch.Tensor:
        context, residual = self.self(hidden, layout, first_tokens_only)
        return self.output(context, residual, seed, grad_sums)


class BertIntermediate(FusedOwnerMixin, nn.Module):
    def __init__(self, config: BertConfig, backends: Backends):
        super().__init__()
        self.config, self.backends = config, backends
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, hidden: torch.Tensor, grad_sums: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(GELU(dense(hidden)), hidden as the residual that follows the FFN)."""
        pre_activation, residual = linear_with_residual(hidden, self.dense.weight)
        ops = self.backends.ops(hidden.device)
        return ops.bias_gelu(pre_activation, self.dense.bias, self.config.gelu_approximate, grad_sums), residual


class BertLayer(nn.Module):
    def __init__(self, config: BertConfig, backends: Backends):
        super().__init__()
        self.attention = BertAttention(config, backends)
        self.intermediate = BertIntermediate(config, backends)
        self.output = BertResidualOutput(config, backends, config.intermediate_size)

    def forward(
        self,
        hidden: torch.Tensor,
        layout: SequenceLayout,
        first_tokens_only: bool = False,
        seeds: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None),
        grad_sums: tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None] = (None, None, None),
    ) -> torch.Tensor:
        """``[N, H]`` out, or ``[S, H]`` for the sequences' first tokens only: their keys and
        values still come from every token, but nothing else is computed for the other rows.
        ``seeds``: the two dropout kernels' (see :class:`DropoutSeeds`); ``grad_sums``: the
        three fused ops' (see :class:`GradSums`)."""
        attended = self.attention(hidden, layout, first_tokens_only, seeds[0], grad_sums[0])
        return self.output(*self.intermediate(attended, grad_sums[1]), seeds[1], grad_sums[2])


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig, backends: Backends):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config, backends) for _ in range(config.num_hidden_layers))

    def forward(
        self, hidden: torch.Tensor, layout: SequenceLayout, first_tokens_only: bool = False, seeds: DropoutSeeds = DropoutSeeds(),
        grad_sums: GradSums | None = None,
    ) -> torch.Tensor:
        """``[N, H]``; with ``first_tokens_only``, ``[S, H]`` for each sequence's first token,
        the last layer running only there (what a pooled-[CLS] head reads)."""
        last = len(self.layer) - 1
        for i, layer in enumerate(self.layer):
            sums = grad_sums.layer(i) if grad_sums is not None else (None, None, None)
            hidden = layer(hidden, layout, first_tokens_only and i == last, seeds.layer(i), sums)
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
        elif hasattr(module, "init_own_parameters"):  # a module with parameters of its own (the MLM bias)
            module.init_own_parameters()
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

    @property
    def backends(self) -> Backends:
        """The kernel and attention backends this model runs (shared by all its modules)."""
        return self.bert.backends

    def sparse_embedding_gradients(self) -> list[nn.Parameter]:
        """Make the backward send the word-embedding table only the rows of the batch's tokens, as a
        sparse gradient, where that saves work; the parameters whose gradients now arrive sparse.

        Their ``.grad`` must already be a dense tensor when the backward runs (autograd then adds
        the rows into it, and optimizers read dense gradients): the caller owns that buffer.
        """
        table = self.bert.embeddings.word_embeddings.weight
        if not table.requires_grad:  # a frozen table gets no gradient, and must get no buffer to update it from
            return []
        self.bert.embeddings.sparse_word_gradient = True
        return [table]

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
        self._backends = Backends.from_environment()
        self.embeddings = BertEmbeddings(config, self._backends)
        self.encoder = BertEncoder(config, self._backends)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.post_init()

    @property
    def backends(self) -> Backends:
        return self._backends

    def encode(self, inputs: BertInputs, first_tokens_only: bool = False, grad_sums: GradSums | None = None) -> torch.Tensor:
        """Real tokens in, ``[N, H]`` hidden states out; with ``first_tokens_only`` the
        ``[S, H]`` states of each sequence's first token ([CLS]), the last layer run on those rows only.
        ``grad_sums``: this forward's block when a head shares it (see :meth:`grad_sums`), else one is made here."""
        self._check_positions(inputs)
        device = inputs.input_ids.device
        seeds = self.dropout_seeds(device)
        if grad_sums is None:
            grad_sums = self.grad_sums(device)
        hidden = self.embeddings(inputs.input_ids, inputs.token_type_ids, inputs.position_ids, seeds[0], grad_sums.embeddings())
        return self.encoder(hidden, inputs.layout, first_tokens_only, seeds, grad_sums)

    def grad_sums(self, device: torch.device) -> GradSums:
        """This forward's buffer for the fused ops' parameter gradients (one zero-fill launch),
        when a backward will follow."""
        block = None
        if torch.is_grad_enabled():
            block = self.backends.ops(device).grad_sums_block(GradSums.numel(self.config), device)
        return GradSums(block, self.config)

    def dropout_seeds(self, device: torch.device) -> DropoutSeeds:
        """This forward's seeds for the fused dropout kernels: one draw (a launch) for all of them."""
        dropout_p = self.config.hidden_dropout_prob if self.training else 0.0
        count = 1 + 2 * self.config.num_hidden_layers
        return DropoutSeeds(self.backends.ops(device).dropout_seeds(count, dropout_p, device))

    def pooled(self, inputs: BertInputs) -> torch.Tensor:
        """tanh(dense([CLS])) per sequence, computing in the last layer only what [CLS] needs.
        As a pooled head's loss reads nothing else, this is the ``pooler_output`` of :meth:`forward`."""
        return self.pooler(self.encode(inputs, first_tokens_only=True))

    def _check_positions(self, inputs: BertInputs) -> None:
        # An out-of-range position would read past the table (silently, in a Triton kernel).
        limit = self.config.max_position_embeddings
        if inputs.max_position_id is not None:  # generated positions: known without a device sync
            if inputs.max_position_id >= limit:
                raise ValueError(
                    f"sequence length {inputs.max_position_id + 1} > max_position_embeddings {limit}: sequence too long"
                )
        elif inputs.input_ids.numel() and int(inputs.position_ids.max()) >= limit:  # a device read: user-given positions only
            raise ValueError(
                f"position id {int(inputs.position_ids.max())} >= max_position_embeddings {limit}: sequence too long"
            )

    def forward(
        self,
        input_ids: torch.Tensor | BertInputs,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> EncoderOutput:
        """:class:`BertInputs`, or transformers' padded tensors (a thin adapter for drop-in use)."""
        inputs = BertInputs.of(input_ids, attention_mask, token_type_ids, position_ids)
        hidden = self.encode(inputs)
        pooled = self.pooler(hidden[inputs.layout.first_token_index]) if self.pooler is not None else None
        return EncoderOutput(inputs.to_caller(hidden), pooled)
