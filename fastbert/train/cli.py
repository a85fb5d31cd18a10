"""``fastbert pretrain``: MLM + NSP pretraining, single process or under deepspeed/torchrun."""

from __future__ import annotations

import argparse
import os
import logging
from pathlib import Path

import yaml

from ..errors import UserError
from .config import PretrainConfig

logger = logging.getLogger(__name__)

# Flag → PretrainConfig field, for the settings most often changed on the command line.
FLAG_FIELDS = {
    "max_steps": int, "batch_size": int, "grad_accum_steps": int, "lr": float, "warmup_steps": int,
    "log_every": int, "save_every": int, "seed": int, "optimizer": str, "num_workers": int, "max_minutes": float,
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pretrain",
        help="pretrain BERT (MLM + NSP) on data from `fastbert data prepare`",
        description="Launch with `deepspeed --num_gpus N --module fastbert pretrain ...`, "
        "`torchrun --nproc_per_node N -m fastbert pretrain ...` or plainly.",
    )
    parser.add_argument("--config", type=Path, required=True, help="YAML training config (configs/pretrain/*.yaml)")
    parser.add_argument("--data", type=Path, required=True, help="prepared pretraining data directory")
    parser.add_argument("--out", type=Path, required=True, help="output directory: metrics.jsonl, checkpoints/, model/")
    parser.add_argument("--deepspeed", type=Path, metavar="JSON", help="DeepSpeed config (configs/deepspeed/zeroN.json)")
    parser.add_argument("--tokenizer", type=Path, help="tokenizer to save with the model (default: the data's)")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (metrics still go to metrics.jsonl)")
    for name, kind in FLAG_FIELDS.items():
        parser.add_argument("--" + name.replace("_", "-"), type=kind, dest=name, metavar=kind.__name__.upper())
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config setting (VALUE is YAML), e.g. --set model_overrides={hidden_dropout_prob: 0}")
    parser.set_defaults(func=run)


def parse_overrides(args: argparse.Namespace) -> dict:
    overrides = {name: getattr(args, name) for name in FLAG_FIELDS if getattr(args, name) is not None}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected KEY=VALUE")
        try:
            overrides[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise UserError(f"--set {item!r}: VALUE is not valid YAML") from None
    return overrides


def run(args: argparse.Namespace) -> int:
    from .pretrain import load_deepspeed_config, run_pretraining

    config = PretrainConfig.load(args.config).updated(parse_overrides(args), source="command line")
    result = run_pretraining(
        config, args.data, args.out,
        deepspeed_config=load_deepspeed_config(args.deepspeed),
        resume=args.resume, tokenizer_dir=args.tokenizer, progress=not args.no_progress,
    )
    if result.records and int(os.environ.get("RANK", "0")) == 0:
        last = result.records[-1]
        summary = ", ".join(f"{k} {last[k]:.4g}" for k in ("loss", "mlm_acc", "nsp_acc") if k in last)
        logger.info("stopped at step %d (%s): %s; model in %s", result.step, result.stopped_by, summary, Path(args.out) / "model")
    return 0
