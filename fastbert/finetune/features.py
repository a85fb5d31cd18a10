"""From a task file to model items: read, tokenize, attach the targets each head's loss takes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
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
    truncated: int = 0
    """Items with a sequence cut to max_seq_len (span tasks slide a window instead, so none)."""


def build_split(
    task: Task, name: str, path: Path, encoder: PairEncoder, max_seq_len: int, max_examples: int | None = None,
    long_sequences: str = "truncate",
) -> Split:
    """Read ``path`` (its first ``max_examples`` examples when given) and build its items;
    sequences longer than ``max_seq_len`` are truncated, or refused (``long_sequences``)."""
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
        return Split(name, path, examples, items, truncated=_truncated(path, items, max_seq_len, long_sequences))
    has_pairs = task.layout.text_b is not None
    sequences = encoder.encode(
        [e.text_a for e in examples], [e.text_b for e in examples] if has_pairs else None, max_seq_len
    )
    items = [Item((seq,), {"labels": e.label}) for seq, e in zip(sequences, examples)]
    return Split(name, path, examples, items, truncated=_truncated(path, items, max_seq_len, long_sequences))


def _truncated(path: Path, items: list[Item], max_seq_len: int, long_sequences: str) -> int:
    """How many items lost tokens to truncation; under "refuse", an error naming the first."""
    cut = [index for index, item in enumerate(items) if any(seq.truncated_from for seq in item.sequences)]
    if cut and long_sequences == "refuse":
        length = max(seq.truncated_from or 0 for seq in items[cut[0]].sequences)
        raise InputError(path, f"example {cut[0] + 1} has {length} tokens, more than the {max_seq_len} that fit "
                         "(--max-seq-len, at most the model's max_position_embeddings); "
                         f"{len(cut)} of {len(items)} examples are too long (--long-sequences truncate cuts them)")
    return len(cut)
