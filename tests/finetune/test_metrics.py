"""Metrics on hand-made cases with known answers."""

from __future__ import annotations

import math

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


def test_squad_metrics_max_over_golds_and_no_answer():
    gold = {
        "q1": ["Denver Broncos", "The Denver Broncos"],
        "q2": ["Carolina Panthers"],
        "q3": [],  # unanswerable (v2)
        "q4": [],
        "q5": ["Santa Clara"],  # not predicted: scores 0
    }
    predictions = {"q1": "the denver broncos.", "q2": "Panthers", "q3": "", "q4": "Levi's Stadium"}
    got = squad_metrics(predictions, gold)
    assert got["exact_match"] == pytest.approx(100 * 2 / 5)
    f1_q2 = 2 * 1 * 0.5 / 1.5
    assert got["f1"] == pytest.approx(100 * (1 + f1_q2 + 1 + 0 + 0) / 5)
    assert not math.isnan(got["f1"])
