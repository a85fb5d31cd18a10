"""report_to: each tracker writes the records it was given (read back through its own reader),
pretraining and fine-tuning send every logged step, and a missing or unknown tracker fails at start."""

from __future__ import annotations

import json
import struct
import sys
import time
from pathlib import Path

import pytest

from fastbert.cli import main
from fastbert.errors import UserError
from fastbert.train.trackers import Trackers, check_report_to, record_scalars

REPO = Path(__file__).resolve().parents[2]
SETTINGS = {"model": "tiny", "optim": {"lr": 0.001, "warmup_steps": None}, "seed": 3}
RECORDS = [
    {"step": 1, "loss": 9.5, "mlm_acc": 0.01, "lr": 0.001, "grad_norm": None},
    {"step": 2, "loss": 9.25, "mlm_acc": 0.02, "lr": 0.0005, "grad_norm": 3.5},
    {"step": 2, "eval": {"mlm_loss": 9.0, "nsp_acc": 0.5, "dev": {"mcc": 0.25}}},
]
EXPECTED = {  # what every tracker must hold: {key: {step: value}}
    "train/loss": {1: 9.5, 2: 9.25}, "train/mlm_acc": {1: 0.01, 2: 0.02}, "train/lr": {1: 0.001, 2: 0.0005},
    "train/grad_norm": {2: 3.5}, "eval/mlm_loss": {2: 9.0}, "eval/nsp_acc": {2: 0.5}, "eval/dev/mcc": {2: 0.25},
}


def write(report_to: str, out: Path) -> None:
    trackers = Trackers.open(report_to, out, SETTINGS, start_step=0)
    for record in RECORDS:
        trackers.log(record)
    trackers.close()


def tensorboard_scalars(directory: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(directory), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


def approx(scalars: dict[str, dict[int, float]]):
    return {tag: pytest.approx(values, rel=1e-6) for tag, values in scalars.items()}


def test_tensorboard_writes_the_records_it_was_given(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    write("jsonl,tensorboard", tmp_path)
    assert approx(EXPECTED) == tensorboard_scalars(tmp_path / "tensorboard")


def test_mlflow_writes_the_records_and_settings_it_was_given(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    write("mlflow", tmp_path)
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").resolve().as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("fastbert").experiment_id])
    written = {key: {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)} for key in run.data.metrics}
    assert written == approx(EXPECTED)
    assert run.data.params == {"model": "tiny", "optim.lr": "0.001", "optim.warmup_steps": "None", "seed": "3"}
    assert run.info.status == "FINISHED"


def wandb_records(run_file: Path):
    """The protobuf records of an offline W&B run file (a LevelDB-style log of 32 KiB blocks after a 7-byte header)."""
    from wandb.proto import wandb_internal_pb2

    data, block, position, pending = run_file.read_bytes(), 32768, 7, b""
    assert data[:4] == b":W&B"
    while position + 7 <= len(data):
        if block - position % block < 7:  # too little room left for a header: the block is padded
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def test_wandb_offline_writes_the_records_and_settings_it_was_given(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="the wandb extra is not installed")
    for name, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONSOLE": "off"}.items():
        monkeypatch.setenv(name, value)
    write("wandb", tmp_path)
    (run_file,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    # W&B's service process writes the file; on a loaded machine it may finish after finish() returns.
    deadline = time.monotonic() + 60
    while not any(r.WhichOneof("record_type") == "exit" for r in wandb_records(run_file)) and time.monotonic() < deadline:
        time.sleep(0.5)
    written: dict[str, dict[int, float]] = {}
    config = {}
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            for key, value in row.items():
                if not key.startswith("_"):
                    written.setdefault(key, {})[row["_step"]] = value
        elif kind == "run":
            config = {item.key: json.loads(item.value_json) for item in record.run.config.update}
    assert written == approx(EXPECTED)
    assert config["optim"] == SETTINGS["optim"] and config["seed"] == 3


def test_records_become_train_and_eval_scalars():
    assert record_scalars(RECORDS[0]) == {"train/loss": 9.5, "train/mlm_acc": 0.01, "train/lr": 0.001}
    assert record_scalars(RECORDS[2]) == {"eval/mlm_loss": 9.0, "eval/nsp_acc": 0.5, "eval/dev/mcc": 0.25}


def test_unknown_or_missing_trackers_fail_at_start_in_one_line(tmp_path, monkeypatch, capsys):
    with pytest.raises(UserError, match="report_to 'tensorbord' is unknown"):
        check_report_to("jsonl,tensorbord")
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb now raises ImportError
    args = ["pretrain", "--config", str(REPO / "configs/pretrain/tiny.yaml"), "--data", str(tmp_path / "no-data"),
            "--out", str(tmp_path / "out"), "--report-to", "jsonl,wandb"]
    assert main(args) == 2
    # Before anything is read: the data directory does not even exist.
    assert capsys.readouterr().err == ("fastbert: error: report_to wandb: the wandb package is not installed "
                                       "(pip install 'fastbert[wandb]')\n")


def test_pretraining_sends_every_record_to_tensorboard(tiny_pretraining_data, tiny_held_out_data, tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    out = tmp_path / "run"
    args = ["pretrain", "--config", str(REPO / "configs/pretrain/tiny.yaml"), "--data", str(tiny_pretraining_data),
            "--out", str(out), "--max-steps", "4", "--log-every", "1", "--batch-size", "4", "--no-progress",
            "--eval-data", str(tiny_held_out_data), "--eval-every", "2", "--eval-pairs", "32", "--report-to", "tensorboard",
            "--set", "num_workers=0"]
    assert main(args) == 0
    expected: dict[str, dict[int, float]] = {}
    for record in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()):
        for key, value in record_scalars(record).items():
            expected.setdefault(key, {})[record["step"]] = value
    assert sorted(expected["eval/mlm_loss"]) == [2, 4] and sorted(expected["train/loss"]) == [1, 2, 3, 4]
    assert tensorboard_scalars(out / "tensorboard") == approx(expected)


def test_fine_tuning_reports_every_logged_step(minilm_dir, shared_data, tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    cola = tmp_path / "cola-data"  # a few rows of each file: the test is about reporting, not quality
    cola.mkdir()
    for name in ("in_domain_train.tsv", "in_domain_dev.tsv", "out_of_domain_dev.tsv"):
        lines = (shared_data / "cola" / name).read_text(encoding="utf-8").splitlines(keepends=True)
        (cola / name).write_text("".join(lines[:24]), encoding="utf-8")
    out = tmp_path / "cola"
    assert main(["finetune", "--task", "cola", "--data-dir", str(cola), "--init", str(minilm_dir),
                 "--out", str(out), "--epochs", "1", "--batch-size", "8", "--max-seq-len", "32",
                 "--max-train-examples", "24", "--log-every", "1", "--report-to", "tensorboard"]) == 0
    scalars = tensorboard_scalars(out / "tensorboard")
    assert sorted(scalars["train/loss"]) == [1, 2, 3]  # per step, not per epoch
    assert sorted(scalars["eval/in_domain/mcc"]) == [3]  # dev metrics after the epoch
