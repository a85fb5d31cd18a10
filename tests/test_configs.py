"""The config dataclasses and the CLIs built from them: routing, defaults, errors, no torch."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from fastbert.config_cli import config_settings
from fastbert.errors import InputError, UserError
from fastbert.finetune import cli as finetune_cli
from fastbert.finetune.config import FinetuneConfig
from fastbert.train import cli as pretrain_cli
from fastbert.train.config import EngineConfig, OptimizerConfig, PretrainConfig, read_deepspeed_config

CONFIG_MODULES = ("fastbert.train.config", "fastbert.finetune.config", "fastbert.config_cli",
                  "fastbert.train.cli", "fastbert.finetune.cli")


def test_config_and_cli_modules_import_no_torch():
    code = f"import sys\nfor name in {CONFIG_MODULES!r}: __import__(name)\nprint('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def parser_for(module) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastbert")
    module.register(parser.add_subparsers(dest="command"))
    return parser


def subparser(module, name: str) -> argparse.ArgumentParser:
    subparsers = argparse.ArgumentParser().add_subparsers()
    module.register(subparsers)
    return subparsers.choices[name]


# --- pretraining: YAML, flags and --set ---------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def pretrain_config(tmp_path: Path, yaml_text: str, *flags: str) -> PretrainConfig:
    config = write(tmp_path / "run.yaml", yaml_text)
    args = parser_for(pretrain_cli).parse_args(["pretrain", "--config", str(config), "--data", "d", "--out", "o", *flags])
    return pretrain_cli.build_pretrain_config(args)


def test_flat_and_nested_optimizer_settings_route_into_optim(tmp_path):
    flat = pretrain_config(tmp_path, "model: tiny\noptimizer: lamb\nlr: 1.0e-3\nwarmup_steps: 10\nbeta2: 0.98\n")
    assert flat.optim == OptimizerConfig(optimizer="lamb", lr=1e-3, warmup_steps=10, beta2=0.98)
    assert flat.model == "tiny"
    nested = pretrain_config(tmp_path, "optim: {optimizer: lamb, lr: 1.0e-3, warmup_steps: 10, beta2: 0.98}\n")
    assert nested.optim == flat.optim
    assert PretrainConfig().updated({"lr": "5e-4"}, source="x").optim.lr == 5e-4  # YAML 1.1 reads 5e-4 as text


def test_flags_then_set_override_the_yaml(tmp_path):
    config = pretrain_config(tmp_path, "lr: 1.0e-3\nmax_steps: 50\ngrad_clip: 0.5\n",
                             "--lr", "2e-3", "--max-steps", "7", "--set", "grad_clip=0", "--set", "max_steps=9",
                             "--no-bf16", "--model-overrides", "{hidden_dropout_prob: 0}")
    assert (config.optim.lr, config.optim.grad_clip, config.max_steps) == (2e-3, 0.0, 9)
    assert config.bf16 is False and config.model_overrides == {"hidden_dropout_prob": 0}
    assert config.optim.warmup_ratio == OptimizerConfig().warmup_ratio  # untouched settings keep their defaults
    engine = config.engine_config(None, static_seq_len=64)
    assert engine.optim is config.optim and engine.total_steps == 9 and engine.static_seq_len == 64
    assert engine.warmup_steps == round(0.01 * 9)


def test_every_pretrain_setting_has_a_flag():
    flags = {action.dest for action in subparser(pretrain_cli, "pretrain")._actions}
    names = {f.name for f in dataclasses.fields(PretrainConfig)} - {"optim"} | {f.name for f in dataclasses.fields(OptimizerConfig)}
    assert {f"setting:{name}" for name in names} <= flags


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        ("learning_rate: 0.1\n", "unknown setting 'learning_rate'; expected one of model, model_overrides"),
        ("optim: {learning_rate: 0.1}\n", "unknown setting 'optim.learning_rate'; expected one of optim.optimizer, optim.lr"),
        ("optim: 0.1\n", "setting 'optim' is 0.1; expected a mapping"),
        ("lr: fast\n", "setting 'lr' is 'fast'; expected float"),
        ("optimizer: sgd\n", "optimizer 'sgd' is unknown; expected one of adamw, lamb"),
        ("warmup_ratio: 2\n", "warmup_ratio must be in [0, 1], got 2.0"),
    ],
)
def test_bad_settings_are_one_line_errors(tmp_path, yaml_text, message):
    path = write(tmp_path / "bad.yaml", yaml_text)
    with pytest.raises(UserError) as err:
        PretrainConfig.load(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_unknown_setting_lists_the_optimizer_names_too(tmp_path):
    with pytest.raises(UserError, match=r"expected one of .*\bcuda_graphs\b.*\blr, weight_decay\b.*\bgrad_clip\b"):
        PretrainConfig().updated({"learning_rate": 0.1}, source="--set")


@pytest.mark.parametrize("item", ["lr", "=3", "lr=[1"])
def test_bad_set_items(tmp_path, item):
    with pytest.raises(UserError, match="--set"):
        pretrain_config(tmp_path, "{}\n", "--set", item)


def test_engine_config_checks():
    with pytest.raises(UserError, match="total_steps must be an integer >= 1, got 0"):
        EngineConfig(total_steps=0)
    with pytest.raises(UserError, match="local engine only"):
        EngineConfig(cuda_graphs=True, deepspeed_config={})
    assert EngineConfig().use_bf16("cuda") and not EngineConfig().use_bf16("cpu") and EngineConfig(bf16=True).use_bf16("cpu")
    assert EngineConfig(optim=OptimizerConfig(warmup_steps=3)).warmup_steps == 3


# --- fine-tuning: the parser built from FinetuneConfig ------------------------------------------

REQUIRED = ["--task", "cola", "--data-dir", "data", "--init", "model", "--out", "out"]


def finetune_config(*flags: str) -> FinetuneConfig:
    return finetune_cli.build_finetune_config(parser_for(finetune_cli).parse_args(["finetune", *REQUIRED, *flags]))


def test_every_finetune_setting_has_a_flag_with_the_dataclass_default():
    parser = subparser(finetune_cli, "finetune")
    flags = {action.dest: action for action in parser._actions}
    for name, setting in config_settings(FinetuneConfig).items():
        if name in ("deepspeed_config", "command"):  # --deepspeed reads the dict from a file; command is argv
            continue
        action = flags[f"setting:{name}"]
        assert action.option_strings[0] == "--" + name.replace("_", "-")
        assert action.required == (setting.default is dataclasses.MISSING)
    assert "--deepspeed" in parser._option_string_actions
    defaults = FinetuneConfig(task="cola", data_dir=Path("data"), init="model", out=Path("out"))
    assert dataclasses.replace(finetune_config(), command=[]) == defaults
    assert finetune_config().optim == OptimizerConfig(lr=2e-5, warmup_ratio=0.1)
    help_text = parser.format_help()
    assert "Peak learning rate" in help_text and "(default: 2e-05)" in help_text and "(default: 42)" in help_text


def test_finetune_flags_reach_the_config():
    config = finetune_config("--epochs", "2", "--lr", "3e-5", "--batch-size", "16", "--max-seq-len", "64",
                             "--warmup-ratio", "0.2", "--weight-decay", "0", "--grad-clip", "0.5",
                             "--max-train-examples", "100", "--cuda-graphs", "--log-every", "5")
    assert (config.epochs, config.batch_size, config.max_seq_len, config.max_train_examples) == (2, 16, 64, 100)
    assert config.optim == OptimizerConfig(lr=3e-5, warmup_ratio=0.2, weight_decay=0.0, grad_clip=0.5)
    assert config.cuda_graphs and config.log_every == 5 and config.data_dir == Path("data")
    assert finetune_config("--seeds", "1,2,3").seeds == (1, 2, 3)
    assert finetune_config("--seed", "7").seeds == (7,)


@pytest.mark.parametrize(
    "flags",
    [["--seeds", "1,x"], ["--seed", "x"], ["--seed", "1", "--seeds", "2,3"], ["--epochs", "1.5"],
     ["--lr", "fast"], ["--task", "imdb"], ["--no-such-flag"]],
)
def test_bad_finetune_flags_are_argparse_errors(flags, capsys):
    with pytest.raises(SystemExit) as exit:
        parser_for(finetune_cli).parse_args(["finetune", *REQUIRED, *flags])
    assert exit.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_finetune_required_flags_and_value_checks(capsys):
    with pytest.raises(SystemExit):
        parser_for(finetune_cli).parse_args(["finetune", "--task", "cola"])
    assert "required: --init, --out" in capsys.readouterr().err  # --data-dir only for the named tasks
    with pytest.raises(UserError, match="--epochs must be an integer >= 1, got 0"):
        finetune_config("--epochs", "0")
    with pytest.raises(UserError, match="lr must be a finite number > 0, got -1.0"):
        finetune_config("--lr", "-1")


# --- the DeepSpeed config reader ----------------------------------------------------------------


def test_read_deepspeed_config(tmp_path):
    assert read_deepspeed_config(None) is None
    assert read_deepspeed_config(write(tmp_path / "ok.json", '{"zero_optimization": {"stage": 2}}')) == {"zero_optimization": {"stage": 2}}
    with pytest.raises(UserError, match="missing.json: no such DeepSpeed config file"):
        read_deepspeed_config(tmp_path / "missing.json")
    bad = write(tmp_path / "bad.json", '{"zero_optimization":\n  {"stage": 2,}}')
    with pytest.raises(InputError, match=r"bad.json:2: not valid JSON \(") as err:
        read_deepspeed_config(bad)
    assert err.value.line == 2
    with pytest.raises(InputError, match=r"list.json: expected a JSON object"):
        read_deepspeed_config(write(tmp_path / "list.json", "[1, 2]"))


def test_finetune_deepspeed_flag_reads_the_file(tmp_path):
    config = finetune_config("--deepspeed", str(write(tmp_path / "ds.json", '{"train_micro_batch_size_per_gpu": 8}')))
    assert config.deepspeed_config == {"train_micro_batch_size_per_gpu": 8}
    with pytest.raises(UserError, match="no such DeepSpeed config file"):
        finetune_config("--deepspeed", str(tmp_path / "none.json"))
