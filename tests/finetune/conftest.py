"""Fixtures of the fine-tuning tests."""

from __future__ import annotations

import json

import pytest

SWAG_HEADER = ",video-id,fold-ind,startphrase,sent1,sent2,gold-source,ending0,ending1,ending2,ending3,label\n"


@pytest.fixture(scope="session")
def minilm_tokenizer(minilm_dir):
    """The MiniLM checkpoint's WordPiece tokenizer (with its saved padding and truncation)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))


@pytest.fixture
def write_squad():
    """write_squad(path, version_2): a SQuAD file with a long (multi-window) and a short paragraph."""
    return _write_squad


@pytest.fixture
def swag_header() -> str:
    return SWAG_HEADER


LONG_CONTEXT = (
    "The Normans were the people who in the 10th and 11th centuries gave their name to Normandy, "
    "a region in France. They were descended from Norse raiders and pirates from Denmark, Iceland "
    "and Norway who, under their leader Rollo, agreed to swear fealty to King Charles III of West "
    "Francia. Through generations of assimilation and mixing with the native Frankish and Roman-Gaulish "
    "populations, their descendants would gradually merge with the Carolingian-based cultures of West "
    "Francia. The distinct cultural and ethnic identity of the Normans emerged initially in the first "
    "half of the 10th century, and it continued to evolve over the succeeding centuries."
)
SHORT_CONTEXT = "Super Bowl 50 was played on February 7, 2016, at Levi's Stadium in Santa Clara, California."


def _qa(qid, question, context, answer=None, impossible=False):
    answers = [] if answer is None else [{"text": answer, "answer_start": context.index(answer)}]
    entry = {"id": qid, "question": question, "answers": answers}
    if impossible:
        entry["is_impossible"] = True
    return entry


def _write_squad(path, version_2: bool):
    qas_long = [
        _qa("n1", "In what country is Normandy located?", LONG_CONTEXT, "France"),
        _qa("n2", "Who was the Norse leader?", LONG_CONTEXT, "Rollo"),
        _qa("n3", "When did their identity emerge?", LONG_CONTEXT, "first half of the 10th century"),
    ]
    qas_short = [_qa("s1", "Where was Super Bowl 50 played?", SHORT_CONTEXT, "Levi's Stadium")]
    if version_2:
        qas_short.append(_qa("s2", "Who won Super Bowl 49?", SHORT_CONTEXT, impossible=True))
    data = {
        "version": "v2.0" if version_2 else "1.1",
        "data": [
            {"title": "Normans", "paragraphs": [{"context": LONG_CONTEXT, "qas": qas_long}]},
            {"title": "Super_Bowl_50", "paragraphs": [{"context": SHORT_CONTEXT, "qas": qas_short}]},
        ],
    }
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="session")
def tiny_bert_dir(minilm_dir, tmp_path_factory):
    """A randomly initialised 2-layer BERT (hidden 128) with MiniLM's tokenizer and no dropout,
    so that runs are deterministic and fast."""
    import torch

    from fastbert.model import BertConfig, BertModel
    from fastbert.tokenizer import load_tokenizer

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_bert")
    config = BertConfig.preset("tiny", max_position_embeddings=128, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    BertModel(config).save_pretrained(path, tokenizer=load_tokenizer(minilm_dir))
    return path


@pytest.fixture
def finetune_cli():
    """finetune_cli(out, *args): run `fastbert finetune` (short, tiny-model settings) and return results.json."""
    return _finetune_cli


def _finetune_cli(out, *args):
    from fastbert.cli import main

    argv = ["finetune", "--out", str(out), "--epochs", "2", "--batch-size", "4", "--max-seq-len", "64", "--lr", "1e-3", *map(str, args)]
    assert main(argv) == 0
    return json.loads((out / "results.json").read_text())
