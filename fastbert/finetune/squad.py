"""SQuAD v1.1 / v2.0: the JSON reader, sliding-window features and answer post-processing.

A long context is cut into overlapping windows ``[CLS] question [SEP] context-window [SEP]``.
Each window's gold start/end are token indices inside it, or 0 (the [CLS] token) when the
question has no answer (v2) or the answer is not wholly inside that window. Predictions are
scored over all windows of an example and mapped back to context characters via the
tokenizer's offsets.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .encoding import PairEncoder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Answer:
    text: str
    start: int
    """Character offset of the answer in the context."""


@dataclass(frozen=True)
class SquadExample:
    qid: str
    question: str
    context: str
    answers: tuple[Answer, ...]
    """Gold answers; empty for an unanswerable (v2) question."""


@dataclass(frozen=True)
class SquadFeature:
    """One window of one example."""

    example_index: int
    input_ids: list[int]
    token_type_ids: list[int]
    offsets: list[tuple[int, int] | None]
    """Context character span of each token; None for question and special tokens."""
    start_position: int
    end_position: int


def read_squad(path: str | os.PathLike) -> list[SquadExample]:
    """Every question of a SQuAD JSON file; a malformed entry raises :class:`InputError` naming its key."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise InputError(path, f"not valid JSON ({err.msg})", err.lineno) from None
    examples: list[SquadExample] = []
    for a, article in enumerate(_field(path, data, "data", list, "")):
        for p, paragraph in enumerate(_field(path, article, "paragraphs", list, f"data[{a}]")):
            where = f"data[{a}].paragraphs[{p}]"
            context = _field(path, paragraph, "context", str, where)
            for q, qa in enumerate(_field(path, paragraph, "qas", list, where)):
                examples.append(_read_question(path, qa, context, f"{where}.qas[{q}]"))
    return examples


def _read_question(path: str | os.PathLike, qa: dict, context: str, where: str) -> SquadExample:
    question = _field(path, qa, "question", str, where)
    if not question.strip():
        raise InputError(path, f"{where}.question: empty question")
    answers = []
    if not qa.get("is_impossible", False):
        for n, answer in enumerate(_field(path, qa, "answers", list, where)):
            text = _field(path, answer, "text", str, f"{where}.answers[{n}]")
            start = _field(path, answer, "answer_start", int, f"{where}.answers[{n}]")
            if not 0 <= start <= len(context) - len(text) or not text:
                raise InputError(path, f"{where}.answers[{n}]: answer does not lie inside the context")
            answers.append(Answer(text, start))
    return SquadExample(_field(path, qa, "id", str, where), question, context, tuple(answers))


def _field(path: str | os.PathLike, obj: object, key: str, kind: type, where: str):
    if not isinstance(obj, dict) or key not in obj:
        raise InputError(path, f"{where}{'.' if where else ''}{key}: missing")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InputError(path, f"{where}{'.' if where else ''}{key}: expected {kind.__name__}, found {type(value).__name__}")
    return value


def build_squad_features(
    examples: list[SquadExample],
    encoder: PairEncoder,
    max_seq_len: int = 384,
    doc_stride: int = 128,
    max_query_len: int = 64,
) -> list[SquadFeature]:
    """Windows over every example; ``doc_stride`` is the step between window starts, as in BERT."""
    questions = encoder.pieces([e.question for e in examples])
    contexts = encoder.pieces([e.context for e in examples])
    features: list[SquadFeature] = []
    skipped = 0
    for index, (example, question, context) in enumerate(zip(examples, questions, contexts)):
        query = question.ids[:max_query_len]
        window = max_seq_len - len(query) - 3
        answer_span = _answer_token_span(example, context.offsets)
        if example.answers and answer_span is None:
            skipped += 1  # the answer text cannot be located on token boundaries
            continue
        for start in _window_starts(len(context.ids), window, doc_stride):
            end = min(start + window, len(context.ids))
            seq = encoder.assemble(query, context.ids[start:end])
            first = len(query) + 2  # index of the window's first context token
            gold = (0, 0)
            if answer_span is not None and start <= answer_span[0] and answer_span[1] < end:
                gold = (answer_span[0] - start + first, answer_span[1] - start + first)
            offsets = [None] * first + list(context.offsets[start:end]) + [None]
            features.append(SquadFeature(index, seq.input_ids, seq.token_type_ids, offsets, *gold))
    if skipped:
        log.warning("skipped %d SQuAD questions whose answer could not be aligned to tokens", skipped)
    return features


def _window_starts(num_tokens: int, window: int, stride: int) -> list[int]:
    step = max(1, min(stride, window))
    starts = [0]
    while starts[-1] + window < num_tokens:
        starts.append(starts[-1] + step)
    return starts


def _answer_token_span(example: SquadExample, offsets: list[tuple[int, int]]) -> tuple[int, int] | None:
    """First and last context tokens covering the first gold answer (training uses one answer)."""
    if not example.answers:
        return None
    answer = example.answers[0]
    begin, end = answer.start, answer.start + len(answer.text)
    tokens = [i for i, (s, e) in enumerate(offsets) if s < end and e > begin]
    return (tokens[0], tokens[-1]) if tokens else None


def postprocess_squad(
    examples: list[SquadExample],
    features: list[SquadFeature],
    start_logits: list[np.ndarray],
    end_logits: list[np.ndarray],
    version_2: bool,
    n_best: int = 20,
    max_answer_len: int = 30,
    null_threshold: float = 0.0,
) -> dict[str, str]:
    """Predicted answer text per question id.

    The best span over all windows scores ``start + end`` logits; in v2 the empty answer wins
    when the lowest [CLS] score over the windows beats it by more than ``null_threshold``.
    """
    by_example: dict[int, list[int]] = {}
    for f, feature in enumerate(features):
        by_example.setdefault(feature.example_index, []).append(f)
    predictions: dict[str, str] = {}
    for index, example in enumerate(examples):
        best_text, best_score = "", -np.inf
        null_score = np.inf
        for f in by_example.get(index, []):
            feature, starts, ends = features[f], start_logits[f], end_logits[f]
            null_score = min(null_score, float(starts[0] + ends[0]))
            for s in np.argsort(starts)[::-1][:n_best]:
                for e in np.argsort(ends)[::-1][:n_best]:
                    if not _valid_span(feature.offsets, int(s), int(e), max_answer_len):
                        continue
                    score = float(starts[s] + ends[e])
                    if score > best_score:
                        begin, finish = feature.offsets[s][0], feature.offsets[e][1]
                        best_text, best_score = example.context[begin:finish], score
        if version_2 and null_score - best_score > null_threshold:
            best_text = ""
        predictions[example.qid] = best_text
    return predictions


def _valid_span(offsets: list[tuple[int, int] | None], start: int, end: int, max_len: int) -> bool:
    return (
        start < len(offsets)
        and end < len(offsets)
        and offsets[start] is not None
        and offsets[end] is not None
        and start <= end < start + max_len
    )
