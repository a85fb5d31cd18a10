"""``fastbert demo``: the whole pipeline offline, on text every Python installation has.

With no ``--corpus``, the corpus is the docstrings of the installed standard library: one
module per document, one sentence per line. The demo trains a WordPiece tokenizer on it,
prepares NSP/MLM pairs, pretrains the mini preset for a few minutes while MLM and NSP
accuracy rise, and writes an HF model directory plus a short markdown report.
"""

from __future__ import annotations

import argparse
import ast
import logging
import os
import re
import shutil
import sysconfig
import time
from pathlib import Path

from .errors import UserError

logger = logging.getLogger(__name__)

SKIPPED_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
# A sentence ends at . ! or ? followed by whitespace and a capital letter or an opening quote.
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
DOCSTRING_OWNERS = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
DEMO_MARKER = ".fastbert-demo"
DUPE_FACTOR = 10
# Measured over 900 CPU steps of mini on the docstrings: at 1e-3 NSP stayed at the
# majority-class rate and at 2e-3 MLM stayed on the unigram plateau; at 5e-4 both rise
# (NSP 0.55 -> 0.62 on fresh pairs, MLM 0.05 -> 0.15).
LEARNING_RATE = 5e-4


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="tokenize, prepare and pretrain a small BERT offline in a few minutes")
    parser.add_argument("--out", type=Path, default=Path("demo-run"), help="output directory (default ./demo-run; an earlier demo run there is replaced, anything else refused)")
    parser.add_argument("--corpus", nargs="+", metavar="FILE_OR_GLOB",
                        help="corpus files (one sentence per line, blank line between documents); default: the stdlib's docstrings")
    parser.add_argument("--minutes", type=float, help="training time budget (default 5 on a CPU, 2 on a GPU)")
    parser.add_argument("--max-steps", type=int, help="stop after this many steps even if time is left")
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--max-seq-len", type=int, default=64,
                        help="tokens per pair (64: twice the steps of 128 in the same minutes, enough to leave the unigram plateau)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1234)
    parser.set_defaults(func=run)


