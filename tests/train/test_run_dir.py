"""One writer per run directory: the lock, stale locks, reusing an --out, going back to an older checkpoint."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time

import pytest

from fastbert.errors import InputError, UserError
from fastbert.train import run_dir
from fastbert.train.launch import Launch
from fastbert.train.metrics import MetricsLog
from fastbert.train.run_dir import LOCK_FILE, RunLock, StartMode, claim_run_directory

ONE = Launch(0, 0, 1, None, None, "one process")
FRESH = StartMode()


def write_lock(out, **holder):
    out.mkdir(parents=True, exist_ok=True)
    fields = {"host": socket.gethostname(), "pid": os.getpid(), "process_start": None, "since": "earlier", "command": "fastbert pretrain"}
    (out / LOCK_FILE).write_text(json.dumps({**fields, **holder}))


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    return int(done.stdout)


def test_the_lock_names_its_holder_refuses_a_second_run_and_goes_when_the_run_ends(tmp_path):
    out = tmp_path / "run"
    with claim_run_directory(out, FRESH, ONE):
        holder = json.loads((out / LOCK_FILE).read_text())
        assert (holder["host"], holder["pid"]) == (socket.gethostname(), os.getpid())
        with pytest.raises(UserError) as caught:
            with claim_run_directory(out, StartMode(resume=True), ONE):
                pass
        message = str(caught.value)
        assert "\n" not in message
        assert message.startswith(f"{out}: another run is writing here (PID {os.getpid()} on {socket.gethostname()} since ")
        assert (out / LOCK_FILE).is_file()  # the refused run left the holder's lock alone
    assert os.listdir(out) == []


def test_a_live_run_in_another_process_holds_its_directory(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\n"
         "from fastbert.train.launch import Launch\n"
         "from fastbert.train.run_dir import StartMode, claim_run_directory\n"
         "with claim_run_directory(sys.argv[1], StartMode(), Launch(0, 0, 1, None, None, 'one process')):\n"
         "    print('holding', flush=True); time.sleep(60)\n", str(out)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert holder.stdout.readline() == "holding\n"
        with pytest.raises(UserError, match=f"another run is writing here \\(PID {holder.pid} "):
            with claim_run_directory(out, FRESH, ONE):
                pass
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("holder, reason", [
    (lambda: {"pid": dead_pid()}, "that process is gone"),
    (lambda: {"process_start": "1"}, "its PID now belongs to another process"),  # our PID, reused
])
def test_a_stale_lock_on_this_host_is_taken_over_with_a_message(tmp_path, caplog, holder, reason):
    out = tmp_path / "run"
    fields = holder()
    write_lock(out, **fields)
    with caplog.at_level(logging.WARNING, logger="fastbert.train.run_dir"):
        with claim_run_directory(out, FRESH, ONE):
            assert json.loads((out / LOCK_FILE).read_text())["pid"] == os.getpid()
    pid = fields.get("pid", os.getpid())
    assert f"{out}: took over the stale lock of PID {pid} on {socket.gethostname()} since earlier (fastbert pretrain) ({reason})" in caplog.messages


def test_a_lock_from_another_host_is_stale_only_once_its_heartbeat_stops(tmp_path, caplog):
    out = tmp_path / "run"
    write_lock(out, host="gpu-node-17", pid=1)
    with pytest.raises(UserError, match="another run is writing here \\(PID 1 on gpu-node-17"):
        with claim_run_directory(out, FRESH, ONE):
            pass
    twenty_minutes_ago = time.time() - 20 * 60
    os.utime(out / LOCK_FILE, (twenty_minutes_ago, twenty_minutes_ago))
    with caplog.at_level(logging.WARNING, logger="fastbert.train.run_dir"):
        with claim_run_directory(out, FRESH, ONE):
            pass
    assert any("took over the stale lock of PID 1 on gpu-node-17" in m and "no heartbeat for 20 minutes" in m for m in caplog.messages)


def test_a_requeued_slurm_job_takes_over_the_lock_of_its_earlier_start_at_once(tmp_path, caplog, monkeypatch):
    out = tmp_path / "run"
    write_lock(out, host="gpu-node-17", pid=1, slurm_job="4242.0")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    with caplog.at_level(logging.WARNING, logger="fastbert.train.run_dir"):
        with claim_run_directory(out, FRESH, ONE):
            assert json.loads((out / LOCK_FILE).read_text())["slurm_job"] == "4242.1"
    assert any("took over the stale lock of PID 1 on gpu-node-17" in m and "SLURM requeued job 4242, restart 1" in m for m in caplog.messages)
    write_lock(out, host="gpu-node-17", pid=1, slurm_job="5000.0")  # another job's run is no earlier start of ours
    with pytest.raises(UserError, match="another run is writing here"):
        with claim_run_directory(out, FRESH, ONE):
            pass


def test_the_holder_refreshes_its_lock(tmp_path, monkeypatch):
    monkeypatch.setattr(run_dir, "HEARTBEAT_S", 0.05)
    lock = RunLock(tmp_path)
    lock.acquire()
    try:
        os.utime(lock.path, (0, 0))
        time.sleep(0.5)
        assert time.time() - lock.path.stat().st_mtime < 5
    finally:
        lock.release()
    assert not lock.path.exists()


def earlier_run(out):
    (out / "checkpoints" / "step_00000002").mkdir(parents=True)
    (out / "metrics.jsonl").write_text('{"step": 1}\n')
    (out / "model").mkdir()
    (out / "config.yaml").write_text("model: tiny\n")  # the user's, not the run's
    (out / ".model.tmp-abc123").mkdir()  # staging left by a killed run


def test_an_earlier_run_needs_resume_or_overwrite(tmp_path, caplog):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("model: tiny\n")
    with claim_run_directory(out, FRESH, ONE):  # a folder with only the user's files is no earlier run
        pass
    earlier_run(out)
    with pytest.raises(UserError, match=f"^{out}: holds an earlier run \\(checkpoints, metrics.jsonl, model\\); add --resume "
                                        "to continue it, add --overwrite to replace it, or choose another --out$"):
        with claim_run_directory(out, FRESH, ONE):
            pass
    with pytest.raises(UserError, match="holds an earlier run .*; add --overwrite to replace it"):
        with claim_run_directory(out, FRESH, ONE, resumable=False):
            pass
    with claim_run_directory(out, StartMode(resume=True), ONE):
        assert sorted(os.listdir(out)) == ["checkpoints", "config.yaml", LOCK_FILE, "metrics.jsonl", "model"]  # debris gone
    with caplog.at_level(logging.WARNING, logger="fastbert.train.run_dir"):
        with claim_run_directory(out, StartMode(overwrite=True), ONE):
            assert sorted(os.listdir(out)) == ["config.yaml", LOCK_FILE]
    assert f"{out}: --overwrite removed the earlier run's checkpoints, metrics.jsonl, model" in caplog.messages
    with pytest.raises(UserError, match="--overwrite deletes the checkpoints --resume would continue from"):
        StartMode(resume=True, overwrite=True)


def test_going_back_to_an_older_checkpoint_discards_the_later_ones_only_with_overwrite(tmp_path):
    out = tmp_path / "run"
    for step in (2, 4, 6):
        (out / "checkpoints" / f"step_{step:08d}").mkdir(parents=True)
    back = StartMode(resume_from=out / "checkpoints" / "step_00000002")
    with pytest.raises(UserError, match="has checkpoints after step_00000002 \\(step_00000004, step_00000006\\); add --overwrite"):
        with claim_run_directory(out, back, ONE):
            pass
    with claim_run_directory(out, StartMode(resume_from=back.resume_from, overwrite=True), ONE):
        assert sorted(os.listdir(out / "checkpoints")) == ["latest", "step_00000002"]
    assert (out / "checkpoints" / "latest").read_text() == "step_00000002\n"
    other = tmp_path / "other"
    (other / "checkpoints" / "step_00000009").mkdir(parents=True)
    with pytest.raises(UserError, match="holds an earlier run"):  # resuming another run's checkpoint into it
        with claim_run_directory(other, back, ONE):
            pass


def test_a_torn_last_metrics_line_is_dropped_and_a_bad_earlier_one_is_an_error(tmp_path, caplog):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for step in (1, 2, 3):
        log.append({"step": step, "loss": 1.0 / step})
    with log.path.open("a") as f:
        f.write('{"step": 4, "lo')  # killed mid-write
    with caplog.at_level(logging.WARNING, logger="fastbert.train.metrics"):
        log.truncate_after(2)
    assert [r["step"] for r in log.read()] == [1, 2]
    assert any("metrics.jsonl:4: dropping a torn last record" in m for m in caplog.messages)
    log.path.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(InputError, match="metrics.jsonl:2: not a metrics record"):
        log.truncate_after(5)
