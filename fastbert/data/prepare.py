"""``fastbert data prepare``: a corpus -> tokenized NSP pairs in sharded, memory-mappable files.

Two passes, in memory that does not grow with the corpus:

1. Read documents (:mod:`fastbert.data.sources`) in chunks, split sentences and tokenize
   them over ``--workers`` processes, and append the tokens to a token store on disk
   (:mod:`fastbert.data.store`).
2. Hold out whole documents for validation (a seeded choice of ``--validation-documents``,
   or ``--validation-fraction`` of them), then, per split and dupe pass, build every
   document's NSP pairs exactly as BERT does (:mod:`fastbert.data.nsp`): a random-next
   segment comes from any other document of the same split, read through the store's
   memory maps, never from the other split. Pairs stream into shards
   (:mod:`fastbert.data.shards`).

Everything is written into a hidden staging directory beside ``--out`` and renamed when
complete: an output directory that exists is complete. The staging directory (token store
included) goes on any failure, SIGTERM and Ctrl-C; one left by a killed run (SIGKILL,
power loss) is removed when the next run for the same ``--out`` starts. Bounded queues
keep a few chunks in flight per worker, so reading never runs ahead of tokenizing.
"""

from __future__ import annotations

import argparse
import collections
import errno
import itertools
import json
import multiprocessing
import os
import platform
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from importlib import metadata as package_metadata
from pathlib import Path

import numpy as np
import tokenizers
from tqdm import tqdm

from ..atomic import remove_stale_staging, staging_directory
from ..errors import InputError, UserError
from ..tokenizer import WordPieceTokenizer, load_tokenizer, save_tokenizer, tokenizer_hash
from .corpus import expand_corpus_paths
from .dataset import FORMAT, FORMAT_VERSION, METADATA_FILE, TOKENIZER_DIR
from .settings import SPECIAL_TOKENS_PER_PAIR, PrepareSettings
from .shards import ShardWriter
from .sources import FORMATS, SENTENCE_MODES, CorpusFormat, iter_documents
from .store import TokenStoreWriter
from .tasks import EncodedChunk, Worker, WorkerSetup, encode_in_worker, pair_in_worker, start_worker_process

__all__ = ["PrepareSettings", "prepare_pretraining_data", "register"]

CHUNK_TEXT_BYTES = 1 << 20  # documents go to a worker in chunks of about this much text
PAIRING_DOCUMENTS = 64  # documents per pairing task
IN_FLIGHT_PER_WORKER = 3  # chunks queued or running per worker: enough to keep it busy, few enough to bound memory
HELD_OUT_STREAM = 0x68656C64  # the held-out choice's own random stream ("held")
STORE_DIR = ".token-store"


