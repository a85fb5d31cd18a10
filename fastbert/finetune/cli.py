"""``fastbert finetune``: fine-tune a BERT checkpoint on CoLA, a GLUE task, SQuAD or SWAG."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import InputError, UserError
from .tasks import TASKS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune a BERT checkpoint on a task and evaluate it on dev",
        description="Fine-tune on a task; writes results.json and the best epoch's model (an HF directory).",
    )
    parser.add_argument("--task", required=True, choices=list(TASKS))
    parser.add_argument("--data-dir", required=True, type=Path, help="folder with the task's files")
    parser.add_argument("--init", required=True, type=Path, help="HF BERT directory or fastbert export")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--batch-size", type=int, default=32, help="sequences per micro-batch on each rank")
    parser.add_argument("--max-seq-len", type=int, default=128)
    parser.add_argument("--warmup-ratio", type=float, default=0.1)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--grad-clip", type=float, default=1.0)
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=42)
    seeds.add_argument("--seeds", type=_seed_list, help="comma-separated seeds, e.g. 1,2,3 (one run each)")
    parser.add_argument("--deepspeed", type=Path, default=None, metavar="CONFIG", help="DeepSpeed JSON config")
    parser.add_argument("--max-train-examples", type=int, default=None, metavar="N")
    parser.add_argument("--cuda-graphs", action="store_true",
                        help="replay training steps from CUDA graphs (classification tasks, one GPU)")
    parser.set_defaults(func=run)


def _seed_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    from .runner import FinetuneConfig, run_finetune  # torch and the model load only when the command runs

    run_finetune(
        FinetuneConfig(
            task=args.task,
            data_dir=args.data_dir,
            init=args.init,
            out=args.out,
            epochs=args.epochs,
            lr=args.lr,
            batch_size=args.batch_size,
            max_seq_len=args.max_seq_len,
            warmup_ratio=args.warmup_ratio,
            weight_decay=args.weight_decay,
            grad_clip=args.grad_clip,
            seeds=args.seeds or (args.seed,),
            deepspeed_config=_read_deepspeed_config(args.deepspeed),
            max_train_examples=args.max_train_examples,
            cuda_graphs=args.cuda_graphs,
            command=["fastbert", *sys.argv[1:]],
        )
    )
    return 0


def _read_deepspeed_config(path: Path | None) -> dict | None:
    if path is None:
        return None
    if not path.is_file():
        raise UserError(f"{path}: no such DeepSpeed config")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(path, f"not valid JSON ({err.msg})", err.lineno) from None
