"""Attention over unpadded tokens, behind one function with interchangeable backends.

``q, k, v`` are ``[total_tokens, heads, head_dim]`` and a :class:`SequenceLayout` says
where sequences start; attention never crosses a sequence boundary. Backends, fastest
first:

* ``flash_attn``: ``flash_attn.flash_attn_varlen_func`` (the flash-attn package, CUDA,
  fp16/bf16 only);
* ``torch_varlen``: ``torch.nn.attention.varlen.varlen_attn`` (CUDA, recent torch, fp16/bf16
  only; it has no dropout, so ``auto`` skips it while attention dropout is active);
* ``sdpa``: pad per sequence and run ``scaled_dot_product_attention`` with an additive key
  mask. Runs everywhere; the CPU path and the reference.

``FASTBERT_ATTENTION`` (read once per model, into its :class:`~fastbert.model.backends.Backends`)
or an explicit ``backend`` chooses; ``auto`` takes the
fastest available for the tensors' device and dtype (an fp32 model on a GPU gets ``sdpa``;
under autocast q, k and v come out of a bf16/fp16 matmul). The choice is logged once per
(backend, device).
"""

from __future__ import annotations

import importlib.util
import logging
import os

import torch
import torch.nn.functional as F

from .. import kernels
from .layout import SequenceLayout

BACKENDS = ("auto", "flash_attn", "torch_varlen", "sdpa")
ENV_VAR = "FASTBERT_ATTENTION"

logger = logging.getLogger("fastbert.attention")
_logged: set[tuple[str, str]] = set()


# Looked up once: this runs in every layer, where a sys.path search per call would cost
# time and break torch.compile graphs. find_spec imports neither package.
_HAS_FLASH_ATTN = importlib.util.find_spec("flash_attn") is not None
_HAS_TORCH_VARLEN = importlib.util.find_spec("torch.nn.attention.varlen") is not None
_FLASH_DTYPES = (torch.float16, torch.bfloat16)


def _flash_attn_available(device: torch.device) -> bool:
    return device.type == "cuda" and _HAS_FLASH_ATTN


def _torch_varlen_available(device: torch.device) -> bool:
    return device.type == "cuda" and _HAS_TORCH_VARLEN


def requested_attention_backend() -> str:
    """What ``FASTBERT_ATTENTION`` asks for ("auto" when unset)."""
    return os.environ.get(ENV_VAR) or "auto"


def resolve_attention_backend(
    device: torch.device,
    dropout_p: float,
    override: str | None = None,
    dtype: torch.dtype = torch.bfloat16,
    varlen_layout: bool = True,
) -> str:
    """The backend that runs for ``dtype`` tensors on ``device``; forcing an unavailable one is an error.

    ``override`` None reads ``FASTBERT_ATTENTION``. ``varlen_layout=False`` (a
    :class:`PaddedRowsLayout`, whose stream keeps its padding) allows only ``sdpa``.
    """
    requested = (override if override is not None else requested_attention_backend()).strip().lower()
    if requested not in BACKENDS:
        raise ValueError(f"attention backend {requested!r} is unknown; expected one of {', '.join(BACKENDS)}")
    if not varlen_layout and requested not in ("auto", "sdpa"):
        raise RuntimeError(
            f"attention backend {requested} needs unpadded input; static-shape batches (padded rows, "
            "as CUDA graphs use) run sdpa: unset it or choose sdpa"
        )
    if not varlen_layout:
        name = "sdpa"
    elif requested == "auto":
        if _flash_attn_available(device) and dtype in _FLASH_DTYPES:
            name = "flash_attn"
        elif _torch_varlen_available(device) and dtype in _FLASH_DTYPES and dropout_p == 0.0:
            name = "torch_varlen"
        else:
            name = "sdpa"
    else:
        name = requested
        if name == "flash_attn" and not _flash_attn_available(device):
            raise RuntimeError(
                f"attention backend flash_attn needs CUDA tensors and the flash-attn package (pip install fastbert[flash]); "
                f"tensors are on {device.type}"
            )
        if name == "torch_varlen":
            if not _torch_varlen_available(device):
                raise RuntimeError(
                    f"attention backend torch_varlen needs CUDA tensors and torch.nn.attention.varlen "
                    f"(torch {torch.__version__}, tensors on {device.type})"
                )
            if dropout_p > 0.0:
                raise RuntimeError(
                    "attention backend torch_varlen has no attention dropout; set attention_probs_dropout_prob=0 "
                    "or choose flash_attn/sdpa"
                )
        if name != "sdpa" and dtype not in _FLASH_DTYPES:
            raise RuntimeError(
                f"attention backend {name} needs fp16/bf16 q, k, v; got {dtype} "
                "(run under torch.autocast, cast the model, or choose sdpa)"
            )
    key = (name, device.type)
    if key not in _logged:
        _logged.add(key)
        logger.info("attention: %s backend on %s", name, device.type)
    return name