# ---- corpus from the standard library ------------------------------------------------------
def stdlib_documents(root: str | os.PathLike | None = None) -> list[list[str]]:
    """One document per stdlib module that has at least two prose sentences in its docstrings."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    documents = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if d not in SKIPPED_DIRS and not d.startswith("."))
        for name in sorted(files):
            if name.endswith(".py"):
                sentences = module_sentences(Path(directory) / name)
                if len(sentences) >= 2:
                    documents.append(sentences)
    return documents


def module_sentences(path: Path) -> list[str]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
        return []  # a few stdlib files are deliberately broken or not UTF-8 (lib2to3 fixtures)
    sentences = []
    for node in ast.walk(tree):
        if isinstance(node, DOCSTRING_OWNERS) and (doc := ast.get_docstring(node)):
            for paragraph in prose_paragraphs(doc):
                sentences.extend(" ".join(s.split()) for s in SENTENCE_END.split(paragraph) if is_sentence(s))
    return sentences


def prose_paragraphs(docstring: str) -> list[str]:
    """Paragraphs joined into one line each; code examples and indented blocks are dropped."""
    out = []
    for block in re.split(r"\n\s*\n", docstring):
        lines = block.splitlines()
        if not lines or any(line.lstrip().startswith((">>>", "...", "$ ")) for line in lines):
            continue
        indent = len(lines[0]) - len(lines[0].lstrip())
        if any(len(line) - len(line.lstrip()) > indent for line in lines[1:]):
            continue  # argument tables, literal blocks
        out.append(" ".join(line.strip() for line in lines))
    return out


def is_sentence(text: str) -> bool:
    words = text.split()
    return 4 <= len(words) <= 80 and text[0].isupper() and sum(c.isalpha() for c in text) > 0.6 * len(text)


def write_corpus(documents: list[list[str]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join("\n".join(doc) + "\n\n" for doc in documents), encoding="utf-8")


# ---- the run ---------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    from .data.corpus import expand_corpus_paths
    from .data.prepare import PrepareSettings, prepare_pretraining_data
    from .tokenizer import train_tokenizer
    from .train.config import OptimizerConfig, PretrainConfig
    from .train.pretrain import run_pretraining

    out: Path = args.out
    if out.exists() and any(out.iterdir()):
        if not (out / DEMO_MARKER).is_file():
            raise UserError(f"{out}: already exists and is not empty; choose a new --out or delete it")
        # An earlier demo's output: rerunning replaces it, so `make demo` is idempotent.
        print(f"replacing the previous demo run in {out}", flush=True)
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARKER).write_text("written by `fastbert demo`; a rerun replaces this directory\n")
    import torch  # here, not at import: every `fastbert` command imports this module to register it

    cuda = torch.cuda.is_available()
    minutes = args.minutes if args.minutes is not None else (2.0 if cuda else 5.0)
    if minutes <= 0:
        raise UserError(f"--minutes must be positive, got {minutes}")
    started = time.perf_counter()

    if args.corpus:
        corpus_files = expand_corpus_paths(args.corpus)
        corpus_name = ", ".join(str(p) for p in corpus_files[:3]) + (" ..." if len(corpus_files) > 3 else "")
    else:
        print("building a corpus from the standard library's docstrings ...", flush=True)
        corpus_files = [out / "corpus" / "stdlib_docstrings.txt"]
        write_corpus(stdlib_documents(), corpus_files[0])
        corpus_name = f"docstrings of the Python {sysconfig.get_python_version()} standard library"
    corpus_stats = _corpus_stats(corpus_files)
    print(f"corpus: {corpus_stats['documents']:,} documents, {corpus_stats['sentences']:,} sentences, "
          f"{corpus_stats['words']:,} words", flush=True)

    print("training a WordPiece tokenizer ...", flush=True)
    train_tokenizer(corpus_files, args.vocab_size, lowercase=True, out_dir=out / "tokenizer")
    print("preparing NSP/MLM pairs ...", flush=True)
    # BERT's dupe factor: ten differently split and paired passes over a small corpus, so
    # a few minutes of training see fresh NSP pairs instead of memorising a few thousand.
    metadata = prepare_pretraining_data(
        [str(p) for p in corpus_files], out / "tokenizer", out / "data",
        PrepareSettings(max_seq_len=args.max_seq_len, seed=args.seed, dupe_factor=DUPE_FACTOR), workers=1,
    )
    prep_seconds = time.perf_counter() - started

    config = PretrainConfig(
        model="mini", batch_size=args.batch_size, optim=OptimizerConfig(lr=LEARNING_RATE, warmup_ratio=0.06), seed=args.seed,
        log_every=10, save_every=0, num_workers=0, max_minutes=minutes,
        max_steps=args.max_steps or _steps_for_budget(minutes, cuda),
    )
    print(f"pretraining BERT-mini for up to {minutes:g} minutes ({config.max_steps} steps) ...", flush=True)
    result = run_pretraining(config, out / "data", out / "train", progress=True)
    _write_report(out, args, corpus_name, corpus_stats, metadata, config, result, prep_seconds, time.perf_counter() - started)
    print(f"model: {out / 'train' / 'model'}\nreport: {out / 'report.md'}")
    return 0


def _steps_for_budget(minutes: float, cuda: bool) -> int:
    """A step count the budget roughly allows, so the learning rate decays within it (the clock still stops the run)."""
    # Mini, batch 32 x 64 tokens: measured 0.29-0.32 s on an idle 2-core CPU.
    seconds_per_step = 0.02 if cuda else 0.32
    return max(20, int(minutes * 60 / seconds_per_step))


def _corpus_stats(files: list[Path]) -> dict[str, int]:
    documents = sentences = words = size = 0
    for path in files:
        text = path.read_text(encoding="utf-8")
        size += len(text.encode("utf-8"))
        lines = text.splitlines()
        sentences += sum(1 for line in lines if line.strip())
        words += len(text.split())
        documents += sum(1 for block in re.split(r"\n\s*\n", text) if block.strip())
    return {"documents": documents, "sentences": sentences, "words": words, "bytes": size}


def _write_report(out, args, corpus_name, corpus_stats, metadata, config, result, prep_seconds, total_seconds) -> None:
    import torch

    records = result.records
    last = records[-1]
    # One logged step is 10 batches: NSP accuracy over 320 pairs moves by +-0.03 from noise
    # alone, so the rise is shown as the first tenth of the run against the last tenth.
    tenth = max(1, len(records) // 10)
    early, late = records[:tenth], records[-tenth:]
    is_next = metadata["splits"]["train"]["is_next_fraction"]
    steps_table = [r for r in records if r["step"] % max(1, len(records) // 10 * config.log_every) == 0 or r is last]
    lines = [
        "# fastbert demo",
        "",
        f"- corpus: {corpus_name}: {corpus_stats['documents']:,} documents, {corpus_stats['sentences']:,} sentences, "
        f"{corpus_stats['words']:,} words ({corpus_stats['bytes'] / 1e6:.1f} MB)",
        f"- tokenizer: WordPiece, {args.vocab_size:,} tokens, lowercased",
        f"- pretraining pairs: {metadata['splits']['train']['pairs']:,} of up to {args.max_seq_len} tokens "
        f"({metadata['splits']['train']['is_next_fraction']:.0%} IsNext)",
        f"- model: BERT-{config.model}, batch {config.batch_size}, AdamW lr {config.optim.lr:g}, "
        f"device {'cuda' if torch.cuda.is_available() else 'cpu'}",
        f"- steps: {result.step} (stopped by {result.stopped_by}); preparation {prep_seconds:.0f} s, "
        f"total {total_seconds / 60:.1f} min",
        f"- MLM accuracy: {_mean(early, 'mlm_acc'):.3f} over steps {_span(early)} → {_mean(late, 'mlm_acc'):.3f} over steps {_span(late)}",
        f"- NSP accuracy: {_mean(early, 'nsp_acc'):.3f} over steps {_span(early)} → {_mean(late, 'nsp_acc'):.3f} over steps {_span(late)} "
        f"(always guessing the majority class scores {max(is_next, 1 - is_next):.3f})",
        f"- throughput: {last['tokens_per_s']:,.0f} tokens/s, {last['sequences_per_s']:.1f} sequences/s",
        "",
        "| step | loss | MLM loss | MLM acc | NSP loss | NSP acc |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
        *(f"| {r['step']} | {r['loss']:.3f} | {r['mlm_loss']:.3f} | {r['mlm_acc']:.3f} | {r['nsp_loss']:.3f} | {r['nsp_acc']:.3f} |" for r in steps_table),
        "",
        f"The model directory `{out / 'train' / 'model'}` loads with "
        "`transformers.BertForPreTraining.from_pretrained`; every logged step is in `train/metrics.jsonl`.",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")


def _mean(records: list[dict], key: str) -> float:
    return sum(r[key] for r in records) / len(records)


def _span(records: list[dict]) -> str:
    return f"{records[0]['step']}-{records[-1]['step']}" if len(records) > 1 else str(records[0]["step"])
