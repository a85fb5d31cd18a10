"""Checkpoints you can trust: manifests, resume falling back past damaged checkpoints, retention,
HF exports on a schedule, resume from a path, a verified final model, full disks."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import stat

import pytest
import torch

from fastbert import atomic
from fastbert.errors import DiskFull, UserError
from fastbert.train.checkpoint import CheckpointManager, export_model, verify_checkpoint
from fastbert.train.config import CheckpointPolicy, EngineConfig, OptimizerConfig
from fastbert.train.engines import LocalEngine
from fastbert.train.loop import LoopConfig, train

from train_toy import ToyRegressor, toy_batches

BATCHES = toy_batches(16, 4)


class NoMetrics:
    def batch_sums(self, batch, outputs):
        return {}

    def summarize(self, sums):
        return {}


def run(out_dir, max_steps, *, resume=False, save_every=2, policy=CheckpointPolicy()):
    torch.manual_seed(0)
    engine = LocalEngine(ToyRegressor(dropout=0.3), EngineConfig(optim=OptimizerConfig(lr=1e-2), total_steps=8))
    config = LoopConfig(out_dir=out_dir, max_steps=max_steps, log_every=1, save_every=save_every,
                        checkpoint_policy=policy, progress=False)
    return engine, train(engine, lambda step: iter(BATCHES[step:]), config, NoMetrics(), resume=resume)


def step_dir(out, step):
    return out / "checkpoints" / f"step_{step:08d}"


def losses(result):
    return {r["step"]: r["loss"] for r in result.records}


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """Six steps with a checkpoint every two, and their losses: what every resume must reproduce."""
    out = tmp_path_factory.mktemp("straight")
    _, result = run(out, max_steps=6)
    return out, losses(result)


def copy_run(source, target):
    shutil.copytree(source, target)
    return target


def test_each_checkpoint_lists_its_files_in_a_manifest_written_last(straight):
    out, _ = straight
    checkpoint = step_dir(out, 6)
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    files = {p.relative_to(checkpoint).as_posix() for p in checkpoint.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(manifest["files"]) == files and {"engine/engine.pt", "rng_rank0.pt", "trainer_state.json", "hf/toy.pt"} <= files
    for name, entry in manifest["files"].items():
        data = (checkpoint / name).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert verify_checkpoint(checkpoint) is None
    assert not list((out / "checkpoints").glob(".tmp-*"))


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, reason", [
    (lambda c: truncate(c / "engine" / "engine.pt"), "engine/engine.pt is .* bytes, its manifest says"),
    (lambda c: truncate(c / "rng_rank0.pt"), "rng_rank0.pt is .* bytes"),
    (lambda c: (c / "rng_rank0.pt").unlink(), "rng_rank0.pt is missing"),
    (lambda c: flip_last_byte(c / "engine" / "engine.pt"), "engine/engine.pt differs from its manifest's SHA-256"),
    (lambda c: truncate(c / "hf" / "toy.pt"), "hf/toy.pt is .* bytes"),
    (lambda c: (c / "manifest.json").unlink(), "has no manifest.json"),
])
def test_resume_skips_a_damaged_checkpoint_says_why_and_continues_exactly(straight, tmp_path, caplog, damage, reason):
    out = copy_run(straight[0], tmp_path / "run")
    damage(step_dir(out, 6))
    (out / "checkpoints" / "latest").unlink()  # a convenience: resuming never needs it
    with caplog.at_level(logging.WARNING, logger="fastbert.train.checkpoint"):
        _, resumed = run(out, max_steps=6, resume=True)
    assert any(re.match(f"skipping checkpoint step_00000006: .*{reason}", m) for m in caplog.messages), caplog.messages
    assert "resuming from step_00000004, the newest complete checkpoint" in caplog.messages
    assert not any("ranks, resuming on" in m for m in caplog.messages)  # a missing RNG file is no rank-count change
    assert losses(resumed) == {s: straight[1][s] for s in (5, 6)}
    assert verify_checkpoint(step_dir(out, 6)) is None  # rewritten whole
    assert (out / "model" / "toy.pt").read_bytes() == (step_dir(out, 6) / "hf" / "toy.pt").read_bytes()


def test_resume_without_any_complete_checkpoint_names_each_problem(straight, tmp_path):
    out = copy_run(straight[0], tmp_path / "run")
    for step in (2, 4, 6):
        (step_dir(out, step) / "rng_rank0.pt").unlink()
    with pytest.raises(UserError, match="no complete checkpoint to resume from .*step_00000006: rng_rank0.pt is missing; "
                                        "step_00000004: rng_rank0.pt is missing; step_00000002"):
        run(out, max_steps=6, resume=True)


def test_resume_from_a_named_checkpoint_of_another_run(straight, tmp_path):
    _, resumed = run(tmp_path / "new", max_steps=6, resume=step_dir(straight[0], 2))
    assert losses(resumed) == {s: straight[1][s] for s in (3, 4, 5, 6)}
    damaged = copy_run(straight[0], tmp_path / "damaged")
    truncate(step_dir(damaged, 2) / "engine" / "engine.pt")
    with pytest.raises(UserError, match="step_00000002: cannot resume from it: engine/engine.pt is"):
        run(tmp_path / "other", max_steps=6, resume=step_dir(damaged, 2))


def test_retention_keeps_the_newest_and_every_mth_and_exports_hf_every_nth(tmp_path):
    run(tmp_path, max_steps=8, save_every=1, policy=CheckpointPolicy(keep_last=2, keep_every=3, hf_every=4))
    kept = sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*"))
    assert kept == ["step_00000003", "step_00000006", "step_00000007", "step_00000008"]
    with_hf = sorted(p.parent.name for p in (tmp_path / "checkpoints").glob("step_*/hf"))
    assert with_hf == ["step_00000008"]  # step 4 had one too, and was not kept; 3, 6 and 7 never had one
    assert (tmp_path / "checkpoints" / "latest").read_text() == "step_00000008\n"
    run(tmp_path / "all", max_steps=4, save_every=1, policy=CheckpointPolicy(keep_last=0))
    assert len(list((tmp_path / "all" / "checkpoints").glob("step_*"))) == 4


def test_a_damaged_export_is_never_published_as_the_model(straight, tmp_path):
    out = copy_run(straight[0], tmp_path / "run")
    torch.manual_seed(0)
    engine = LocalEngine(ToyRegressor(), EngineConfig(total_steps=8))
    manager = CheckpointManager(out / "checkpoints", engine)
    before = (out / "model" / "toy.pt").read_bytes()
    flip_last_byte(step_dir(out, 6) / "hf" / "toy.pt")  # damaged after the resume verified it
    with pytest.raises(UserError, match="hf/toy.pt differs from its manifest's SHA-256; .*model was left as it was"):
        manager.publish_model(step_dir(out, 6), out / "model")
    assert (out / "model" / "toy.pt").read_bytes() == before
    assert sorted(os.listdir(out)) == ["checkpoints", "metrics.jsonl", "model"]  # no staging left


def test_a_full_disk_is_one_line_removes_staging_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    real_save = torch.save

    def save(obj, path, *args, **kwargs):
        if "step_00000004" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(DiskFull) as caught:
        run(tmp_path, max_steps=6)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"no space left on device: {tmp_path / 'checkpoints'} (checkpoint step_00000004: needs about ")
    assert "removed the unfinished checkpoint; the last complete one, step_00000002, is intact" in message
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["latest", "step_00000002"]
    assert verify_checkpoint(step_dir(tmp_path, 2)) is None


def test_a_write_failure_without_errno_is_called_a_full_disk_only_when_the_disk_is_full(tmp_path, monkeypatch):
    def save(obj, path, *args, **kwargs):  # what torch's zip writer raises when a write fails
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(atomic, "_room_for", lambda directory, size: True)
    with pytest.raises(RuntimeError, match="enforce fail"):
        run(tmp_path / "bug", max_steps=2)
    monkeypatch.setattr(atomic, "_room_for", lambda directory, size: False)
    with pytest.raises(DiskFull, match="there is no earlier one"):
        run(tmp_path / "full", max_steps=2)
    assert os.listdir(tmp_path / "full" / "checkpoints") == []


def test_exported_models_have_ordinary_permissions(tmp_path, minilm_dir):
    from fastbert.model import BertConfig, BertForSequenceClassification
    from fastbert.tokenizer import load_tokenizer

    engine = LocalEngine(BertForSequenceClassification(BertConfig.preset("tiny", vocab_size=30522)), EngineConfig())
    umask = os.umask(0o022)
    try:
        export_model(engine, tmp_path / "model", tokenizer=load_tokenizer(minilm_dir))
    finally:
        os.umask(umask)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "model").iterdir()}
    assert {"config.json", "model.safetensors", "vocab.txt"} <= set(modes)
    assert set(modes.values()) == {0o644}, modes  # as the tokenizer files, not mkstemp's 0600
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o755


def test_resume_repairs_a_torn_last_line_of_metrics(straight, tmp_path):
    out = copy_run(straight[0], tmp_path / "run")
    shutil.rmtree(step_dir(out, 6))  # killed after step 6 was logged, before its checkpoint
    with (out / "metrics.jsonl").open("a") as f:
        f.write('{"step": 7, "loss": 0.12')  # and in the middle of the next record
    _, resumed = run(out, max_steps=6, resume=True)
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 2, 3, 4, 5, 6]
    assert {r["step"]: r["loss"] for r in logged} == straight[1]