def varlen_attention(
    qkv: torch.Tensor,
    layout: SequenceLayout,
    dropout_p: float = 0.0,
    backend: str | None = None,
    first_queries_only: bool = False,
) -> torch.Tensor:
    """Bidirectional attention within each sequence.

    ``qkv`` is ``[total_tokens, 3, heads, head_dim]`` (the fused projection's output);
    returns ``[total_tokens, heads, head_dim]``, or with ``first_queries_only`` the
    ``[num_sequences, heads, head_dim]`` output of each sequence's first token ([CLS])
    attending over its whole sequence.
    """
    name = resolve_attention_backend(qkv.device, dropout_p, backend, qkv.dtype, layout.supports_varlen)
    cu, longest = layout.cu_seqlens, layout.max_seqlen
    if first_queries_only:
        return _first_query_attention(qkv, layout, dropout_p, name)
    if name == "flash_attn":
        from flash_attn import flash_attn_varlen_qkvpacked_func

        return flash_attn_varlen_qkvpacked_func(qkv, cu, longest, dropout_p=dropout_p)
    if name == "torch_varlen":
        from torch.nn.attention.varlen import varlen_attn

        q, k, v = qkv.unbind(1)
        return varlen_attn(q, k, v, cu, cu, longest, longest)
    return _padded_sdpa(qkv, layout, dropout_p)


def _first_query_attention(qkv: torch.Tensor, layout: SequenceLayout, dropout_p: float, name: str) -> torch.Tensor:
    # One query per sequence (its first token) against all of that sequence's keys.
    q = qkv[layout.first_token_index, 0]  # [S, h, d]
    if name in ("flash_attn", "torch_varlen"):
        cu_q = torch.arange(layout.num_sequences + 1, dtype=torch.int32, device=qkv.device)
        k, v = qkv[:, 1], qkv[:, 2]
        if name == "flash_attn":
            from flash_attn import flash_attn_varlen_func

            return flash_attn_varlen_func(q, k, v, cu_q, layout.cu_seqlens, 1, layout.max_seqlen, dropout_p=dropout_p)
        from torch.nn.attention.varlen import varlen_attn

        return varlen_attn(q, k, v, cu_q, layout.cu_seqlens, 1, layout.max_seqlen)
    k, v = layout.as_rows(qkv[:, 1:]).permute(2, 0, 3, 1, 4).unbind(0)  # [S, h, T, d]
    q = q.unsqueeze(2)  # [S, h, 1, d]
    bias = layout.key_bias(qkv.dtype)
    if dropout_p > 0.0 and qkv.device.type == "cpu":
        out = _attention_with_cpu_dropout(q, k, v, bias, dropout_p)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p)
    return out.squeeze(2)


def _padded_sdpa(qkv: torch.Tensor, layout: SequenceLayout, dropout_p: float) -> torch.Tensor:
    # One pad for all three: [N, 3, h, d] -> [S, T, 3, h, d] -> q, k, v as [S, h, T, d].
    # Padded keys are masked out (the layout's additive key bias, made once for all layers);
    # padded query rows are dropped by the unpad.
    q, k, v = layout.as_rows(qkv).permute(2, 0, 3, 1, 4).unbind(0)
    bias = layout.key_bias(qkv.dtype)
    if dropout_p > 0.0 and qkv.device.type == "cpu":
        out = _attention_with_cpu_dropout(q, k, v, bias, dropout_p)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p)
    return layout.unpad(out.transpose(1, 2))


def _attention_with_cpu_dropout(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_bias: torch.Tensor, dropout_p: float
) -> torch.Tensor:
    # SDPA's math, which is what it runs on a CPU with dropout anyway, but with the cheaper
    # dropout mask of fastbert.kernels.dropout: SDPA draws one bernoulli per probability.
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    probs = (scores + key_bias).softmax(-1)
    return kernels.dropout(probs, dropout_p) @ v
