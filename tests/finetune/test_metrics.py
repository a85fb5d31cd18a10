"""Metrics on hand-made cases with known answers, and against scikit-learn and scipy where installed."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fastbert.finetune.metrics import label_metrics, normalize_answer, squad_metrics, token_f1


def test_label_metrics_by_hand():
    # tp=2, tn=1, fp=1, fn=1: mcc = (2*1 - 1*1) / sqrt(3*3*2*2) = 1/6
    got = label_metrics(["mcc", "accuracy", "f1"], [1, 1, 0, 1, 0], [1, 1, 0, 0, 1])
    assert got["mcc"] == pytest.approx(1 / 6)
    assert got["accuracy"] == pytest.approx(3 / 5)
    assert got["f1"] == pytest.approx(2 / 3)


def test_correlations():
    got = label_metrics(["pearson", "spearman"], [1.0, 2.0, 3.0, 10.0], [0.5, 1.0, 1.5, 2.0])
    assert got["spearman"] == pytest.approx(1.0)
    assert 0.8 < got["pearson"] < 1.0
    anti = label_metrics(["pearson"], [1.0, 2.0, 3.0], [3.0, 2.0, 1.0])
    assert anti["pearson"] == pytest.approx(-1.0)


def test_normalize_answer():
    assert normalize_answer("  The Eiffel-Tower, in PARIS!  ") == "eiffeltower in paris"
    assert normalize_answer("an apple a day") == "apple day"
    assert normalize_answer("theater") == "theater"  # articles only as whole words


def test_token_f1_partial_overlap():
    # prediction "denver broncos team" vs gold "broncos": p=1/3, r=1 -> f1=0.5
    assert token_f1("Denver Broncos team", "the Broncos") == pytest.approx(0.5)
    assert token_f1("", "") == 1.0
    assert token_f1("something", "") == 0.0
    assert token_f1("", ".", version_2=False) == 0.0  # v1.1's script: no tokens, no overlap
    assert token_f1("", ".", version_2=True) == 1.0


def test_squad_metrics_max_over_golds_and_no_answer():
    gold = {
        "q1": ["Denver Broncos", "The Denver Broncos"],
        "q2": ["Carolina Panthers"],
        "q3": [],  # unanswerable (v2)
        "q4": [],
        "q5": ["Santa Clara"],  # not predicted: scores 0
    }
    predictions = {"q1": "the denver broncos.", "q2": "Panthers", "q3": "", "q4": "Levi's Stadium"}
    got = squad_metrics(predictions, gold, version_2=True)
    assert got["exact_match"] == pytest.approx(100 * 2 / 5)
    f1_q2 = 2 * 1 * 0.5 / 1.5
    assert got["f1"] == pytest.approx(100 * (1 + f1_q2 + 1 + 0 + 0) / 5)
    assert not math.isnan(got["f1"])


def test_macro_f1_by_hand():
    # class 0: tp 1, fn 1; class 1: tp 1, fp 1, fn 1; class 2: only predicted, f1 0
    got = label_metrics(["macro_f1", "accuracy"], [0, 1, 1, 2], [0, 0, 1, 1])
    f1_0 = 2 * 1 / (2 * 1 + 0 + 1)
    f1_1 = 2 * 1 / (2 * 1 + 1 + 1)
    assert got["macro_f1"] == pytest.approx((f1_0 + f1_1 + 0.0) / 3)


def test_undefined_cases_follow_sklearn_and_scipy():
    assert label_metrics(["mcc", "f1"], [0, 0, 0], [0, 0, 0]) == {"mcc": 0.0, "f1": 0.0}
    assert math.isnan(label_metrics(["pearson"], [1.0, 1.0, 1.0], [0.0, 1.0, 2.0])["pearson"])


@pytest.mark.parametrize("rows", [1, 7, 130])
@pytest.mark.parametrize("classes", [2, 3, 5])
def test_classification_metrics_equal_sklearn(rows, classes):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(rows * classes)
    labels, predictions = rng.integers(0, classes, rows), rng.integers(0, classes, rows)
    got = label_metrics(["mcc", "accuracy", "macro_f1"], predictions, labels)
    assert got["mcc"] == pytest.approx(sklearn_metrics.matthews_corrcoef(labels, predictions), abs=1e-12)
    assert got["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(labels, predictions), abs=1e-12)
    assert got["macro_f1"] == pytest.approx(sklearn_metrics.f1_score(labels, predictions, average="macro"), abs=1e-12)
    if classes == 2:
        expected = sklearn_metrics.f1_score(labels, predictions, zero_division=0)
        assert label_metrics(["f1"], predictions, labels)["f1"] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("ties", [False, True])
def test_correlations_equal_scipy(ties):
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 6, 130).astype(float) if ties else rng.normal(size=130)  # STS-B-like ties
    predictions = np.round(labels + rng.normal(size=130), 1 if ties else 6)
    got = label_metrics(["pearson", "spearman"], predictions, labels)
    assert got["pearson"] == pytest.approx(stats.pearsonr(predictions, labels)[0], abs=1e-12)
    assert got["spearman"] == pytest.approx(stats.spearmanr(predictions, labels)[0], abs=1e-12)
