"""The ``fastbert data`` command; each subcommand module defines ``register(data_subparsers)``."""

from __future__ import annotations

import argparse
import importlib

# Modules that add ``fastbert data <subcommand>``.
DATA_SUBCOMMAND_MODULES = ["fastbert.data.prepare", "fastbert.finetune.download"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="prepare pretraining data, fetch fine-tuning data")
    data_subparsers = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    for name in DATA_SUBCOMMAND_MODULES:
        importlib.import_module(name).register(data_subparsers)
