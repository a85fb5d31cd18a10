"""Task metrics: GLUE's (in numpy) and SQuAD's exact match and F1.

The GLUE metrics are a few lines each, written here so that ``fastbert finetune`` needs no
scikit-learn or scipy; the tests check them against both where they are installed.
Undefined cases follow scikit-learn (MCC and F1 are 0 without the counts they divide by)
and scipy (a correlation with a constant input is nan).

SQuAD scoring follows the official evaluation scripts: answers are normalised (lower case,
no punctuation, no articles a/an/the, single spaces); a question scores the best match over
its gold answers; an unanswerable (v2.0) question's only gold answer is "". The two scripts
differ where both answers normalise to nothing (v1.1 dev has three "." golds): v2.0 counts
that F1 as 1, v1.1 as 0 (no tokens, no overlap).
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Callable, Iterable, Mapping

import numpy as np


def confusion_matrix(predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Counts [true class, predicted class] over the classes occurring in either."""
    classes, codes = np.unique(np.concatenate([labels, predictions]), return_inverse=True)
    true, predicted = codes[: len(labels)], codes[len(labels) :]
    counts = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(counts, (true, predicted), 1)
    return counts


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(predictions == labels))


def matthews_corrcoef(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Matthews correlation (the multi-class form, which is the usual one for two classes)."""
    counts = confusion_matrix(predictions, labels).astype(np.float64)
    true, predicted, correct, total = counts.sum(1), counts.sum(0), np.trace(counts), counts.sum()
    denominator = np.sqrt((total**2 - predicted @ predicted) * (total**2 - true @ true))
    return float((correct * total - true @ predicted) / denominator) if denominator else 0.0


def f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    """F1 of the positive class 1 (GLUE's MRPC and QQP)."""
    true_positive = np.sum((predictions == 1) & (labels == 1))
    wrong = np.sum(predictions != labels)
    return float(2 * true_positive / (2 * true_positive + wrong)) if true_positive + wrong else 0.0


def macro_f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Unweighted mean of every class's F1 (no class is "positive" in a user's label set)."""
    counts = confusion_matrix(predictions, labels)
    true_positive = np.diag(counts)
    denominator = counts.sum(0) + counts.sum(1)  # 2 tp + fp + fn per class
    return float(np.mean(2 * true_positive / denominator))  # every class occurs, so no zero denominator


def pearson(predictions: np.ndarray, labels: np.ndarray) -> float:
    x, y = predictions - predictions.mean(), labels - labels.mean()
    denominator = np.sqrt((x @ x) * (y @ y))
    return float(x @ y / denominator) if denominator else float("nan")


def spearman(predictions: np.ndarray, labels: np.ndarray) -> float:
    return pearson(average_ranks(predictions), average_ranks(labels))


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, tied values sharing the mean of their ranks (what Spearman's rho correlates)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    run_starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    run_ends = np.r_[run_starts[1:], len(values)]
    run_of = np.repeat(np.arange(len(run_starts)), run_ends - run_starts)
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = ((run_starts + run_ends + 1) / 2)[run_of]
    return ranks


LABEL_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "mcc": matthews_corrcoef,
    "accuracy": accuracy,
    "f1": f1,
    "macro_f1": macro_f1,
    "pearson": pearson,
    "spearman": spearman,
}


def label_metrics(names: Iterable[str], predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Named metrics of predicted classes (or regression scores) against the gold labels."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.dtype.kind == "f" or labels.dtype.kind == "f":
        predictions, labels = predictions.astype(np.float64), labels.astype(np.float64)
    return {name: LABEL_METRICS[name](predictions, labels) for name in names}


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str, version_2: bool = True) -> float:
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not predicted or not expected:  # v2.0: an empty answer matches only an empty answer
        return float(version_2 and predicted == expected)
    common = sum((collections.Counter(predicted) & collections.Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def squad_metrics(predictions: Mapping[str, str], gold_answers: Mapping[str, list[str]], *, version_2: bool) -> dict[str, float]:
    """Exact match and F1 in percent over the questions of ``gold_answers``; "" is the no-answer gold (v2.0)."""
    em = f1_sum = 0.0
    for qid, golds in gold_answers.items():
        if qid not in predictions:  # the official script scores an unanswered question 0
            continue
        golds = golds or [""]
        prediction = predictions[qid]
        em += max(exact_match(prediction, g) for g in golds)
        f1_sum += max(token_f1(prediction, g, version_2) for g in golds)
    count = max(len(gold_answers), 1)
    return {"exact_match": 100.0 * em / count, "f1": 100.0 * f1_sum / count}
