"""``fastbert pretrain``: MLM + NSP pretraining, single process or under deepspeed/torchrun."""

from __future__ import annotations

import argparse
import os
import logging
from pathlib import Path

from ..config_cli import add_config_flags, add_set_flag, given_settings, parse_set
from .config import PretrainConfig, read_deepspeed_config

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pretrain",
        help="pretrain BERT (MLM + NSP) on data from `fastbert data prepare`",
        description="Launch with `deepspeed --num_gpus N --module fastbert pretrain ...`, "
        "`torchrun --nproc_per_node N -m fastbert pretrain ...` or plainly. Settings come from --config; "
        "the setting flags and --set override it (the defaults shown are for settings it leaves out).",
    )
    parser.add_argument("--config", type=Path, required=True, help="YAML training config (configs/pretrain/*.yaml)")
    parser.add_argument("--data", nargs="+", required=True, metavar="DIR[:WEIGHT]",
                        help="prepared pretraining data directory; several, each with an optional weight "
                        "(dirA:0.7 dirB:0.3), are blended: each gets its weight's share of every epoch")
    parser.add_argument("--out", type=Path, required=True, help="output directory: metrics.jsonl, checkpoints/, model/")
    parser.add_argument("--deepspeed", type=Path, metavar="JSON", help="DeepSpeed config (configs/deepspeed/zeroN.json)")
    parser.add_argument("--tokenizer", type=Path, help="tokenizer to save with the model (default: the data's)")
    resume = parser.add_mutually_exclusive_group()
    resume.add_argument("--resume", action="store_true",
                        help="continue from the newest complete (verified) checkpoint in --out")
    resume.add_argument("--resume-from", type=Path, metavar="CHECKPOINT",
                        help="continue from this checkpoint directory (OUT/checkpoints/step_N, or another run's)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier run in --out (its checkpoints, metrics and model); with --resume-from, "
                        "discard the checkpoints after it")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (metrics still go to metrics.jsonl)")
    add_config_flags(parser.add_argument_group("settings (override --config)"), PretrainConfig)
    add_set_flag(parser)
    parser.set_defaults(func=run)


def build_pretrain_config(args: argparse.Namespace) -> PretrainConfig:
    """The YAML config with the setting flags, then ``--set``, applied."""
    overrides = {**given_settings(args), **parse_set(args.set)}
    return PretrainConfig.load(args.config).updated(overrides, source="command line")


def run(args: argparse.Namespace) -> int:
    from .pretrain import run_pretraining  # torch loads only when the command runs
    from .run_dir import StartMode

    config = build_pretrain_config(args)
    start = StartMode(resume=args.resume, resume_from=args.resume_from, overwrite=args.overwrite)
    result = run_pretraining(
        config, args.data, args.out, deepspeed_config=read_deepspeed_config(args.deepspeed),
        start=start, tokenizer_dir=args.tokenizer, progress=not args.no_progress,
    )
    if result.records and int(os.environ.get("RANK", "0")) == 0:
        last = result.records[-1]
        summary = ", ".join(f"{k} {last[k]:.4g}" for k in ("loss", "mlm_acc", "nsp_acc") if k in last)
        logger.info("stopped at step %d (%s): %s; model in %s", result.step, result.stopped_by, summary, Path(args.out) / "model")
    return 0
