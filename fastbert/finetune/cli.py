"""``fastbert finetune``: fine-tune a BERT checkpoint on CoLA, a GLUE task, SQuAD or SWAG."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config_cli import add_config_flags, add_setting_flag, build_config, config_settings
from ..train.config import read_deepspeed_config
from .config import LONG_SEQUENCE_POLICIES, FinetuneConfig
from .tasks import TASKS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune a BERT checkpoint on a task and evaluate it on dev",
        description="Fine-tune on a task; writes results.json and the best epoch's model (an HF directory).",
    )
    # deepspeed_config is read from the --deepspeed file; command is the command line itself.
    add_config_flags(parser, FinetuneConfig, skip=("seeds", "deepspeed_config", "command"), task={"choices": list(TASKS)},
                     long_sequences={"choices": LONG_SEQUENCE_POLICIES})
    seeds = parser.add_mutually_exclusive_group()
    add_setting_flag(seeds, config_settings(FinetuneConfig)["seeds"])
    seeds.add_argument("--seed", type=int, default=argparse.SUPPRESS, metavar="N", help="one seed: the same as --seeds N")
    parser.add_argument("--deepspeed", type=Path, metavar="CONFIG", help="DeepSpeed JSON config (configs/deepspeed/zeroN.json)")
    parser.set_defaults(func=run)


def build_finetune_config(args: argparse.Namespace) -> FinetuneConfig:
    """The run's config: the flags given, the dataclass defaults for the rest."""
    seeds = {"seeds": (args.seed,)} if "seed" in args else {}
    return build_config(
        FinetuneConfig, args, **seeds,
        deepspeed_config=read_deepspeed_config(args.deepspeed), command=["fastbert", *sys.argv[1:]],
    )


def run(args: argparse.Namespace) -> int:
    from .runner import run_finetune  # torch and the model load only when the command runs

    run_finetune(build_finetune_config(args))
    return 0