def register(data_subparsers: argparse._SubParsersAction) -> None:
    defaults = PrepareSettings()
    parser = data_subparsers.add_parser(
        "prepare", help="tokenize a corpus into NSP/MLM pretraining shards",
        description="Reads the corpus in chunks and writes shards as it goes: memory does not grow with the corpus.")
    parser.add_argument("--corpus", nargs="+", required=True, metavar="INPUT",
                        help="files or globs (a HuggingFace dataset directory or name with --format hf); "
                        ".gz, .bz2 and .zst files are decompressed")
    parser.add_argument("--format", default="bert", choices=FORMATS,
                        help="bert: one sentence per line, a blank line between documents (default); "
                        "text: plain text, see --documents; jsonl, parquet, hf: one document per record, see --text-column")
    parser.add_argument("--sentences", choices=SENTENCE_MODES,
                        help="how a document's text becomes sentences: lines (one per line) or sentencex "
                        "(the sentence splitter, `pip install fastbert[text]`); default: lines for bert, else sentencex")
    parser.add_argument("--documents", default="block", choices=("block", "file"),
                        help="--format text: a document is a blank-line-separated block (default) or a whole file")
    parser.add_argument("--text-column", default="text", help="jsonl, parquet, hf: the field holding the text")
    parser.add_argument("--hf-split", default="train", help="hf: the split to read")
    parser.add_argument("--language", default="en", help="sentencex: the language code")
    parser.add_argument("--tokenizer", required=True, type=Path, metavar="DIR", help="BERT tokenizer directory")
    parser.add_argument("--max-seq-len", type=int, default=defaults.max_seq_len,
                        help="tokens per pair, special tokens included")
    parser.add_argument("--short-seq-prob", type=float, default=defaults.short_seq_prob,
                        help="probability of a shorter random target length")
    parser.add_argument("--dupe-factor", type=int, default=defaults.dupe_factor,
                        help="passes over the corpus with different pair splits (masking is dynamic, so 1 is usual)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    held_out = parser.add_mutually_exclusive_group()
    held_out.add_argument("--validation-fraction", type=float, default=defaults.validation_fraction,
                          help="hold out this share of the documents (whole documents) as the validation split")
    held_out.add_argument("--validation-documents", type=int, default=defaults.validation_documents,
                          help="hold out this many documents as the validation split")
    parser.add_argument("--shard-mib", type=float, default=defaults.shard_mib,
                        help="size bound of a shard's token file in MiB")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)),
                        help="processes that split and tokenize, one core each (default: the usable cores); "
                        "the output does not depend on it")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output directory (must not exist)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = PrepareSettings(args.max_seq_len, args.short_seq_prob, args.dupe_factor, args.seed,
                               args.validation_fraction, args.validation_documents, args.shard_mib)
    corpus_format = CorpusFormat.for_reader(args.format, args.sentences, documents=args.documents,
                                            text_column=args.text_column, hf_split=args.hf_split, language=args.language)
    started = time.perf_counter()
    with _sigterm_as_exit():
        metadata = prepare_pretraining_data(args.corpus, args.tokenizer, args.out, settings,
                                            workers=args.workers, corpus_format=corpus_format)
    elapsed = time.perf_counter() - started
    counts, splits = metadata["counts"], metadata["splits"]
    held_out = f", {splits['validation']['pairs']} validation pairs from {splits['validation']['documents']} " \
               "held-out documents" if "validation" in splits else ""
    train = splits["train"]
    print(
        f"wrote {args.out}: {train['pairs']} pairs ({train['is_next_fraction']:.1%} IsNext) in "
        f"{len(train['shards'])} shards from {train['documents']} documents{held_out}; {counts['sentences']} sentences "
        f"({counts['truncated_sentences']} over-long sentences truncated) in {elapsed:.1f} s, "
        f"{counts['input_bytes'] / elapsed / 1e6:.2f} MB/s"
    )
    return 0


@contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the staging directory is removed instead of left behind."""
    def leave(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, leave)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def prepare_pretraining_data(
    corpus: list[str],
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    settings: PrepareSettings,
    workers: int = 1,
    corpus_format: CorpusFormat = CorpusFormat(),
) -> dict:
    """Write the shards into out_dir (which must not exist) and return their metadata."""
    settings.validate()
    corpus_format.validate()
    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    out = Path(out_dir)
    if out.exists():
        raise UserError(f"{out}: already exists; choose a new --out directory")
    for stale in remove_stale_staging(out):
        print(f"removed {stale}, the staging directory of an interrupted run", file=sys.stderr)
    tokenizer = load_tokenizer(tokenizer_dir)
    inputs = corpus if corpus_format.reader == "hf" else [str(path) for path in expand_corpus_paths(corpus)]
    token_dtype = np.dtype(np.uint16 if tokenizer.vocab_size <= np.iinfo(np.uint16).max + 1 else np.int32)
    try:
        with staging_directory(out) as staging:
            setup = WorkerSetup(tokenizer.backend.to_str(), corpus_format, settings, token_dtype.str, staging / STORE_DIR)
            with _work_runner(setup, workers) as run_tasks:
                metadata = _prepare(inputs, setup, staging, run_tasks)
            shutil.rmtree(setup.store_dir)
            save_tokenizer(tokenizer, staging / TOKENIZER_DIR)
            metadata.update(_description(inputs, tokenizer_dir, tokenizer, settings, corpus_format, token_dtype, out))
            (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UserError(f"{out}: no space left on device (the partial output was removed)") from None
        raise
    return metadata


def _prepare(inputs: list[str], setup: WorkerSetup, staging: Path, run_tasks) -> dict:
    settings = setup.settings
    store = TokenStoreWriter(setup.store_dir, np.dtype(setup.token_dtype))
    counts = collections.Counter()
    documents = _counting_documents(iter_documents(inputs, setup.corpus_format), counts)
    progress = tqdm(unit="doc", desc="tokenize", disable=None)
    with progress:
        for encoded in run_tasks(encode_in_worker, ((chunk,) for chunk in _chunks(documents))):
            _add_encoded(store, encoded, counts)
            progress.update(len(encoded.document_sentences))
    store.close()
    if store.num_documents < 2:
        kind = "a single document" if counts["documents_read"] == 1 else f"{store.num_documents} documents with tokens"
        raise InputError(inputs[0] if len(inputs) == 1 else ", ".join(inputs[:3]),
                         f"the corpus holds {kind}; next-sentence pairs need at least two "
                         "(separate documents with a blank line)")

    splits = _hold_out(store, settings)
    split_metadata = {}
    for split, documents_of_split in splits.items():
        store.write_split(split, documents_of_split)
        writer = ShardWriter(staging, split, np.dtype(setup.token_dtype), settings.max_shard_bytes)
        tasks = [(split, dupe, start, min(start + PAIRING_DOCUMENTS, len(documents_of_split)))
                 for dupe in range(settings.dupe_factor)
                 for start in range(0, len(documents_of_split), PAIRING_DOCUMENTS)]
        pairs = next_pairs = 0
        for chunk in tqdm(run_tasks(pair_in_worker, tasks), total=len(tasks), unit="task", desc=f"pair {split}",
                          disable=None):
            writer.add(chunk)
            pairs += len(chunk)
            next_pairs += len(chunk) - int(chunk.is_random_next.sum())
        shards = writer.close()
        split_metadata[split] = {
            "documents": len(documents_of_split),
            "pairs": pairs,
            "is_next_fraction": round(next_pairs / pairs, 6),
            "pair_tokens": sum(shard["tokens"] for shard in shards) + SPECIAL_TOKENS_PER_PAIR * pairs,
            "shards": shards,
        }
    return {
        "counts": {
            "input_bytes": counts["input_bytes"],
            "documents": store.num_documents,
            "documents_without_tokens": counts["documents_read"] - store.num_documents,
            "sentences": store.num_sentences,
            "empty_sentences": counts["sentences"] - store.num_sentences,
            "truncated_sentences": counts["truncated_sentences"],
            "corpus_tokens": store.num_tokens,
        },
        "splits": split_metadata,
    }


def _counting_documents(documents: Iterable[str], counts: collections.Counter) -> Iterator[str]:
    for text in documents:
        counts["documents_read"] += 1
        counts["input_bytes"] += len(text.encode("utf-8"))  # the text read, after decompression
        yield text


def _chunks(documents: Iterable[str]) -> Iterator[list[str]]:
    chunk, size = [], 0
    for text in documents:
        chunk.append(text)
        size += len(text)
        if size >= CHUNK_TEXT_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _add_encoded(store: TokenStoreWriter, encoded: EncodedChunk, counts: collections.Counter) -> None:
    store.add(encoded.tokens, encoded.sentence_lengths, encoded.document_sentences)
    counts["sentences"] += encoded.sentences
    counts["truncated_sentences"] += encoded.truncated_sentences


def _hold_out(store: TokenStoreWriter, settings: PrepareSettings) -> dict[str, np.ndarray]:
    """The documents of each split: a seeded choice of whole documents is held out, the rest trains."""
    total = store.num_documents
    held_out = settings.held_out_documents(total)
    if held_out == 0:
        return {"train": np.arange(total, dtype=np.int64)}
    if held_out < 2 or total - held_out < 2:
        raise UserError(f"holding out {held_out} of {total} documents leaves a split with fewer than two; "
                        "next-sentence pairs need at least two documents in each split")
    rng = np.random.default_rng([settings.seed, HELD_OUT_STREAM])
    validation = np.sort(rng.choice(total, size=held_out, replace=False)).astype(np.int64)
    training = np.ones(total, dtype=bool)
    training[validation] = False
    return {"train": np.flatnonzero(training).astype(np.int64), "validation": validation}


@contextmanager
def _work_runner(setup: WorkerSetup, workers: int):
    """Yields ``run(function, argument_tuples)``: results in order, with a bounded number of tasks in flight."""
    if workers == 1:
        worker = Worker(setup)
        local = {encode_in_worker: worker.encode, pair_in_worker: worker.pair}
        previous = os.environ.get("TOKENIZERS_PARALLELISM")
        os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one worker is one core, as in the processes
        try:
            yield lambda function, tasks: (local[function](*task) for task in tasks)
        finally:
            worker.close()
            if previous is None:
                os.environ.pop("TOKENIZERS_PARALLELISM")
            else:
                os.environ["TOKENIZERS_PARALLELISM"] = previous
        return
    # spawn: workers must not inherit the parent's threads (tokenizers' pool, torch's OpenMP).
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, start_worker_process, (setup,)) as pool:
        yield lambda function, tasks: _ordered_results(pool, function, tasks, workers * IN_FLIGHT_PER_WORKER)


def _ordered_results(pool, function: Callable, tasks: Iterable[tuple], in_flight: int) -> Iterator:
    # Pool.imap would read every task ahead (the whole corpus); this keeps `in_flight` of them.
    pending = collections.deque()
    for task in itertools.chain(tasks, [None]):
        if task is not None:
            pending.append(pool.apply_async(function, task))
        while pending and (len(pending) >= in_flight or task is None):
            yield pending.popleft().get()


def _description(
    inputs: list[str],
    tokenizer_dir: str | Path,
    tokenizer: WordPieceTokenizer,
    settings: PrepareSettings,
    corpus_format: CorpusFormat,
    token_dtype: np.dtype,
    out: Path,
) -> dict:
    command = ["fastbert", "data", "prepare", "--corpus", *inputs, "--format", corpus_format.reader,
               "--sentences", corpus_format.sentences, "--tokenizer", str(tokenizer_dir),
               "--max-seq-len", str(settings.max_seq_len), "--short-seq-prob", str(settings.short_seq_prob),
               "--dupe-factor", str(settings.dupe_factor), "--seed", str(settings.seed), "--out", str(out)]
    if settings.validation_documents:
        command += ["--validation-documents", str(settings.validation_documents)]
    elif settings.validation_fraction:
        command += ["--validation-fraction", str(settings.validation_fraction)]
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "max_seq_len": settings.max_seq_len,
        "short_seq_prob": settings.short_seq_prob,
        "dupe_factor": settings.dupe_factor,
        "seed": settings.seed,
        "held_out": {"fraction": settings.validation_fraction, "documents": settings.validation_documents},
        "input": {"format": corpus_format.reader, "sentences": corpus_format.sentences,
                  "documents": corpus_format.documents, "text_column": corpus_format.text_column},
        "token_dtype": token_dtype.name,
        "tokenizer": {
            "path": TOKENIZER_DIR,  # relative, so the directory can be moved or copied to every node
            "hash": tokenizer_hash(tokenizer),
            "vocab_size": tokenizer.vocab_size,
            "lowercase": tokenizer.lowercase,
            "pad_id": tokenizer.pad_id,
            "unk_id": tokenizer.unk_id,
            "cls_id": tokenizer.cls_id,
            "sep_id": tokenizer.sep_id,
            "mask_id": tokenizer.mask_id,
        },
        "command": shlex.join(command),
        "versions": {
            "fastbert": _installed_version("fastbert"),
            "tokenizers": tokenizers.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
    }


def _installed_version(distribution: str) -> str:
    try:
        return package_metadata.version(distribution)
    except package_metadata.PackageNotFoundError:
        return "not installed"
