"""SQuAD v1.1 on the official dev set (../shared/data/squad): reader, features, post-processing, metric.

The whole file is read and scored with trivial predictors whose scores are known; features
are built on a few articles and their gold spans must map back to the answer text.
"""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest

from fastbert.finetune.encoding import PairEncoder
from fastbert.finetune.metrics import normalize_answer, squad_metrics
from fastbert.finetune.squad import build_squad_features, postprocess_squad, read_squad

DEV_SHA256 = "95aa6a52d5d6a735563366753ca50492a658031da74f301ac5238b03966972c9"  # the published digest


@pytest.fixture(scope="module")
def dev_file(shared_data):
    path = shared_data / "squad" / "dev-v1.1.json"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == DEV_SHA256
    return path


@pytest.fixture(scope="module")
def dev(dev_file):
    return read_squad(dev_file)


def _gold(examples):
    return {e.qid: [a.text for a in e.answers] for e in examples}


def _first_sentences(examples):
    """The trivial baseline: every question answered with the first sentence of its paragraph."""
    return {e.qid: re.split(r"(?<=[.!?])\s", e.context, maxsplit=1)[0] for e in examples}


def test_reads_every_question(dev_file, dev):
    articles = json.loads(dev_file.read_text())["data"]
    assert len(articles) == 48 and sum(len(a["paragraphs"]) for a in articles) == 2067
    assert len(dev) == 10570 and len({e.qid for e in dev}) == 10570
    assert all(e.answers and e.context[a.start : a.start + len(a.text)] == a.text for e in dev for a in e.answers)


def test_trivial_predictors_score_as_the_official_script(dev):
    gold = _gold(dev)
    assert squad_metrics({e.qid: e.answers[0].text for e in dev}, gold, version_2=False) == {"exact_match": 100.0, "f1": 100.0}
    # Three gold answers are "." (normalised to nothing): v1.1's script counts an empty
    # prediction as an exact match there, and its F1 as 0.
    dots = sum(any(not normalize_answer(g) for g in golds) for golds in gold.values())
    assert dots == 3
    assert squad_metrics({e.qid: "" for e in dev}, gold, version_2=False) == {"exact_match": 100.0 * dots / 10570, "f1": 0.0}
    assert squad_metrics(_first_sentences(dev), gold, version_2=False)["f1"] == pytest.approx(9.7546, abs=1e-4)


def test_features_and_postprocessing_on_a_few_articles(dev_file, minilm_tokenizer):
    articles = json.loads(dev_file.read_text())["data"]
    titles = {"Southern_California", "Computational_complexity_theory"}
    qids = {qa["id"] for a in articles if a["title"] in titles for p in a["paragraphs"] for qa in p["qas"]}
    examples = [e for e in read_squad(dev_file) if e.qid in qids]
    assert len(examples) > 300
    encoder = PairEncoder(minilm_tokenizer)
    features = build_squad_features(examples, encoder, max_seq_len=128, doc_stride=64, max_query_len=32)
    assert all(len(f.input_ids) <= 128 for f in features) and len(features) > len(examples)  # long paragraphs need windows
    labelled = [f for f in features if f.start_position]
    assert len({f.example_index for f in labelled}) == len(examples)  # every answer lies wholly inside some window
    for f in labelled:
        span = examples[f.example_index].context[f.offsets[f.start_position][0] : f.offsets[f.end_position][1]]
        assert span == examples[f.example_index].answers[0].text
    # Gold-position logits through the real post-processing: every question answered from some window.
    starts, ends = [], []
    for f in features:
        start, end = np.full(len(f.input_ids), -5.0), np.full(len(f.input_ids), -5.0)
        start[f.start_position] = end[f.end_position] = 5.0 if f.start_position else -5.0
        starts.append(start)
        ends.append(end)
    predictions = postprocess_squad(examples, features, starts, ends, version_2=False)
    scores = squad_metrics(predictions, _gold(examples), version_2=False)
    assert scores == {"exact_match": 100.0, "f1": 100.0}


TRAIN_ARTICLES = ("Normans", "Packet_switching", "Black_Death")  # 326 questions
EVAL_ARTICLE = "Sky_(United_Kingdom)"  # 108 questions, no paragraph shared with training


def test_a_short_fine_tune_beats_answering_with_the_first_sentence(dev_file, minilm_dir, tmp_path):
    """MiniLM fine-tuned for two epochs on three articles' questions, scored on a fourth article by the
    real post-processing and metric, against the paragraph's first sentence as every answer."""
    from fastbert.finetune.config import FinetuneConfig
    from fastbert.finetune.runner import run_finetune
    from fastbert.train.config import OptimizerConfig

    data = json.loads(dev_file.read_text())
    by_title = {article["title"]: article for article in data["data"]}
    data_dir = tmp_path / "squad"
    data_dir.mkdir()
    for name, titles in (("train-v1.1.json", TRAIN_ARTICLES), ("dev-v1.1.json", (EVAL_ARTICLE,))):
        part = {"version": data["version"], "data": [by_title[title] for title in titles]}
        (data_dir / name).write_text(json.dumps(part), encoding="utf-8")
    config = FinetuneConfig(task="squad", data_dir=data_dir, init=str(minilm_dir), out=tmp_path / "out", seeds=(1,),
                            optim=OptimizerConfig(lr=1e-4, warmup_ratio=0.1, weight_decay=0.01), epochs=2,
                            batch_size=16, max_seq_len=192)
    scores = run_finetune(config)["runs"][0]["best"]["eval"]["dev"]
    held_out = read_squad(data_dir / "dev-v1.1.json")
    baseline = squad_metrics(_first_sentences(held_out), _gold(held_out), version_2=False)
    # Measured: EM 6.5, F1 13.9 against the first sentence's EM 0.0, F1 8.3 (two epochs of 326 questions).
    assert scores["f1"] > baseline["f1"] + 3 and scores["exact_match"] > baseline["exact_match"] + 3, (scores, baseline)
