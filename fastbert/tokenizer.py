"""WordPiece tokenizer: train, load and save BERT tokenizers with HF ``tokenizers``.

A tokenizer directory is a HuggingFace BERT tokenizer directory (vocab.txt,
tokenizer.json, tokenizer_config.json, special_tokens_map.json), so that
``transformers.BertTokenizerFast.from_pretrained(dir)`` encodes exactly as we do.

Command: ``fastbert tokenizer train --corpus FILE_OR_GLOB... --vocab-size N [--cased] --out DIR``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from .atomic import staging_directory
from .data.corpus import check_corpus_file, expand_corpus_paths
from .errors import InputError, UserError

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
# The order fixes the ids of a freshly trained vocabulary: [PAD] must be 0.
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)
SUBWORD_PREFIX = "##"


@dataclass(frozen=True)
class WordPieceTokenizer:
    """A ``tokenizers.Tokenizer`` plus the ids BERT training needs."""

    backend: Tokenizer
    pad_id: int
    unk_id: int
    cls_id: int
    sep_id: int
    mask_id: int

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    @property
    def special_ids(self) -> tuple[int, ...]:
        return (self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id)

    @property
    def lowercase(self) -> bool:
        normalizer = json.loads(self.backend.to_str())["normalizer"] or {}
        return bool(normalizer.get("lowercase", False))

    def vocab(self) -> list[str]:
        """Tokens ordered by id."""
        by_id = sorted(self.backend.get_vocab(with_added_tokens=True).items(), key=lambda item: item[1])
        return [token for token, _ in by_id]

    def continuation_mask(self) -> np.ndarray:
        """bool [vocab_size]: True for '##' word-continuation pieces (whole-word masking needs it)."""
        return np.array([token.startswith(SUBWORD_PREFIX) for token in self.vocab()], dtype=bool)

    def reserved_mask(self) -> np.ndarray:
        """bool [vocab_size]: special tokens and reserved '[unusedN]'-style slots, never a masking replacement."""
        return np.array([len(t) > 2 and t.startswith("[") and t.endswith("]") for t in self.vocab()], dtype=bool)


def build_tokenizer(vocab: dict[str, int], lowercase: bool) -> Tokenizer:
    """The BERT pipeline around a WordPiece vocabulary: normalizer, pre-tokenizer, pair template, decoder."""
    for token in SPECIAL_TOKENS:
        if token not in vocab:
            raise UserError(f"the vocabulary lacks the special token {token}")
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token=UNK, continuing_subword_prefix=SUBWORD_PREFIX))
    _configure_pipeline(tokenizer, lowercase)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}",
        pair=f"{CLS} $A {SEP} $B:1 {SEP}:1",
        special_tokens=[(CLS, vocab[CLS]), (SEP, vocab[SEP])],
    )
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    return tokenizer


def _configure_pipeline(tokenizer: Tokenizer, lowercase: bool) -> None:
    # strip_accents=None follows lowercase, as in BERT's BasicTokenizer.
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix=SUBWORD_PREFIX)


def wrap(tokenizer: Tokenizer, source: str | os.PathLike = "tokenizer") -> WordPieceTokenizer:
    """Look up the special-token ids; padding and truncation are switched off (callers decide lengths)."""
    tokenizer.no_padding()
    tokenizer.no_truncation()
    ids = {}
    for token in SPECIAL_TOKENS:
        token_id = tokenizer.token_to_id(token)
        if token_id is None:
            raise InputError(source, f"the vocabulary lacks the special token {token}")
        ids[token] = token_id
    return WordPieceTokenizer(tokenizer, ids[PAD], ids[UNK], ids[CLS], ids[SEP], ids[MASK])


def load_tokenizer(directory: str | os.PathLike) -> WordPieceTokenizer:
    """Load the tokenizer of a HF BERT directory: tokenizer.json, else vocab.txt + tokenizer_config.json."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"{directory}: tokenizer directory not found")
    tokenizer_json = directory / "tokenizer.json"
    if tokenizer_json.is_file():
        try:
            return wrap(Tokenizer.from_file(str(tokenizer_json)), tokenizer_json)
        except Exception as err:  # tokenizers raises plain Exception on malformed JSON
            raise InputError(tokenizer_json, f"not a valid tokenizers file ({err})") from None
    vocab_txt = directory / "vocab.txt"
    if not vocab_txt.is_file():
        raise UserError(f"{directory}: no tokenizer.json or vocab.txt (expected a BERT tokenizer directory)")
    vocab = _read_vocab(vocab_txt)
    lowercase = _read_do_lower_case(directory / "tokenizer_config.json")
    return wrap(build_tokenizer(vocab, lowercase), vocab_txt)


