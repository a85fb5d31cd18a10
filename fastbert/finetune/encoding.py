"""BERT inputs from text: ``[CLS] a [SEP]`` or ``[CLS] a [SEP] b [SEP]`` with segment ids.

The special tokens are placed here rather than by the tokenizer's post-processor, and any
padding or truncation saved in its ``tokenizer.json`` is switched off, so the result does
not depend on how a checkpoint's tokenizer happens to be configured.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenizers import Encoding, Tokenizer

from ..errors import UserError


@dataclass(frozen=True)
class EncodedSequence:
    """One model input sequence (no padding)."""

    input_ids: list[int]
    token_type_ids: list[int]
    truncated_from: int | None = None
    """Its length before truncation to the maximum length; None when it fit whole."""


class PairEncoder:
    """Tokenizes text without special tokens and assembles BERT sequences from the pieces."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = Tokenizer.from_str(tokenizer.to_str())  # a copy: its settings change below
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.cls_id = self._special_id("[CLS]")
        self.sep_id = self._special_id("[SEP]")

    def _special_id(self, token: str) -> int:
        token_id = self.tokenizer.token_to_id(token)
        if token_id is None:
            raise UserError(f"the tokenizer has no {token} token; a BERT WordPiece vocabulary is required")
        return token_id

    def pieces(self, texts: list[str]) -> list[Encoding]:
        """Word pieces of each text, with character offsets into it."""
        return self.tokenizer.encode_batch(texts, add_special_tokens=False)

    def encode(self, texts_a: list[str], texts_b: list[str] | None, max_len: int) -> list[EncodedSequence]:
        """Sequences of at most ``max_len`` tokens, trimming the longer text of a pair first."""
        pieces_a = [e.ids for e in self.pieces(texts_a)]
        if texts_b is None:
            return [self.assemble(ids[: max_len - 2], None, _cut(len(ids) + 2, max_len)) for ids in pieces_a]
        pieces_b = [e.ids for e in self.pieces(texts_b)]
        out = []
        for a, b in zip(pieces_a, pieces_b):
            keep_a, keep_b = longest_first(len(a), len(b), max_len - 3)
            out.append(self.assemble(a[:keep_a], b[:keep_b], _cut(len(a) + len(b) + 3, max_len)))
        return out

    def assemble(self, ids_a: list[int], ids_b: list[int] | None, truncated_from: int | None = None) -> EncodedSequence:
        input_ids = [self.cls_id, *ids_a, self.sep_id]
        token_type_ids = [0] * len(input_ids)
        if ids_b is not None:
            input_ids += [*ids_b, self.sep_id]
            token_type_ids += [1] * (len(ids_b) + 1)
        return EncodedSequence(input_ids, token_type_ids, truncated_from)


def _cut(length: int, max_len: int) -> int | None:
    return length if length > max_len else None


def longest_first(len_a: int, len_b: int, budget: int) -> tuple[int, int]:
    """How many tokens of each text to keep so that both fit ``budget``, shortening the longer one first."""
    if budget < 2:
        raise UserError(f"maximum sequence length leaves room for only {budget} text tokens")
    if len_a + len_b <= budget:
        return len_a, len_b
    shorter = min(len_a, len_b)
    if 2 * shorter <= budget:  # only the longer text needs trimming
        return (budget - len_b, len_b) if len_a > len_b else (len_a, budget - len_a)
    half = budget // 2
    return (budget - half, half) if len_a >= len_b else (half, budget - half)
