"""Where each real token sits: the unpadded layout shared by every layer of one forward.

The encoder runs on ``[total_tokens, hidden]``: padding is removed once, at the input,
and only re-added where a caller asks for ``[batch, seq, hidden]``. ``cu_seqlens`` marks
where each sequence starts in the flat stream, so several sequences packed into one row
of a batch are simply consecutive sequences here.

:class:`PaddedRowsLayout` is the exception, for static shapes: the stream is the padded
batch itself, so every shape depends on ``[batch, seq]`` alone and nothing needs the
data on the host (what CUDA-graph capture requires; see ``fastbert.train.engines.graphed``).

How a batch becomes one of these layouts is :mod:`.inputs`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


class cached_property:  # noqa: N801 (named after the functools decorator it replaces)
    """``functools.cached_property`` without its lock: Python 3.11's RLock stops
    torch.compile from tracing the model (Python 3.12 dropped the lock too)."""

    def __init__(self, fn):
        self.fn, self.name, self.__doc__ = fn, fn.__name__, fn.__doc__

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.fn(obj)
        return value


@dataclass(eq=False)
class SequenceLayout:
    """Sequence boundaries of a flat token stream: ``cu_seqlens`` int32 [S+1] and the longest length."""

    cu_seqlens: torch.Tensor
    max_seqlen: int
    total_tokens: int | None = None
    """``cu_seqlens[-1]`` known on the host (the stream's length), so that no op has to read it from the device."""

    supports_varlen = True
    """Whether the varlen attention kernels (flash-attn, torch varlen) can run on this layout."""

    @property
    def num_sequences(self) -> int:
        return self.cu_seqlens.numel() - 1

    @cached_property
    def lengths(self) -> torch.Tensor:
        return (self.cu_seqlens[1:] - self.cu_seqlens[:-1]).long()

    @cached_property
    def first_token_index(self) -> torch.Tensor:
        """Flat index of each sequence's first token ([CLS] in BERT inputs)."""
        return self.cu_seqlens[:-1].long()

    @cached_property
    def token_coordinates(self) -> tuple[torch.Tensor, torch.Tensor]:
        """For each flat token, its sequence and its position in that sequence."""
        # Without output_size, repeat_interleave reads the total from the device.
        seq_of_token = torch.repeat_interleave(
            torch.arange(self.num_sequences, device=self.cu_seqlens.device), self.lengths, output_size=self.total_tokens
        )
        position = torch.arange(seq_of_token.numel(), device=seq_of_token.device) - self.first_token_index[seq_of_token]
        return seq_of_token, position

    @cached_property
    def padded_index(self) -> torch.Tensor:
        """For each flat token, its position in a ``[S * max_seqlen]`` padded buffer."""
        seq_of_token, position = self.token_coordinates
        return seq_of_token * self.max_seqlen + position

    @cached_property
    def key_padding_mask(self) -> torch.Tensor:
        """``[S, max_seqlen]`` boolean, True where a real token sits."""
        positions = torch.arange(self.max_seqlen, device=self.cu_seqlens.device)
        return positions[None, :] < self.lengths[:, None]

    def key_bias(self, dtype: torch.dtype) -> torch.Tensor:
        """``[S, 1, 1, max_seqlen]`` additive attention mask: 0 at real keys, -inf at padding.

        What SDPA would make of the boolean mask in every layer (a ``where`` and two scalar
        tensors, three launches), made once per forward and dtype and shared by the layers.
        """
        cache = self.__dict__.setdefault("_key_bias", {})
        if dtype not in cache:
            mask = self.key_padding_mask
            bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))
            cache[dtype] = bias[:, None, None, :]
        return cache[dtype]

    def pad(self, flat: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        """``[N, ...]`` → ``[S, max_seqlen, ...]`` with ``fill`` at padded positions."""
        return _ScatterRows.apply(flat, self.padded_index, *self.token_coordinates, self.num_sequences, self.max_seqlen, fill)

    def as_rows(self, flat: torch.Tensor) -> torch.Tensor:
        """``[N, ...]`` → ``[S, max_seqlen, ...]`` where the caller masks padding itself
        (attention's key mask): a view when the layout allows one."""
        return self.pad(flat)

    def unpad(self, padded: torch.Tensor) -> torch.Tensor:
        """``[S, max_seqlen, ...]`` → ``[N, ...]``."""
        return _GatherRows.apply(padded.reshape(-1, *padded.shape[2:]), self.padded_index)

    def to(self, device: torch.device, non_blocking: bool = False) -> "SequenceLayout":
        return SequenceLayout(self.cu_seqlens.to(device, non_blocking=non_blocking), self.max_seqlen, self.total_tokens)

    @classmethod
    def from_lengths(cls, lengths: torch.Tensor, total_tokens: int | None = None) -> "SequenceLayout":
        cu_seqlens = F.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0))
        return cls(cu_seqlens, int(lengths.max()), total_tokens)


