"""Dev-set evaluation and test-set predictions: batched inference through the engine.

Predictions are written in GLUE's submission format: a header ``index\tprediction``, then
one row per example with its id (the file's index column, else its position) and the
predicted class name, score or choice index.
"""

from __future__ import annotations

import numpy as np
import torch

from ..train.engines import Engine
from .collate import Item, collate
from .examples import LabelNames
from .features import Split
from .metrics import label_metrics, squad_metrics
from .squad import postprocess_squad
from .tasks import REGRESSION, SPAN, Task

TARGET_KEYS = ("labels", "start_positions", "end_positions")


def predict(engine: Engine, items: list[Item], batch_size: int, kind: str) -> list[np.ndarray]:
    """Raw outputs per item: class logits, a regression score, choice scores, or (span) start/end logits."""
    outputs: list[np.ndarray] = []
    for begin in range(0, len(items), batch_size):
        batch = collate(items[begin : begin + batch_size])
        for key in TARGET_KEYS:
            batch.targets.pop(key, None)
        result = engine.forward(batch)
        if kind == SPAN:
            bounds = batch.inputs.layout.cu_seqlens.tolist()
            logits = torch.stack([result.start_logits, result.end_logits], dim=1).float().cpu().numpy()
            outputs.extend(logits[b:e] for b, e in zip(bounds[:-1], bounds[1:]))
        else:
            outputs.extend(result.logits.float().cpu().numpy())
    return outputs


def evaluate(engine: Engine, task: Task, split: Split, batch_size: int) -> dict[str, float]:
    """The task's metrics on one split."""
    outputs = predict(engine, split.items, batch_size, task.kind)
    if task.kind == SPAN:
        predictions = postprocess_squad(
            split.examples,
            split.squad_features,
            [o[:, 0] for o in outputs],
            [o[:, 1] for o in outputs],
            version_2=task.version_2,
        )
        gold = {e.qid: [a.text for a in e.answers] for e in split.examples}
        return squad_metrics(predictions, gold, version_2=task.version_2)
    return label_metrics(task.metrics, _predicted(task.kind, outputs), np.array([e.label for e in split.examples]))


def submission(engine: Engine, kind: str, split: Split, batch_size: int, labels: LabelNames | None) -> str:
    """The predictions for ``split`` as a GLUE submission TSV."""
    predicted = _predicted(kind, predict(engine, split.items, batch_size, kind))
    rows = ["index\tprediction"]
    for position, (example, value) in enumerate(zip(split.examples, predicted)):
        shown = f"{value:.3f}" if kind == REGRESSION else labels.names[value] if labels is not None else str(value)
        rows.append(f"{example.index if example.index is not None else position}\t{shown}")
    return "\n".join(rows) + "\n"


def _predicted(kind: str, outputs: list[np.ndarray]) -> np.ndarray:
    """Regression scores, else the highest-scoring class or choice."""
    scores = np.stack(outputs)
    return scores[:, 0] if kind == REGRESSION else scores.argmax(axis=1)
