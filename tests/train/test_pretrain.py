"""``fastbert pretrain`` end to end: exact resume, DeepSpeed ZeRO on two CPU ranks, HF export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fastbert.cli import main
from pretrain_data import wikipedia_pretraining_data

REPO = Path(__file__).resolve().parents[2]
NO_DROPOUT = "model_overrides={hidden_dropout_prob: 0, attention_probs_dropout_prob: 0}"


@pytest.fixture(scope="module")
def pretraining_data(shared_data, tmp_path_factory) -> Path:
    """A 64-token NSP/MLM set from the first 300 kB of one Wikipedia file, with its own tokenizer."""
    return wikipedia_pretraining_data(shared_data, tmp_path_factory.mktemp("pretraining"), chars=300_000,
                                      vocab_size=4000, max_seq_len=64)


def pretrain_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["pretrain", "--config", str(REPO / "configs/pretrain/tiny.yaml"), "--data", str(data), "--out", str(out),
            "--log-every", "1", "--no-progress", *extra]


def losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())}


def crash_after(out: Path, step: int) -> None:
    """Make ``out`` look like a run killed right after its checkpoint at ``step``."""
    for later in (out / "checkpoints").glob("step_*"):
        if int(later.name.split("_")[1]) > step:
            shutil.rmtree(later)
    (out / "checkpoints" / "latest").write_text(f"step_{step:08d}\n")


def test_single_process_resume_is_exact(pretraining_data, tmp_path):
    args = pretrain_args(pretraining_data, tmp_path / "run", "--max-steps", "6", "--save-every", "3", "--batch-size", "8")
    assert main(args) == 0
    straight = losses(tmp_path / "run")
    crash_after(tmp_path / "run", 3)
    assert main(args + ["--resume"]) == 0
    resumed = losses(tmp_path / "run")
    assert sorted(resumed) == [1, 2, 3, 4, 5, 6]
    for step in (4, 5, 6):  # dropout is on: the RNG streams were restored too
        assert resumed[step] == pytest.approx(straight[step], rel=1e-6, abs=1e-6)
    assert straight[6] < straight[1]


def test_bad_settings_are_one_line_errors(pretraining_data, tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("model: tiny\nlearning_rate: 0.1\n")
    code = main(["pretrain", "--config", str(config), "--data", str(pretraining_data), "--out", str(tmp_path / "o")])
    assert code == 2
    assert f"{config}: unknown setting 'learning_rate'" in capsys.readouterr().err
    ds = tmp_path / "ds.json"
    ds.write_text('{"zero_optimization": {"stage": 2},\n "optimizer": {"type": "Adam"}}')
    code = main(pretrain_args(pretraining_data, tmp_path / "o", "--deepspeed", str(ds)))
    assert code == 2
    assert "DeepSpeed config key 'optimizer' is not supported" in capsys.readouterr().err
    assert main(pretrain_args(pretraining_data, tmp_path / "never", "--resume")) == 2
    assert "no checkpoint to resume from" in capsys.readouterr().err


def check_zero_run(data: Path, tmp_path: Path, stage: int, steps: int, deepspeed_launch) -> None:
    """Two ranks × batch 8 must match one process × batch 8 × accumulation 2; resume must be exact."""
    common = ("--max-steps", str(steps), "--batch-size", "8", "--set", NO_DROPOUT)
    assert main(pretrain_args(data, tmp_path / "single", *common, "--grad-accum-steps", "2")) == 0
    save_at = steps // 2
    zero_args = pretrain_args(data, tmp_path / "zero", *common, "--save-every", str(save_at),
                              "--deepspeed", str(REPO / f"configs/deepspeed/zero{stage}.json"))
    deepspeed_launch(zero_args)
    single, zero = losses(tmp_path / "single"), losses(tmp_path / "zero")
    for step in range(1, steps + 1):
        assert zero[step] == pytest.approx(single[step], rel=1e-4), f"step {step}"
    assert zero[steps] < zero[1]

    crash_after(tmp_path / "zero", save_at)
    deepspeed_launch(zero_args + ["--resume"])
    resumed = losses(tmp_path / "zero")
    for step in range(save_at + 1, steps + 1):
        assert resumed[step] == pytest.approx(zero[step], rel=1e-6)

    transformers = pytest.importorskip("transformers")
    model = transformers.BertForPreTraining.from_pretrained(tmp_path / "zero" / "model")
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 128


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_zero_twenty_steps(pretraining_data, tmp_path, stage, deepspeed_launch):
    check_zero_run(pretraining_data, tmp_path, stage=stage, steps=20, deepspeed_launch=deepspeed_launch)
