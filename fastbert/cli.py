"""The ``fastbert`` command line: ``fastbert <command> [options]``.

Each command lives in its own module, which exposes ``register(subparsers)``; this file
only wires them together, turns :class:`~fastbert.errors.UserError` into one line on
stderr, and copes with launchers. DeepSpeed's launcher runs
``python -m fastbert --local_rank=K <command> ...``: the flag may come before the
command, and ``LOCAL_RANK`` in the environment is honoured as well.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from .errors import UserError

# Modules that add subcommands; each defines register(subparsers).
COMMAND_MODULES = [
    "fastbert.tokenizer",
    "fastbert.data.cli",
    "fastbert.finetune.cli",
    "fastbert.train.cli",
    "fastbert.demo",
    "fastbert.bench",
]


def _pop_local_rank(argv: list[str]) -> list[str]:
    """Remove ``--local_rank=K`` / ``--local_rank K`` wherever a launcher put it; export it as LOCAL_RANK."""
    out: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg.startswith(("--local_rank=", "--local-rank=")):
            os.environ["LOCAL_RANK"] = arg.split("=", 1)[1]
        elif arg in ("--local_rank", "--local-rank"):
            os.environ["LOCAL_RANK"] = next(it, "0")
        else:
            out.append(arg)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastbert", description="Fast BERT pretraining and fine-tuning.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = _pop_local_rank(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"fastbert: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("fastbert: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
