"""``fastbert demo``: the whole pipeline offline, on text every Python installation has.

With no ``--corpus``, the corpus is the docstrings of the installed standard library and of
the installed torch (fastbert's own dependency, so every machine that runs the demo has
both): one module per document, one sentence per line. Every tenth document is held out; the demo
trains a WordPiece tokenizer on the rest, prepares NSP/MLM pairs of both, pretrains BERT-mini
while evaluating on the held-out pairs, and writes an HF model directory plus a short
markdown report.

The run is sized to the machine: a few steps are timed first (and one held-out
evaluation), and the step count is set so that the schedule, which decays the learning
rate to 0 at the last step, ends when planned. Without ``--minutes`` the run gets the
default budget's steps but never fewer than NSP_STEPS, the steps in which held-out NSP
learnt in our runs, so a slow machine trains longer rather than learning MLM only; with
``--minutes`` the user's budget rules. A run cut short by the clock instead would stop at a
high learning rate, before NSP has learnt anything.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
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
LEARNING_RATES = {"mini": 5e-4, "tiny": 1e-3}
"""Per preset, measured on the docstrings. mini, over 900 CPU steps: at 1e-3 NSP stayed at the
majority-class rate and at 2e-3 MLM stayed on the unigram plateau; at 5e-4 both rise (NSP
0.55 -> 0.62 on fresh pairs, MLM 0.05 -> 0.15). tiny, held out, one run each (the pairs
differ between runs): at 1e-3 over 900 steps NSP 0.549 -> 0.621 and 0.604 -> 0.615 against
majority rates of 0.549 and 0.604 (MLM loss 6.41 -> 6.03); at 5e-4 over 940 steps 0.573 ->
0.594 against 0.573. 1e-3 is the better of the two measured, not a tuned optimum."""
LEARNING_RATE = LEARNING_RATES["mini"]
"""Any other preset."""
NSP_STEPS = 940
"""BERT-mini at lr 5e-4, batch 32: on the docstrings of the standard library and torch, held-out
NSP ended 5.7-8.5 points above the majority rate in 940 steps (ten runs, 2026-12-06); on the standard
library's alone it stayed at the majority rate in 235 and 333 steps. BERT-tiny's held-out NSP left the majority class clearly in only 3 of 29 runs of
225-3,182 steps (it learns the training documents' pairs instead): README, Demo, and
benchmarks/results/2026-12-06-demo-trials.md."""
HELD_OUT_PAIRS = 4096
"""Held-out pairs scored at each evaluation (evenly spaced over all of them): one standard error
of NSP accuracy is under 0.8 points, and an evaluation costs about a fifth of what scoring all
~15,000 pairs of the default corpus would."""
HELD_OUT_EVERY = 10
"""Every tenth document is held out (whole documents: no held-out sentence is ever trained on)."""
EVALUATIONS = 5
"""Held-out evaluations in a run (every fifth of it), besides the one the step timing makes."""
TIMED_STEPS = 8
"""Steps of the timing run; the last half (after warm-up) give the step time."""
SAFETY = 0.95
"""Share of the remaining budget given to planned steps (the final checkpoint and timing noise take the rest)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="tokenize, prepare and pretrain a small BERT offline in a few minutes")
    parser.add_argument("--out", type=Path, default=Path("demo-run"), help="output directory (default ./demo-run; an earlier demo run there is replaced, anything else refused)")
    parser.add_argument("--corpus", nargs="+", metavar="FILE_OR_GLOB",
                        help="corpus files (one sentence per line, blank line between documents); default: the docstrings of "
                        "the standard library and of torch")
    parser.add_argument("--minutes", type=float,
                        help="training time budget (default: 5 minutes on a CPU, 2 on a GPU, or as long as "
                        f"{NSP_STEPS} steps take where that is longer, so that NSP learns)")
    parser.add_argument("--max-steps", type=int, help="train exactly this many steps instead of sizing the run to the time budget")
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--max-seq-len", type=int, default=64,
                        help="tokens per pair (64: twice the steps of 128 in the same minutes, enough to leave the unigram plateau)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", default="mini", help="model preset (default mini: the smallest whose held-out NSP learnt)")
    parser.add_argument("--lr", type=float, help="peak learning rate (default: the preset's, LEARNING_RATES in fastbert/demo.py)")
    parser.add_argument("--held-out-pairs", type=int, default=HELD_OUT_PAIRS,
                        help=f"held-out pairs to evaluate on, evenly spaced over all of them (default {HELD_OUT_PAIRS:,}: one "
                        "standard error of NSP accuracy is then under 0.8 points; 0 scores all of them)")
    parser.add_argument("--seed", type=int, default=1234)
    parser.set_defaults(func=run)


