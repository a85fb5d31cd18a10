"""The run describes itself: OUT/run.yaml repeats the resolved settings, OUT/run.json says what ran where."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

from fastbert.cli import build_parser, main
from fastbert.train.cli import build_pretrain_config
from fastbert.train.config import PretrainConfig

REPO = Path(__file__).resolve().parents[2]


def resolved(args: list[str]) -> PretrainConfig:
    return build_pretrain_config(build_parser().parse_args(args))


def test_run_yaml_given_back_as_config_repeats_the_settings_exactly(tiny_pretraining_data, tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("model: tiny\nmax_steps: 50\nlr: 3e-4\nbatch_size: 4\nnum_workers: 0\n")
    out = tmp_path / "run"
    args = ["pretrain", "--config", str(base), "--data", str(tiny_pretraining_data), "--out", str(out),
            "--max-steps", "2", "--log-every", "1", "--warmup-steps", "1", "--no-progress",
            "--set", "model_overrides={hidden_dropout_prob: 0.05}", "--set", "optim={beta2: 0.98}"]
    assert main(args) == 0
    settings = resolved(args)
    # Each layer took part: the YAML (lr), a flag over the YAML (max_steps), --set (beta2, model_overrides).
    assert (settings.optim.lr, settings.max_steps, settings.optim.beta2) == (3e-4, 2, 0.98)
    assert settings.model_overrides == {"hidden_dropout_prob": 0.05}

    repeat = ["pretrain", "--config", str(out / "run.yaml"), "--data", str(tiny_pretraining_data), "--out", str(tmp_path / "again")]
    assert resolved(repeat) == settings
    assert PretrainConfig.load(out / "run.yaml") == settings

    record = json.loads((out / "run.json").read_text())
    assert record["settings"] == settings.settings()
    assert record["command"]["argv"] == sys.argv and record["data"] == str(tiny_pretraining_data.resolve())
    assert record["world_size"] == 1 and record["resume"] is False and record["deepspeed_config"] is None
    assert record["versions"]["torch"] == importlib.metadata.version("torch") and record["versions"]["device"]
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert record["git"]["commit"] == head
