"""Two CPU ranks (gloo) started by torchrun, and by hand-set SLURM variables as srun sets them,
train exactly as one process with the same global batch: same losses, same learning rates."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fastbert.cli import main

from pretrain_data import make_pretraining_data

REPO = Path(__file__).resolve().parents[2]
NO_DROPOUT = "model_overrides={hidden_dropout_prob: 0, attention_probs_dropout_prob: 0}"
STEPS = 8
LAUNCH_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")

pytest.importorskip("deepspeed")  # several processes without --deepspeed train through DeepSpeed's ZeRO stage 0


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_pretraining_data(tmp_path_factory.mktemp("made"), documents=80)


def pretrain_args(data: Path, out: Path, batch_size: int, *extra: str) -> list[str]:
    return ["pretrain", "--config", str(REPO / "configs/pretrain/tiny.yaml"), "--data", str(data), "--out", str(out),
            "--max-steps", str(STEPS), "--batch-size", str(batch_size), "--log-every", "1", "--warmup-steps", "3",
            "--no-progress", "--set", NO_DROPOUT, *extra]


@pytest.fixture(scope="module")
def one_process(data, tmp_path_factory) -> list[dict]:
    """One process, 4 sequences x 2 accumulation steps: the global batch of two ranks x 4."""
    out = tmp_path_factory.mktemp("one") / "run"
    assert main(pretrain_args(data, out, 4, "--grad-accum-steps", "2")) == 0
    return records(out)


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def assert_same_training(two_ranks: list[dict], one: list[dict]) -> None:
    assert [r["step"] for r in two_ranks] == [r["step"] for r in one] == list(range(1, STEPS + 1))
    for ours, theirs in zip(two_ranks, one):
        assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-4), ours["step"]
        assert ours["lr"] == theirs["lr"]  # the schedule counts optimizer steps, whatever the world size
    assert two_ranks[-1]["loss"] < two_ranks[0]["loss"]


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES and not k.startswith("SLURM_")}
    return {**env, "PYTHONPATH": os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]),
            # DeepSpeed compiles a small communication op on first use; cache it across runs.
            "TORCH_EXTENSIONS_DIR": env.get("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache/fastbert/torch_extensions")),
            "OMP_NUM_THREADS": "1", **extra}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_ranks_train_as_one_process(data, one_process, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
               "-m", "fastbert", *pretrain_args(data, out, 4)]
    done = subprocess.run(command, env=environment(), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert_same_training(records(out), one_process)
    state = json.loads((out / "checkpoints" / "step_00000008" / "trainer_state.json").read_text())
    assert state["world_size"] == 2 and (out / "checkpoints" / "step_00000008" / "rng_rank1.pt").is_file()


def test_slurm_tasks_set_by_hand_train_as_one_process(data, one_process, tmp_path):
    out, port = tmp_path / "run", str(free_port())
    tasks = [
        subprocess.Popen(
            [sys.executable, "-m", "fastbert", *pretrain_args(data, out, 4)], cwd=REPO, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            # What srun exports to task `rank` of a 2-task step on one node (plus the port: srun names none).
            env=environment(SLURM_JOB_ID="31337", SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank), SLURM_NTASKS="2",
                            SLURM_STEP_NUM_TASKS="2", SLURM_STEP_NODELIST="localhost", SLURM_NODELIST="localhost",
                            MASTER_PORT=port),
        )
        for rank in (0, 1)
    ]
    logs = [task.communicate(timeout=600)[0] for task in tasks]
    assert [task.returncode for task in tasks] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    assert "2 ranks (SLURM), rendezvous at localhost:" in logs[0]
    assert_same_training(records(out), one_process)
