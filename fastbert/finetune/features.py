"""From examples to model items: tokenize, attach the targets each head's loss takes."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError
from .collate import Item
from .encoding import EncodedSequence, PairEncoder
from .examples import ChoiceExample
from .squad import SquadFeature, build_squad_features
from .tasks import MULTIPLE_CHOICE, SPAN

MAX_QUERY_LEN = 64
DOC_STRIDE = 128


@dataclass
class Split:
    """One split of a task's data, tokenized."""

    name: str
    examples: list
    items: list[Item]
    squad_features: list[SquadFeature] | None = None
    """The windows behind ``items`` (span tasks), needed to map predictions back to text."""
    truncated: int = 0
    """Items with a sequence cut to max_seq_len (span tasks slide a window instead, so none)."""


def build_split(
    kind: str, name: str, examples: list, encoder: PairEncoder, max_seq_len: int,
    long_sequences: str = "truncate", source: str = "",
) -> Split:
    """The items of ``examples``; their labels become targets when every example has one (else it
    is a split to predict). Sequences longer than ``max_seq_len`` are truncated, or refused
    (``long_sequences``) with an error naming ``source``, where the examples came from."""
    if kind == SPAN:
        features = build_squad_features(
            examples, encoder, max_seq_len, DOC_STRIDE, max_query_len=min(MAX_QUERY_LEN, max_seq_len // 2)
        )
        items = [
            Item((EncodedSequence(f.input_ids, f.token_type_ids),),
                 {"start_positions": f.start_position, "end_positions": f.end_position})
            for f in features
        ]
        return Split(name, examples, items, features)
    if kind == MULTIPLE_CHOICE:
        sequences = build_choice_features(examples, encoder, max_seq_len)
    else:
        pairs = examples[0].text_b is not None
        texts_b = [e.text_b for e in examples] if pairs else None
        sequences = [(seq,) for seq in encoder.encode([e.text_a for e in examples], texts_b, max_seq_len)]
    labelled = all(e.label is not None for e in examples)
    items = [Item(tuple(seqs), {"labels": e.label} if labelled else {}) for seqs, e in zip(sequences, examples)]
    return Split(name, examples, items, truncated=_truncated(source or name, items, max_seq_len, long_sequences))


def build_choice_features(examples: list[ChoiceExample], encoder: PairEncoder, max_seq_len: int) -> list[list[EncodedSequence]]:
    """Per example, its choice sequences in ending order: ``[CLS] context [SEP] start ending [SEP]``."""
    firsts = [e.context for e in examples for _ in e.endings]
    seconds = [f"{e.start} {ending}".strip() for e in examples for ending in e.endings]
    flat = iter(encoder.encode(firsts, seconds, max_seq_len))
    return [[next(flat) for _ in e.endings] for e in examples]


def _truncated(source: str, items: list[Item], max_seq_len: int, long_sequences: str) -> int:
    """How many items lost tokens to truncation; under "refuse", an error naming the first."""
    cut = [index for index, item in enumerate(items) if any(seq.truncated_from for seq in item.sequences)]
    if cut and long_sequences == "refuse":
        length = max(seq.truncated_from or 0 for seq in items[cut[0]].sequences)
        raise InputError(source, f"example {cut[0] + 1} has {length} tokens, more than the {max_seq_len} that fit "
                         "(--max-seq-len, at most the model's max_position_embeddings); "
                         f"{len(cut)} of {len(items)} examples are too long (--long-sequences truncate cuts them)")
    return len(cut)
