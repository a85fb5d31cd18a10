"""`fastbert pretrain` refuses what would waste or damage a run, in one line and before training:
bad settings, an --out holding an earlier run; and a damaged final export is never published."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastbert.cli import main

from pretrain_data import make_pretraining_data

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_pretraining_data(tmp_path_factory.mktemp("made"))


def pretrain(data: Path, out: Path, *extra: str) -> list[str]:
    return ["pretrain", "--config", str(REPO / "configs/pretrain/tiny.yaml"), "--data", str(data), "--out", str(out),
            "--max-steps", "2", "--batch-size", "4", "--log-every", "1", "--no-progress", *extra]


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize("extra, message", [
    (["--log-every", "0"], "log_every must be an integer >= 1, got 0"),
    (["--set", "lr=.nan"], "lr must be a finite number > 0, got nan"),
    (["--set", "mlm_probability=1.5"], "mlm_probability must be in (0, 1), got 1.5"),
    (["--set", "beta1=1.5"], "beta1 must be in [0, 1), got 1.5"),
    (["--num-workers", "-1"], "num_workers must be an integer >= 0, got -1"),
    (["--save-every", "-1"], "save_every must be an integer >= 0, got -1"),
    (["--weight-decay", "-0.01"], "weight_decay must be a finite number >= 0, got -0.01"),
    (["--grad-clip", "-1"], "grad_clip must be a finite number >= 0 (0 disables clipping), got -1.0"),
    (["--warmup-steps", "-5"], "warmup_steps must be an integer >= 0 or null (use warmup_ratio), got -5"),
    (["--max-minutes", "-1"], "max_minutes must be a finite number > 0 or null (no limit), got -1.0"),
    (["--set", "eps=0"], "eps must be a finite number > 0, got 0.0"),
    (["--set", "warmup_ratio=2"], "warmup_ratio must be in [0, 1], got 2.0"),
    (["--max-steps", "0"], "max_steps must be an integer >= 1, got 0"),
    (["--keep-last", "-1"], "keep_last must be an integer >= 0, got -1"),
    (["--hf-every", "-2"], "hf_every must be an integer >= 0, got -2"),
    (["--set", "model_overrides={hiden_dropout_prob: 0}"], "unknown config field 'hiden_dropout_prob'; BertConfig's fields"),
    (["--set", "model_overrides={hidden_dropout_prob: 1.5}"], "hidden_dropout_prob must be a probability in [0, 1), got 1.5"),
    (["--set", "model_overrides={num_hidden_layers: 0}"], "num_hidden_layers must be an integer >= 1, got 0"),
])
def test_a_bad_setting_is_one_line_naming_it_and_its_range_before_anything_is_written(data, tmp_path, capsys, extra, message):
    assert main(pretrain(data, tmp_path / "out", *extra)) == 2
    assert error_line(capsys).startswith(f"fastbert: error: {message}")
    assert not (tmp_path / "out").exists()


def steps_logged(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_an_out_holding_an_earlier_run_needs_resume_or_overwrite(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(pretrain(data, out)) == 0
    assert not (out / "fastbert.lock").exists()
    assert main(pretrain(data, out)) == 2
    assert error_line(capsys) == (f"fastbert: error: {out}: holds an earlier run (checkpoints, metrics.jsonl, model); add --resume "
                                  "to continue it, add --overwrite to replace it, or choose another --out")
    assert main(pretrain(data, out, "--max-steps", "3", "--resume")) == 0
    assert steps_logged(out) == [1, 2, 3]
    assert main(pretrain(data, out, "--overwrite")) == 0
    assert steps_logged(out) == [1, 2]  # the earlier run's records are gone, not interleaved
    assert sorted(p.name for p in (out / "checkpoints").glob("step_*")) == ["step_00000002"]


def test_a_truncated_final_export_is_never_published(data, tmp_path, caplog):
    out = tmp_path / "run"
    assert main(pretrain(data, out, "--max-steps", "4", "--save-every", "2")) == 0
    final = out / "checkpoints" / "step_00000004" / "hf" / "model.safetensors"
    final.write_bytes(final.read_bytes()[:1024])
    assert main(pretrain(data, out, "--max-steps", "4", "--resume")) == 0  # falls back to step 2, trains 2 steps
    assert any(m.startswith("skipping checkpoint step_00000004: hf/model.safetensors is 1024 bytes") for m in caplog.messages)

    transformers = pytest.importorskip("transformers")
    model = transformers.BertForPreTraining.from_pretrained(out / "model")
    assert model.config.num_hidden_layers == 2
    assert (out / "model" / "model.safetensors").read_bytes() == final.read_bytes()  # the rewritten checkpoint's
