"""SQuAD reading, sliding-window features and post-processing on a hand-made file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fastbert.errors import InputError
from fastbert.finetune.encoding import PairEncoder
from fastbert.finetune.metrics import squad_metrics
from fastbert.finetune.squad import build_squad_features, postprocess_squad, read_squad

@pytest.fixture
def encoder(minilm_tokenizer):
    return PairEncoder(minilm_tokenizer)


def test_reader(tmp_path, write_squad):
    examples = read_squad(write_squad(tmp_path / "dev.json", version_2=True))
    assert [e.qid for e in examples] == ["n1", "n2", "n3", "s1", "s2"]
    assert examples[3].answers[0].text == "Levi's Stadium"
    assert examples[4].answers == ()


def test_gold_tokens_map_back_to_the_answer(tmp_path, encoder, write_squad):
    examples = read_squad(write_squad(tmp_path / "train.json", version_2=False))
    features = build_squad_features(examples, encoder, max_seq_len=48, doc_stride=16, max_query_len=16)
    windows = [f for f in features if f.example_index == 0]
    assert len(windows) > 2, "the long context must need several windows"
    for feature in features:
        assert len(feature.input_ids) <= 48
        assert feature.input_ids[0] == encoder.cls_id and feature.input_ids[-1] == encoder.sep_id
        assert len(feature.offsets) == len(feature.input_ids) == len(feature.token_type_ids)
    for index, example in enumerate(examples):
        labelled = [f for f in features if f.example_index == index and f.start_position > 0]
        assert labelled, f"no window holds the answer of {example.qid}"
        for feature in labelled:
            begin = feature.offsets[feature.start_position][0]
            end = feature.offsets[feature.end_position][1]
            assert example.context[begin:end] == example.answers[0].text


def _perfect_logits(features):
    starts, ends = [], []
    for feature in features:
        start, end = np.full(len(feature.input_ids), -10.0), np.full(len(feature.input_ids), -10.0)
        start[feature.start_position] = end[feature.end_position] = 10.0
        starts.append(start)
        ends.append(end)
    return starts, ends


@pytest.mark.parametrize("version_2", [False, True])
def test_perfect_logits_score_100(tmp_path, encoder, version_2, write_squad):
    examples = read_squad(write_squad(tmp_path / "dev.json", version_2))
    features = build_squad_features(examples, encoder, max_seq_len=48, doc_stride=16, max_query_len=16)
    predictions = postprocess_squad(examples, features, *_perfect_logits(features), version_2=version_2)
    gold = {e.qid: [a.text for a in e.answers] for e in examples}
    assert squad_metrics(predictions, gold, version_2=version_2) == {"exact_match": 100.0, "f1": 100.0}
    if version_2:
        assert predictions["s2"] == ""


def test_postprocess_respects_max_answer_length(tmp_path, encoder, write_squad):
    examples = read_squad(write_squad(tmp_path / "dev.json", version_2=False))[3:4]
    features = build_squad_features(examples, encoder, max_seq_len=64)
    (feature,) = features
    start, end = np.zeros(len(feature.input_ids)), np.zeros(len(feature.input_ids))
    first_context = feature.token_type_ids.index(1)
    start[first_context] = end[len(end) - 2] = 5.0  # the whole context: too long for max_answer_len=3
    start[feature.start_position] = end[feature.end_position] = 1.0
    predictions = postprocess_squad(examples, features, [start], [end], version_2=False, max_answer_len=3)
    assert predictions["s1"] != examples[0].context
    assert len(predictions["s1"].split()) <= 3


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["data"][0]["paragraphs"][0]["qas"][0].pop("question"), r"data\[0\]\.paragraphs\[0\]\.qas\[0\]\.question: missing"),
        (lambda d: d["data"][1]["paragraphs"][0]["qas"][0]["answers"][0].update(answer_start=10_000), "answer does not lie inside"),
        (lambda d: d["data"][0].update(paragraphs="oops"), r"data\[0\]\.paragraphs: expected list"),
    ],
)
def test_bad_entries_name_their_key(tmp_path, mutate, message, write_squad):
    path = write_squad(tmp_path / "bad.json", version_2=False)
    data = json.loads(path.read_text())
    mutate(data)
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match=message):
        read_squad(path)


def test_invalid_json_names_the_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"data": [\n  {"title": "x",\n  oops}\n]}')
    with pytest.raises(InputError) as info:
        read_squad(path)
    assert str(info.value).startswith(f"{path}:3: not valid JSON")