class _GatherRows(torch.autograd.Function):
    """``src[index]`` along dim 0 for unique indices.

    Autograd's own backward for index_select accumulates (scatter-add), which on a CPU
    costs more than the attention it surrounds; unique indices only need a copy.
    """

    @staticmethod
    def forward(ctx, src: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(index)
        ctx.src_rows = src.shape[0]
        return src.index_select(0, index)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (index,) = ctx.saved_tensors
        grad_src = grad.new_zeros((ctx.src_rows, *grad.shape[1:]))
        return grad_src.index_copy_(0, index, grad), None


def rows_at(src: torch.Tensor, *indices: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``src[index]`` along dim 0 for each index, as one autograd node.

    Autograd would give each gather a zero-filled gradient buffer and add the buffers up;
    here the gradients land in one buffer (pretraining's [CLS] rows and masked rows: two
    launches fewer per step). Indices may repeat, within one and across several.
    """
    return _GatherRowsMany.apply(src, *indices)


class _GatherRowsMany(torch.autograd.Function):
    @staticmethod
    def forward(ctx, src: torch.Tensor, *indices: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ctx.set_materialize_grads(False)  # an unused output adds nothing (and launches nothing)
        ctx.save_for_backward(*indices)
        ctx.src_shape = src.shape
        return tuple(src[index] for index in indices)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor | None):
        used = [(index, grad) for index, grad in zip(ctx.saved_tensors, grads) if grad is not None]
        if not used:
            return (None,) * (1 + len(grads))
        grad_src = used[0][1].new_zeros(ctx.src_shape)
        for index, grad in used:
            grad_src.index_put_((index,), grad, accumulate=True)
        return (grad_src, *(None,) * len(grads))


class _ScatterRows(torch.autograd.Function):
    """``[N, ...]`` → ``[S, max_seqlen, ...]``: ``fill`` with each token written at its place.

    The backward reads each token's gradient at its (sequence, position): one gather that
    takes the gradient in whatever strides it arrives in. Attention's comes as the stack of
    q, k and v gradients seen through a permute; a flat ``index_select`` would first copy
    all of it, padding included, into a contiguous buffer.
    """

    @staticmethod
    def forward(ctx, src, index, seq_of_token, position, sequences: int, seq_len: int, fill: float) -> torch.Tensor:
        ctx.save_for_backward(seq_of_token, position)
        out = src.new_full((sequences * seq_len, *src.shape[1:]), fill)
        return out.index_copy_(0, index, src).view(sequences, seq_len, *src.shape[1:])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        seq_of_token, position = ctx.saved_tensors
        return grad[seq_of_token, position], None, None, None, None, None, None


@dataclass(eq=False)
class PaddedRowsLayout(SequenceLayout):
    """Each sequence keeps its whole padded row: the flat stream is ``[B * T]`` with padding.

    Pad and unpad are views, the key mask is the caller's attention mask, and sequence
    ``i`` starts at flat row ``i * T``. Padding rows go through the layers like real ones
    (a few percent more work on BERT's mostly full-length pretraining rows) but are never
    attended to and never reach a loss, so they get no gradient. Only the padded SDPA
    attention runs on it.
    """

    key_mask: torch.Tensor | None = None  # [B, T] bool, True at real tokens

    supports_varlen = False

    @classmethod
    def from_mask(cls, key_mask: torch.Tensor) -> "PaddedRowsLayout":
        rows, row_len = key_mask.shape
        starts = torch.arange(0, (rows + 1) * row_len, row_len, dtype=torch.int32, device=key_mask.device)
        return cls(starts, row_len, key_mask.numel(), key_mask.bool())

    def to(self, device: torch.device, non_blocking: bool = False) -> "PaddedRowsLayout":
        return PaddedRowsLayout.from_mask(self.key_mask.to(device, non_blocking=non_blocking))

    @cached_property
    def lengths(self) -> torch.Tensor:
        return self.key_mask.sum(1)

    @cached_property
    def padded_index(self) -> torch.Tensor:
        return torch.arange(self.key_mask.numel(), device=self.key_mask.device)

    @property
    def key_padding_mask(self) -> torch.Tensor:
        return self.key_mask

    def pad(self, flat: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        rows = self.as_rows(flat)
        mask = self.key_mask.view(*self.key_mask.shape, *(1,) * (flat.dim() - 1))
        return rows.masked_fill(~mask, fill)

    def as_rows(self, flat: torch.Tensor) -> torch.Tensor:
        """The stream as ``[B, T, ...]``, a view: padding rows hold whatever the layers made of them."""
        return flat.view(*self.key_mask.shape, *flat.shape[1:])

    def unpad(self, padded: torch.Tensor) -> torch.Tensor:
        return padded.reshape(-1, *padded.shape[2:])
