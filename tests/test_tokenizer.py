"""WordPiece tokenizer: MiniLM parity, training, transformers compatibility, bad corpus files."""

import json
import shutil
from pathlib import Path

import pytest

from fastbert.cli import main
from fastbert.data.corpus import read_documents
from fastbert.errors import InputError
from fastbert.tokenizer import load_tokenizer, save_tokenizer, tokenizer_hash, train_tokenizer

PAIRS = [
    ("The cat slept on the rug.", "It likes sleeping all day."),
    ("Anarchism is a POLITICAL philosophy!", "Its advocates reject hierarchy, as Proudhon argued in 1840."),
    ("Café naïve résumé, 東京 and the Großglockner.", "Numbers like 3.14159 and a@example.org split oddly."),
    ("unbelievably", "x"),
]


@pytest.fixture(scope="module")
def corpus_slice(shared_data: Path, tmp_path_factory) -> Path:
    documents = read_documents([shared_data / "corpus" / "wiki_00.txt"])[:15]
    path = tmp_path_factory.mktemp("tokenizer-corpus") / "wiki_00_slice.txt"
    path.write_text("".join("\n".join(document) + "\n\n" for document in documents), encoding="utf-8")
    return path


def test_minilm_pair_encoding(minilm_dir: Path):
    tokenizer = load_tokenizer(minilm_dir)
    encoding = tokenizer.backend.encode("The cat slept on the rug.", "It likes sleeping all day.")
    assert encoding.tokens == [
        "[CLS]", "the", "cat", "slept", "on", "the", "rug", ".", "[SEP]",
        "it", "likes", "sleeping", "all", "day", ".", "[SEP]",
    ]
    assert encoding.ids == [
        101, 1996, 4937, 7771, 2006, 1996, 20452, 1012, 102, 2009, 7777, 5777, 2035, 2154, 1012, 102
    ]
    assert encoding.type_ids == [0] * 9 + [1] * 7
    assert tokenizer.special_ids == (0, 100, 101, 102, 103)  # [PAD] [UNK] [CLS] [SEP] [MASK]
    assert tokenizer.vocab_size == 30522


def test_minilm_vocab_only_directory_matches_tokenizer_json(minilm_dir: Path, tmp_path: Path):
    shutil.copy(minilm_dir / "vocab.txt", tmp_path)
    shutil.copy(minilm_dir / "tokenizer_config.json", tmp_path)
    from_json, from_vocab = load_tokenizer(minilm_dir), load_tokenizer(tmp_path)
    for a, b in PAIRS:
        assert from_vocab.backend.encode(a, b).ids == from_json.backend.encode(a, b).ids
    assert tokenizer_hash(tmp_path) == tokenizer_hash(minilm_dir)


@pytest.mark.parametrize("cased", [False, True])
def test_trained_tokenizer_matches_transformers(corpus_slice: Path, tmp_path: Path, cased: bool):
    transformers = pytest.importorskip("transformers")
    out = tmp_path / "tok"
    assert main(["tokenizer", "train", "--corpus", str(corpus_slice), "--vocab-size", "2000", "--out", str(out)]
                + (["--cased"] if cased else [])) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"
    ]
    ours = load_tokenizer(out)
    assert ours.special_ids == (0, 1, 2, 3, 4)  # [PAD] [UNK] [CLS] [SEP] [MASK]
    assert ours.vocab_size == 2000
    assert ours.lowercase is not cased
    reference = transformers.BertTokenizerFast.from_pretrained(out)
    for a, b in PAIRS:
        encoding = ours.backend.encode(a, b)
        expected = reference(a, b)
        assert encoding.ids == expected["input_ids"]
        assert encoding.type_ids == expected["token_type_ids"]
    assert any(token != token.lower() for token in ours.vocab()[len(ours.special_ids):]) is cased
    assert any(token.startswith("##") for token in ours.vocab())


def test_save_and_hash_round_trip(corpus_slice: Path, tmp_path: Path):
    lower = train_tokenizer([corpus_slice], 1000, lowercase=True, out_dir=tmp_path / "lower")
    cased = train_tokenizer([corpus_slice], 1000, lowercase=False, out_dir=tmp_path / "cased")
    save_tokenizer(lower, tmp_path / "copy", model_max_length=512)
    assert tokenizer_hash(tmp_path / "copy") == tokenizer_hash(lower) == tokenizer_hash(tmp_path / "lower")
    assert tokenizer_hash(cased) != tokenizer_hash(lower)
    config = json.loads((tmp_path / "copy" / "tokenizer_config.json").read_text())
    assert config["do_lower_case"] is True and config["model_max_length"] == 512


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "corpus file not found"),
        (b"", "corpus file is empty"),
        (b"A good first line.\n\xff\xfe broken bytes\n", ":2: not UTF-8"),
    ],
    ids=["missing", "empty", "not-utf8"],
)
def test_bad_corpus_is_one_line_error(tmp_path: Path, capsys, content: bytes | None, expected: str):
    corpus = tmp_path / "corpus.txt"
    if content is not None:
        corpus.write_bytes(content)
    out = tmp_path / "tok"
    with pytest.raises(InputError, match=str(corpus)):
        train_tokenizer([corpus], 100, lowercase=True, out_dir=tmp_path / "api")
    capsys.readouterr()
    assert main(["tokenizer", "train", "--corpus", str(corpus), "--vocab-size", "100", "--out", str(out)]) == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and str(corpus) in stderr and expected in stderr
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name != "corpus.txt"] == []
