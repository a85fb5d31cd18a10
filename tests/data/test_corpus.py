"""Reading BERT-format corpus files."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fastbert.data.corpus import expand_corpus_paths, read_documents, split_documents
from fastbert.errors import InputError, UserError

REPO = Path(__file__).resolve().parents[2]


def test_blank_lines_separate_documents():
    text = "First sentence.\n  Second one.  \n\n\n \t\nOther document.\r\nLast line without newline"
    assert split_documents(text) == [
        ["First sentence.", "Second one."],
        ["Other document.", "Last line without newline"],
    ]


def test_documents_never_span_files(tmp_path: Path):
    (tmp_path / "a.txt").write_text("a1\na2\n")  # no trailing blank line
    (tmp_path / "b.txt").write_text("b1\n\nb2\n\n")
    assert read_documents(expand_corpus_paths([str(tmp_path / "*.txt")])) == [["a1", "a2"], ["b1"], ["b2"]]


def test_glob_without_match_is_an_error(tmp_path: Path):
    with pytest.raises(UserError, match=r"nothing\*\.txt: no corpus file matches"):
        expand_corpus_paths([str(tmp_path / "nothing*.txt")])


def test_non_utf8_error_names_the_line(tmp_path: Path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("Line one.\nLine two.\n\nNa\u00efve line.\n".encode("latin-1"))
    with pytest.raises(InputError, match=rf"^{path}:4: not UTF-8 \(byte 0xef"):
        read_documents([path])


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        ("fastbert.data.corpus", {"fastbert.data.corpus", "fastbert.errors"}),
        ("fastbert.tokenizer", {"fastbert.tokenizer", "fastbert.atomic", "fastbert.data.corpus", "fastbert.errors"}),
    ],
)
def test_the_corpus_helpers_sit_below_the_tokenizer(module: str, expected: set[str]):
    # One-way: the tokenizer reads corpora, the corpus reader never imports the tokenizer
    # (nor anything else of fastbert), so no fastbert.data module can form a cycle with it.
    code = f"import json, sys; import {module}; print(json.dumps([m for m in sys.modules if m.startswith('fastbert')]))"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert set(json.loads(done.stdout)) == {"fastbert", "fastbert.data", *expected}