def _read_vocab(path: Path) -> dict[str, int]:
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as err:
        raise InputError(path, f"not UTF-8 ({err.reason})") from None
    if lines and lines[-1] == "":
        lines.pop()
    vocab: dict[str, int] = {}
    for number, token in enumerate(lines, start=1):
        token = token.rstrip("\r")
        if token in vocab:
            raise InputError(path, f"duplicate token {token!r}", line=number)
        vocab[token] = number - 1
    return vocab


def _read_do_lower_case(path: Path) -> bool:
    """transformers' default is lowercase when the config is absent or silent."""
    if not path.is_file():
        return True
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(path, f"not valid JSON ({err})") from None
    return bool(config.get("do_lower_case", True))


def train_tokenizer(
    files: list[str | os.PathLike], vocab_size: int, lowercase: bool, out_dir: str | os.PathLike
) -> WordPieceTokenizer:
    """Train a WordPiece vocabulary on corpus files and save it as a BERT tokenizer directory."""
    if vocab_size <= len(SPECIAL_TOKENS):
        raise UserError(f"--vocab-size must exceed {len(SPECIAL_TOKENS)} (the special tokens), got {vocab_size}")
    for path in files:
        check_corpus_file(path)
    tokenizer = Tokenizer(models.WordPiece(unk_token=UNK, continuing_subword_prefix=SUBWORD_PREFIX))
    _configure_pipeline(tokenizer, lowercase)
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        continuing_subword_prefix=SUBWORD_PREFIX,
        show_progress=False,
    )
    tokenizer.train([os.fspath(path) for path in files], trainer)
    # Rebuild from the learned vocabulary so a trained and a loaded tokenizer are the same object.
    trained = wrap(build_tokenizer(tokenizer.get_vocab(), lowercase))
    save_tokenizer(trained, out_dir)
    return trained


def save_tokenizer(
    tokenizer: WordPieceTokenizer, directory: str | os.PathLike, model_max_length: int | None = None
) -> None:
    """Write vocab.txt, tokenizer.json, tokenizer_config.json and special_tokens_map.json into directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("".join(token + "\n" for token in tokenizer.vocab()), encoding="utf-8")
    tokenizer.backend.save(str(directory / "tokenizer.json"))
    special_map = {"unk_token": UNK, "sep_token": SEP, "pad_token": PAD, "cls_token": CLS, "mask_token": MASK}
    config = {
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": tokenizer.lowercase,
        "tokenize_chinese_chars": True,
        "strip_accents": None,
        **special_map,
    }
    if model_max_length is not None:
        config["model_max_length"] = model_max_length
    _write_json(directory / "tokenizer_config.json", config)
    _write_json(directory / "special_tokens_map.json", special_map)


def _write_json(path: Path, content: dict) -> None:
    path.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")


def tokenizer_hash(tokenizer_or_dir: WordPieceTokenizer | str | os.PathLike) -> str:
    """sha256 over what decides encodings (normalizer, pre-tokenizer, vocabulary, template), not file layout."""
    if isinstance(tokenizer_or_dir, WordPieceTokenizer):
        tokenizer = tokenizer_or_dir
    else:
        tokenizer = load_tokenizer(tokenizer_or_dir)
    serialized = json.loads(tokenizer.backend.to_str())
    model = serialized["model"]
    identity = {
        "normalizer": serialized["normalizer"],
        "pre_tokenizer": serialized["pre_tokenizer"],
        "post_processor": serialized["post_processor"],
        "unk_token": model.get("unk_token"),
        "continuing_subword_prefix": model.get("continuing_subword_prefix"),
        "vocab": tokenizer.vocab(),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode("utf-8")).hexdigest()


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("tokenizer", help="train a WordPiece tokenizer")
    commands = parser.add_subparsers(dest="tokenizer_command", metavar="SUBCOMMAND", required=True)
    train = commands.add_parser("train", help="train WordPiece on a text corpus and save a BERT tokenizer directory")
    train.add_argument("--corpus", nargs="+", required=True, metavar="FILE_OR_GLOB", help="text files (globs allowed)")
    train.add_argument("--vocab-size", type=int, required=True, help="vocabulary size including special tokens")
    train.add_argument("--cased", action="store_true", help="keep case (default: lowercase, as bert-base-uncased)")
    train.add_argument("--out", required=True, type=Path, help="output directory (must not exist)")
    train.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists():
        raise UserError(f"{out}: already exists; choose a new --out directory")
    files = expand_corpus_paths(args.corpus)
    # Train into a temporary sibling, rename when complete: no half-written tokenizer directory.
    with staging_directory(out) as staging:
        tokenizer = train_tokenizer(files, args.vocab_size, not args.cased, staging)
    print(f"wrote {out} (vocabulary {tokenizer.vocab_size}, {'lowercase' if tokenizer.lowercase else 'cased'})")
    return 0
