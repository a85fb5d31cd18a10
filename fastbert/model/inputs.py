"""The one value a model takes for a batch, and the training batch built around it.

:class:`BertInputs` is a batch as the encoder sees it: real tokens in one flat stream, their
segments and positions, where each sequence starts (its :mod:`.layout`), how outputs go back
to the caller's ``[B, T]`` layout, and, for static shapes, how many rows the MLM head runs on.
Build it with :meth:`BertInputs.from_padded` (transformers' layout) or
:meth:`BertInputs.from_flat` (real tokens only plus ``cu_seqlens``); collators build it on
the host, where reading lengths costs no device sync.

:class:`Batch` adds what a training step needs besides the inputs: the targets the model's
loss takes and the batch's size, counted on the host.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .layout import PaddedRowsLayout, SequenceLayout

IGNORE_INDEX = -100
"""The label of positions that take no loss (unmasked tokens, padding rows), as torch's cross_entropy ignores."""


@dataclass(eq=False)
class Unpadded:
    """How flat outputs return to a padded ``[B, T]`` caller whose padding was removed."""

    token_index: torch.Tensor  # flat index of each real token in [B * T]
    batch_size: int
    seq_len: int

    def repad(self, flat: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        """``[N, ...]`` → ``[B, T, ...]`` in the caller's original positions."""
        out = flat.new_full((self.batch_size * self.seq_len, *flat.shape[1:]), fill)
        out = out.index_copy(0, self.token_index, flat)
        return out.view(self.batch_size, self.seq_len, *flat.shape[1:])

    def gather(self, padded: torch.Tensor) -> torch.Tensor:
        """``[B, T, ...]`` (e.g. labels) → ``[N, ...]`` on the real tokens."""
        return padded.reshape(-1, *padded.shape[2:]).index_select(0, self.token_index)

    def to(self, device: torch.device, non_blocking: bool = False) -> "Unpadded":
        return Unpadded(self.token_index.to(device, non_blocking=non_blocking), self.batch_size, self.seq_len)


@dataclass(eq=False)
class KeptPadding:
    """The caller's ``[B, T]`` layout when the stream keeps its padding (:class:`PaddedRowsLayout`)."""

    layout: PaddedRowsLayout

    def repad(self, flat: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        return self.layout.pad(flat, fill)

    def gather(self, padded: torch.Tensor) -> torch.Tensor:
        return padded.reshape(-1, *padded.shape[2:])


@dataclass(eq=False)
class BertInputs:
    """A batch as the encoder runs it: ``[N]`` token, segment and position ids plus their layout."""

    input_ids: torch.Tensor
    token_type_ids: torch.Tensor
    position_ids: torch.Tensor
    layout: SequenceLayout
    restore: Unpadded | KeptPadding | None = None
    """How outputs return to the caller's ``[B, T]`` layout; None when the caller gave the flat one."""
    max_position_id: int | None = None
    """A bound on ``position_ids`` known without a device read (generated or host-built
    positions); None means they are checked on the device."""
    masked_capacity: int | None = None
    """Static shapes: the MLM head runs on exactly this many rows (masked ones first); None: on the masked tokens."""
    mlm_positions: torch.Tensor | None = None
    """The masked tokens' flat indices, found on the host when the labels were made (the
    collator's), so that the device never has to count them: a ``nonzero`` on a GPU makes the
    host wait for it. None: found from the labels."""

    # ---- constructors ------------------------------------------------------------------------
    @classmethod
    def from_padded(
        cls,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        *,
        keep_padding: bool = False,
        masked_capacity: int | None = None,
    ) -> "BertInputs":
        """A transformers-style ``[B, T]`` batch. Its padding is removed once, unless
        ``keep_padding`` keeps it in the stream so that no shape depends on the data and
        nothing is read on the host (:class:`PaddedRowsLayout`; what CUDA graphs capture).

        Positions default to the column index (as transformers does), so a token keeps the
        position it had in the padded row whatever the mask looks like.
        """
        generated_positions = position_ids is None
        mask, token_type_ids, position_ids = _padded_defaults(input_ids, attention_mask, token_type_ids, position_ids)
        if keep_padding:
            layout = PaddedRowsLayout.from_mask(mask)
            flat = [t.reshape(-1) for t in (input_ids, token_type_ids, position_ids)]
            restore: Unpadded | KeptPadding = KeptPadding(layout)
        else:
            lengths = mask.sum(1)
            if bool((lengths == 0).any()):
                raise ValueError(f"attention_mask rows {(lengths == 0).nonzero().flatten().tolist()} have no tokens")
            token_index = mask.flatten().nonzero().flatten()
            flat = [t.reshape(-1).index_select(0, token_index) for t in (input_ids, token_type_ids, position_ids)]
            layout = SequenceLayout.from_lengths(lengths, token_index.numel())
            restore = Unpadded(token_index, *input_ids.shape)
        max_position = input_ids.shape[-1] - 1 if generated_positions else _host_max(position_ids)
        return cls(*flat, layout, restore, max_position, masked_capacity)

    @classmethod
    def from_flat(
        cls,
        input_ids: torch.Tensor,
        cu_seqlens: torch.Tensor,
        max_seqlen: int,
        position_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        *,
        masked_capacity: int | None = None,
        mlm_positions: torch.Tensor | None = None,
    ) -> "BertInputs":
        """Real tokens only: ``input_ids [N]``, ``cu_seqlens`` int32 ``[S+1]``, ``max_seqlen`` (a
        Python int, so no device sync), ``position_ids [N]`` restarting at 0 per sequence.
        Sequences packed into one row are simply consecutive sequences here. ``mlm_positions``:
        the ascending flat indices of the tokens the MLM labels mark (see :attr:`mlm_positions`)."""
        if input_ids.dim() != 1:
            raise ValueError(f"flat input_ids must be [total_tokens]; got shape {tuple(input_ids.shape)}")
        if position_ids is None or max_seqlen is None:
            raise ValueError("the flat layout needs position_ids (restarting per sequence) and max_seqlen")
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        layout = SequenceLayout(cu_seqlens.to(torch.int32), int(max_seqlen), input_ids.numel())
        if mlm_positions is not None and masked_capacity is not None:
            raise ValueError("give mlm_positions or a masked_capacity, not both")
        return cls(input_ids, token_type_ids, position_ids, layout, None, _host_max(position_ids), masked_capacity, mlm_positions)

    @classmethod
    def of(
        cls,
        input_ids: "torch.Tensor | BertInputs",
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> "BertInputs":
        """What a model's transformers-style ``forward`` received, as inputs: a
        :class:`BertInputs` as it is, padded tensors through :meth:`from_padded`."""
        if not isinstance(input_ids, BertInputs):
            return cls.from_padded(input_ids, attention_mask, token_type_ids, position_ids)
        if any(t is not None for t in (attention_mask, token_type_ids, position_ids)):
            raise ValueError("BertInputs already hold the mask, segments and positions; pass them to its constructor")
        return input_ids

    # ---- use ---------------------------------------------------------------------------------
    @property
    def num_sequences(self) -> int:
        return self.layout.num_sequences

    def to(self, device: torch.device, non_blocking: bool = False) -> "BertInputs":
        moved = [t.to(device, non_blocking=non_blocking) for t in (self.input_ids, self.token_type_ids, self.position_ids)]
        layout = self.layout.to(device, non_blocking)
        if isinstance(self.restore, KeptPadding):
            restore: Unpadded | KeptPadding | None = KeptPadding(layout)
        else:
            restore = None if self.restore is None else self.restore.to(device, non_blocking)
        positions = None if self.mlm_positions is None else self.mlm_positions.to(device, non_blocking=non_blocking)
        return BertInputs(*moved, layout, restore, self.max_position_id, self.masked_capacity, positions)

    def pin_memory(self) -> "BertInputs":
        """A copy in page-locked host memory, so that ``to(cuda, non_blocking=True)`` never blocks
        the host (DataLoader's ``pin_memory=True`` calls this)."""
        pinned = [t.pin_memory() for t in (self.input_ids, self.token_type_ids, self.position_ids)]
        layout = self.layout
        layout = (PaddedRowsLayout.from_mask(layout.key_mask.pin_memory()) if isinstance(layout, PaddedRowsLayout)
                  else SequenceLayout(layout.cu_seqlens.pin_memory(), layout.max_seqlen, layout.total_tokens))
        if isinstance(self.restore, KeptPadding):
            restore: Unpadded | KeptPadding | None = KeptPadding(layout)
        elif isinstance(self.restore, Unpadded):
            restore = Unpadded(self.restore.token_index.pin_memory(), self.restore.batch_size, self.restore.seq_len)
        else:
            restore = None
        positions = None if self.mlm_positions is None else self.mlm_positions.pin_memory()
        return BertInputs(*pinned, layout, restore, self.max_position_id, self.masked_capacity, positions)

    def to_caller(self, flat: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        """A per-token output back in the caller's layout."""
        return flat if self.restore is None else self.restore.repad(flat, fill)

    def per_token(self, t: torch.Tensor) -> torch.Tensor:
        """A per-token tensor (e.g. MLM labels) from the caller's layout to the flat one."""
        return t if self.restore is None else self.restore.gather(t)

    def masked_positions(self, flat_labels: torch.Tensor) -> torch.Tensor:
        """Flat indices of the MLM positions; with a :attr:`masked_capacity`, exactly that many
        (masked first, in order, then ignored ones) so the shape never depends on the data."""
        if self.mlm_positions is not None:
            return self.mlm_positions
        is_masked = flat_labels != IGNORE_INDEX
        capacity = self.masked_capacity
        if capacity is None:
            return is_masked.nonzero().flatten()
        if capacity > flat_labels.numel():
            raise ValueError(f"masked_capacity {capacity} exceeds the batch's {flat_labels.numel()} token slots")
        if is_masked.device.type == "cpu" and not torch.compiler.is_compiling():
            if int(is_masked.sum()) > capacity:
                raise ValueError(f"{int(is_masked.sum())} masked tokens exceed masked_capacity {capacity}")
        else:  # checked without a host sync; a device assert is loud, never a silently dropped label
            torch._assert_async(is_masked.sum() <= capacity, "masked tokens exceed masked_capacity")
        return torch.argsort((~is_masked).to(torch.uint8), stable=True)[:capacity]


def _padded_defaults(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    token_type_ids: torch.Tensor | None,
    position_ids: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Check a ``[B, T]`` batch; its boolean mask, token types and positions, filled in as transformers fills them."""
    if input_ids.dim() != 2:
        raise ValueError(f"padded input_ids must be [batch, seq]; got shape {tuple(input_ids.shape)}")
    batch, seq = input_ids.shape
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids, dtype=torch.bool)
    elif attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape {tuple(input_ids.shape)}")
    if token_type_ids is None:
        token_type_ids = torch.zeros_like(input_ids)
    if position_ids is None:
        position_ids = torch.arange(seq, device=input_ids.device)
    return attention_mask.bool(), token_type_ids.expand(batch, seq), position_ids.expand(batch, seq)


def _host_max(position_ids: torch.Tensor) -> int | None:
    """The largest position when reading it is free (host tensors); None on a device."""
    if position_ids.device.type != "cpu" or torch.compiler.is_compiling():
        return None
    return int(position_ids.max()) if position_ids.numel() else 0


@dataclass(eq=False)
class Batch:
    """One training or evaluation batch: the model's inputs, its loss targets, its size.

    ``model(batch.inputs, **batch.targets)`` is the forward every engine runs. The counts are
    plain ints taken on the host, so logging throughput never reads the device.
    """

    inputs: BertInputs | torch.Tensor
    """The model's inputs (a plain tensor for models that take one, as the tests' toy models)."""
    targets: dict[str, Any] = field(default_factory=dict)
    """The forward's other keyword arguments: labels (tensors) and options such as ``num_choices``."""
    num_tokens: int = 0
    """Real (non-pad) tokens."""
    num_sequences: int = 0

    def to(self, device: torch.device, non_blocking: bool = False) -> "Batch":
        def move(value: Any) -> Any:
            return value.to(device, non_blocking=non_blocking) if hasattr(value, "to") else value

        return Batch(move(self.inputs), {k: move(v) for k, v in self.targets.items()}, self.num_tokens, self.num_sequences)

    def pin_memory(self) -> "Batch":
        """A copy in page-locked host memory (DataLoader's ``pin_memory=True`` calls this)."""
        def pin(value: Any) -> Any:
            return value.pin_memory() if hasattr(value, "pin_memory") else value

        return Batch(pin(self.inputs), {k: pin(v) for k, v in self.targets.items()}, self.num_tokens, self.num_sequences)

    @classmethod
    def of_inputs(cls, inputs: BertInputs, **targets: Any) -> "Batch":
        """A batch whose counts come from its inputs (host tensors: no device read)."""
        return cls(inputs, targets, int(inputs.layout.lengths.sum()), inputs.num_sequences)
