"""Task metrics: GLUE's (via scikit-learn and scipy) and SQuAD's exact match and F1.

SQuAD scoring follows the official evaluation script's definition: answers are normalised
(lower case, no punctuation, no articles a/an/the, single spaces); a question scores the
best match over its gold answers; an unanswerable question's only gold answer is "".
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Callable, Iterable, Mapping

import numpy as np


def _mcc(predictions: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import matthews_corrcoef

    return float(matthews_corrcoef(labels, predictions))


def _accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(labels, predictions))


def _f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(labels, predictions))


def _pearson(predictions: np.ndarray, labels: np.ndarray) -> float:
    from scipy.stats import pearsonr

    return float(pearsonr(predictions, labels)[0])


def _spearman(predictions: np.ndarray, labels: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(predictions, labels)[0])


LABEL_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "mcc": _mcc,
    "accuracy": _accuracy,
    "f1": _f1,
    "pearson": _pearson,
    "spearman": _spearman,
}


def label_metrics(names: Iterable[str], predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Named metrics of predicted classes (or regression scores) against the gold labels."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    return {name: LABEL_METRICS[name](predictions, labels) for name in names}


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not predicted or not expected:  # an empty answer matches only an empty answer
        return float(predicted == expected)
    common = sum((collections.Counter(predicted) & collections.Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def squad_metrics(predictions: Mapping[str, str], gold_answers: Mapping[str, list[str]]) -> dict[str, float]:
    """Exact match and F1 in percent over the questions of ``gold_answers``; "" is the no-answer gold."""
    em = f1 = 0.0
    for qid, golds in gold_answers.items():
        if qid not in predictions:  # the official script scores an unanswered question 0
            continue
        golds = golds or [""]
        prediction = predictions[qid]
        em += max(exact_match(prediction, g) for g in golds)
        f1 += max(token_f1(prediction, g) for g in golds)
    count = max(len(gold_answers), 1)
    return {"exact_match": 100.0 * em / count, "f1": 100.0 * f1 / count}
