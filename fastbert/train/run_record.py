"""The run describes itself: what ``fastbert pretrain`` writes into ``--out`` when it starts.

* ``run.yaml``: every setting as resolved (the YAML, then the flags, then ``--set``), which
  ``--config OUT/run.yaml`` takes back to repeat the run with exactly these settings;
* ``run.json``: the same settings plus what is not a setting: the command line, the data
  directory, the DeepSpeed config, whether it resumed, world size, device, versions and
  the git commit of the fastbert source that ran.

A resumed run rewrites both (its settings may differ, e.g. a longer ``max_steps``).
"""

from __future__ import annotations

import datetime
import os
import shlex
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ..atomic import write_json, write_text
from ..environment import environment_versions, git_commit
from .config import PretrainConfig

RUN_YAML = "run.yaml"
RUN_JSON = "run.json"


def write_run_record(out_dir: str | os.PathLike, config: PretrainConfig, *,
                     data_dir: str | os.PathLike | Sequence[str | os.PathLike], deepspeed_config: dict[str, Any] | None,
                     world_size: int, resume: bool) -> None:
    """Write ``run.yaml`` and ``run.json`` into ``out_dir`` (on the main rank only).

    ``data_dir`` is what ``--data`` was given: one prepared directory, or ``DIR:WEIGHT`` entries of a blend."""
    out_dir = Path(out_dir)
    settings = config.settings()
    specs = [data_dir] if isinstance(data_dir, (str, os.PathLike)) else list(data_dir)
    # Directories as absolute paths, so the record still names them from another working directory.
    data = [str(Path(spec).resolve()) if Path(spec).is_dir() else str(spec) for spec in specs]
    header = (
        "# The resolved settings of this run (its YAML config, then the flags, then --set), written by fastbert.\n"
        f"# Repeat the run: fastbert pretrain --config {out_dir / RUN_YAML} --data {shlex.join(map(str, specs))} --out NEW_DIR"
        + (" --deepspeed CONFIG  (run.json holds the DeepSpeed config)" if deepspeed_config is not None else "") + "\n"
    )
    write_text(out_dir / RUN_YAML, header + yaml.safe_dump(settings, sort_keys=False))
    write_json(out_dir / RUN_JSON, {
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": {"argv": sys.argv, "python": sys.executable, "cwd": os.getcwd()},
        "settings": settings,
        "data": data[0] if len(data) == 1 else data,
        "deepspeed_config": deepspeed_config,
        "resume": resume,
        "world_size": world_size,
        "host": socket.gethostname(),
        "versions": environment_versions(),
        "git": git_commit(),
    })