# ---- corpus from installed Python code ------------------------------------------------------
def default_documents() -> list[list[str]]:
    """The docstrings of the standard library, then of torch, one document per module.

    The standard library alone (about 480 documents, 1.2 MB) is so small that 940 steps see each
    sentence about ten times: held-out NSP then left the majority class by 1.7 to 6.7 points
    depending on the seed, the model learning the training documents' pairs. torch's docstrings
    triple the text (about 1,900 documents and 3.7 MB together once repeated sentences are dropped)."""
    import torch

    return docstring_documents(sysconfig.get_paths()["stdlib"]) + docstring_documents(Path(torch.__file__).parent)


def docstring_documents(root: str | os.PathLike) -> list[list[str]]:
    """One document per module under ``root`` that has at least two prose sentences in its docstrings."""
    root = Path(root)
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
    from .data.corpus import expand_corpus_paths, read_documents
    from .data.prepare import PrepareSettings, prepare_pretraining_data
    from .tokenizer import train_tokenizer
    from .train.config import OptimizerConfig, PretrainConfig
    from .train.pretrain import run_pretraining

    if args.lr is not None and not args.lr > 0:  # also refuses nan; before anything is written
        raise UserError(f"--lr must be a positive number, got {args.lr}")
    if args.held_out_pairs < 0:
        raise UserError(f"--held-out-pairs must be 0 (all) or more, got {args.held_out_pairs}")
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
    user_budget = args.minutes is not None
    minutes = args.minutes if user_budget else (2.0 if cuda else 5.0)
    if minutes <= 0:
        raise UserError(f"--minutes must be positive, got {minutes}")
    started = time.perf_counter()

    if args.corpus:
        corpus_files = expand_corpus_paths(args.corpus)
        documents = read_documents(corpus_files)
        corpus_name = ", ".join(str(p) for p in corpus_files[:3]) + (" ..." if len(corpus_files) > 3 else "")
    else:
        print("building a corpus from the docstrings of the standard library and torch ...", flush=True)
        documents = default_documents()
        corpus_name = f"docstrings of the Python {sysconfig.get_python_version()} standard library and torch {torch.__version__}"
    train_documents, held_out_documents = split_held_out(first_occurrences(documents))
    corpus, held_out_corpus = out / "corpus" / "train.txt", out / "corpus" / "held_out.txt"
    write_corpus(train_documents, corpus)
    write_corpus(held_out_documents, held_out_corpus)
    corpus_stats = _corpus_stats([corpus, held_out_corpus])
    print(f"corpus: {corpus_stats['documents']:,} documents ({len(held_out_documents):,} held out), "
          f"{corpus_stats['sentences']:,} sentences, {corpus_stats['words']:,} words", flush=True)

    print("training a WordPiece tokenizer ...", flush=True)
    train_tokenizer([corpus], args.vocab_size, lowercase=True, out_dir=out / "tokenizer")
    print("preparing NSP/MLM pairs ...", flush=True)
    # BERT's dupe factor: ten differently split and paired passes over a small corpus, so
    # a few minutes of training see fresh NSP pairs instead of memorising a few thousand.
    settings = PrepareSettings(max_seq_len=args.max_seq_len, seed=args.seed, dupe_factor=DUPE_FACTOR)
    metadata = prepare_pretraining_data([str(corpus)], out / "tokenizer", out / "data", settings, workers=1)
    held_out_metadata = prepare_pretraining_data([str(held_out_corpus)], out / "tokenizer", out / "held_out", settings, workers=1)
    prep_seconds = time.perf_counter() - started

    config = PretrainConfig(
        model=args.model, batch_size=args.batch_size, optim=OptimizerConfig(lr=_learning_rate(args.model, args.lr), warmup_ratio=0.06),
        seed=args.seed, log_every=10, save_every=0, num_workers=0, eval_data=str(out / "held_out"), eval_pairs=args.held_out_pairs or None,
    )
    if args.max_steps:
        config = dataclasses.replace(config, max_steps=args.max_steps, eval_every=max(1, args.max_steps // EVALUATIONS))
        sizing = "--max-steps"
    else:
        training_started = time.perf_counter()
        timing = time_steps(config, out)
        in_budget = plan_steps(60 * minutes - (time.perf_counter() - training_started), timing)
        steps = demo_steps(in_budget, user_budget)
        # The clock stays as a backstop, for a run twice as slow as timed: it stops with a checkpoint.
        planned_seconds = steps * timing.step_seconds + (EVALUATIONS + 1) * timing.eval_seconds
        config = dataclasses.replace(config, max_steps=steps, eval_every=max(1, steps // EVALUATIONS),
                                     max_minutes=2 * planned_seconds / 60)
        sizing = f"timed {timing.step_seconds:.3f} s per step and {timing.eval_seconds:.1f} s per held-out evaluation: "
        if steps == in_budget:
            sizing += f"{steps} steps fill the {minutes:g}-minute budget"
            if steps < NSP_STEPS:
                sizing += f" (fewer than the {NSP_STEPS} in which held-out NSP learnt in our runs: expect MLM to learn, NSP perhaps not)"
        else:
            sizing += (f"{steps} steps, the fewest in which held-out NSP learnt in our runs, take about "
                       f"{planned_seconds / 60:.0f} minutes on this machine (--minutes sets a shorter run)")
        print(sizing, flush=True)
    pairs = f"up to {args.held_out_pairs:,}" if args.held_out_pairs else "all"
    print(f"pretraining BERT-{config.model} for {config.max_steps} steps, evaluating on {pairs} held-out pairs "
          f"every {config.eval_every} steps ...", flush=True)
    result = run_pretraining(config, out / "data", out / "train", progress=True)
    summary = _write_report(out, args, corpus_name, corpus_stats, metadata, held_out_metadata, config, result, sizing,
                            prep_seconds, time.perf_counter() - started)
    print(summary)
    print(f"model: {out / 'train' / 'model'}\nreport: {out / 'report.md'}")
    return 0


def _learning_rate(model: str, requested: float | None) -> float:
    return requested if requested is not None else LEARNING_RATES.get(model, LEARNING_RATE)


def first_occurrences(documents: list[list[str]]) -> list[list[str]]:
    """Each sentence in its first document only, and the documents left with at least two.

    Docstrings repeat (a class documented again in a re-exporting module, a deprecated alias's
    copy: about 7% of the sentences of the standard library and torch), and a repeated sentence
    on both sides of the held-out split would be scored as unseen."""
    seen: set[str] = set()
    kept = []
    for document in documents:
        fresh = [s for s in document if s not in seen]
        seen.update(document)
        if len(fresh) >= 2:
            kept.append(fresh)
    return kept


def split_held_out(documents: list[list[str]]) -> tuple[list[list[str]], list[list[str]]]:
    """Every HELD_OUT_EVERY-th document held out, the rest for training."""
    held_out = documents[HELD_OUT_EVERY - 1 :: HELD_OUT_EVERY]
    train = [doc for i, doc in enumerate(documents) if (i + 1) % HELD_OUT_EVERY]
    if len(held_out) < 2:
        raise UserError(f"the corpus has {len(documents)} documents; the demo needs at least {2 * HELD_OUT_EVERY} "
                        f"(every {HELD_OUT_EVERY}th is held out)")
    return train, held_out


@dataclasses.dataclass(frozen=True)
class StepTiming:
    step_seconds: float
    """Seconds per training step after warm-up."""
    eval_seconds: float
    """Seconds per held-out evaluation."""


def time_steps(config, out: Path) -> StepTiming:
    """Time TIMED_STEPS steps of the run the demo makes (same model, data and engine), and one held-out evaluation."""
    from .train.pretrain import run_pretraining

    probe = dataclasses.replace(config, max_steps=TIMED_STEPS, log_every=TIMED_STEPS // 2, eval_every=0)
    result = run_pretraining(probe, out / "data", out / "timing", progress=False)
    shutil.rmtree(out / "timing")
    warm = result.records[-1]  # the second half of the steps
    return StepTiming(config.batch_size / warm["sequences_per_s"], result.evaluations[-1]["eval"]["seconds"])


def demo_steps(in_budget: int, user_budget: bool) -> int:
    """The steps to train: the budget's, but without a budget from the user never fewer than NSP_STEPS."""
    return in_budget if user_budget else max(in_budget, NSP_STEPS)


def plan_steps(seconds: float, timing: StepTiming) -> int:
    """Steps that fit ``seconds`` together with the run's held-out evaluations (at least 20)."""
    evaluations = EVALUATIONS + 1  # every fifth of the run, and at the end when the steps do not divide evenly
    return max(20, int(SAFETY * (seconds - evaluations * timing.eval_seconds) / timing.step_seconds))


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


def _write_report(out, args, corpus_name, corpus_stats, metadata, held_out_metadata, config, result, sizing,
                  prep_seconds, total_seconds) -> str:
    """Write report.md; returns its summary of the held-out numbers."""
    import torch

    records = result.records
    last = records[-1]
    # One logged step is 10 batches: NSP accuracy over 320 pairs moves by +-0.03 from noise
    # alone, so the training rise is shown as the first tenth of the run against the last tenth.
    tenth = max(1, len(records) // 10)
    early, late = records[:tenth], records[-tenth:]
    evaluations = [{"step": e["step"], **e["eval"]} for e in result.evaluations]
    first, final = evaluations[0], evaluations[-1]
    held_out_next = held_out_metadata["splits"]["train"]["is_next_fraction"]
    is_next = metadata["splits"]["train"]["is_next_fraction"]
    summary = "\n".join([
        f"- held-out ({final['pairs']:,} pairs of unseen documents, the same masks at every evaluation), "
        f"step {first['step']} → {final['step']}:",
        f"  - MLM loss {first['mlm_loss']:.3f} → {final['mlm_loss']:.3f} (perplexity {first['mlm_perplexity']:.0f} → "
        f"{final['mlm_perplexity']:.0f}), MLM accuracy {first['mlm_acc']:.3f} → {final['mlm_acc']:.3f}",
        f"  - NSP accuracy {first['nsp_acc']:.3f} → {final['nsp_acc']:.3f} (always guessing the majority class scores "
        f"{final['nsp_majority']:.3f}), NSP loss {first['nsp_loss']:.3f} → {final['nsp_loss']:.3f} (predicting the "
        f"label balance scores {final['nsp_prior_loss']:.3f})",
    ])
    steps_table = [r for r in records if r["step"] % max(1, len(records) // 10 * config.log_every) == 0 or r is last]
    lines = [
        "# fastbert demo",
        "",
        f"- corpus: {corpus_name}: {corpus_stats['documents']:,} documents, {corpus_stats['sentences']:,} sentences, "
        f"{corpus_stats['words']:,} words ({corpus_stats['bytes'] / 1e6:.1f} MB); every {HELD_OUT_EVERY}th document held out",
        f"- tokenizer: WordPiece, {args.vocab_size:,} tokens, lowercased, trained on the training documents",
        f"- pretraining pairs: {metadata['splits']['train']['pairs']:,} for training, {held_out_metadata['splits']['train']['pairs']:,} held out, "
        f"of up to {args.max_seq_len} tokens ({is_next:.0%} and {held_out_next:.0%} IsNext)",
        f"- model: BERT-{config.model}, batch {config.batch_size}, AdamW lr {config.optim.lr:g}, "
        f"device {'cuda' if torch.cuda.is_available() else 'cpu'}",
        f"- steps: {result.step} (stopped by {result.stopped_by}; {sizing}); preparation {prep_seconds:.0f} s, "
        f"total {total_seconds / 60:.1f} min",
        summary,
        f"- training MLM accuracy: {_mean(early, 'mlm_acc'):.3f} over steps {_span(early)} → {_mean(late, 'mlm_acc'):.3f} "
        f"over steps {_span(late)}; NSP accuracy {_mean(early, 'nsp_acc'):.3f} → {_mean(late, 'nsp_acc'):.3f}",
        f"- throughput: {last['tokens_per_s']:,.0f} tokens/s, {last['sequences_per_s']:.1f} sequences/s",
        "",
        "Held-out evaluations:",
        "",
        "| step | MLM loss | perplexity | MLM acc | NSP loss | NSP acc |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
        *(f"| {e['step']} | {e['mlm_loss']:.3f} | {e['mlm_perplexity']:.1f} | {e['mlm_acc']:.3f} | {e['nsp_loss']:.3f} | "
          f"{e['nsp_acc']:.3f} |" for e in evaluations),
        "",
        "Training (each row: the 10 steps up to it):",
        "",
        "| step | loss | MLM loss | MLM acc | NSP loss | NSP acc |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
        *(f"| {r['step']} | {r['loss']:.3f} | {r['mlm_loss']:.3f} | {r['mlm_acc']:.3f} | {r['nsp_loss']:.3f} | {r['nsp_acc']:.3f} |" for r in steps_table),
        "",
        f"The model directory `{out / 'train' / 'model'}` loads with `transformers.BertForPreTraining.from_pretrained`; "
        "every logged step and evaluation is in `train/metrics.jsonl`, the run's settings in `train/run.yaml`.",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")
    return summary


def _mean(records: list[dict], key: str) -> float:
    return sum(r[key] for r in records) / len(records)


def _span(records: list[dict]) -> str:
    return f"{records[0]['step']}-{records[-1]['step']}" if len(records) > 1 else str(records[0]["step"])
