"""From a task file to model items: read, tokenize, attach the targets each head's loss takes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .collate import Item
from .encoding import EncodedSequence, PairEncoder
from .squad import SquadFeature, build_squad_features
from .swag import build_swag_features
from .tasks import MULTIPLE_CHOICE, SPAN, Task

MAX_QUERY_LEN = 64
DOC_STRIDE = 128


@dataclass
class Split:
    """One file of a task, read and tokenized."""

    name: str
    path: Path
    examples: list
    items: list[Item]
    squad_features: list[SquadFeature] | None = None
    """The windows behind ``items`` (span tasks), needed to map predictions back to text."""


def build_split(
    task: Task, name: str, path: Path, encoder: PairEncoder, max_seq_len: int, max_examples: int | None = None
) -> Split:
    """Read ``path`` (its first ``max_examples`` examples when given) and build its items."""
    examples = task.read(path)[:max_examples]
    if task.kind == SPAN:
        features = build_squad_features(
            examples, encoder, max_seq_len, DOC_STRIDE, max_query_len=min(MAX_QUERY_LEN, max_seq_len // 2)
        )
        items = [
            Item((EncodedSequence(f.input_ids, f.token_type_ids),),
                 {"start_positions": f.start_position, "end_positions": f.end_position})
            for f in features
        ]
        return Split(name, path, examples, items, features)
    if task.kind == MULTIPLE_CHOICE:
        choices = build_swag_features(examples, encoder, max_seq_len)
        items = [Item(tuple(seqs), {"labels": e.label}) for seqs, e in zip(choices, examples)]
        return Split(name, path, examples, items)
    has_pairs = task.layout.text_b is not None
    sequences = encoder.encode(
        [e.text_a for e in examples], [e.text_b for e in examples] if has_pairs else None, max_seq_len
    )
    items = [Item((seq,), {"labels": e.label}) for seq, e in zip(sequences, examples)]
    return Split(name, path, examples, items)
