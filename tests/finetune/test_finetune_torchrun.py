"""`torchrun --nproc_per_node 2 -m fastbert finetune` (CPU ranks, gloo) trains as one process with the same global batch."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastbert.cli import main

REPO = Path(__file__).resolve().parents[2]
LAUNCH_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")

pytest.importorskip("deepspeed")  # several processes without --deepspeed train through DeepSpeed's ZeRO stage 0


@pytest.fixture(scope="module")
def task_data(tmp_path_factory) -> Path:
    """64 CoLA-format training rows and 16 of each dev split, of made-up sentences."""
    rng = random.Random(0)
    words = ["sailor", "breeze", "rock", "read", "book", "the", "a", "rode", "more", "clear", "of", "I", "we", "saw"]

    def rows(count: int) -> str:
        return "".join(f"src\t{rng.randint(0, 1)}\t\t{' '.join(rng.choice(words) for _ in range(rng.randint(3, 12)))}.\n"
                       for _ in range(count))

    data = tmp_path_factory.mktemp("cola")
    (data / "in_domain_train.tsv").write_text(rows(64))
    (data / "in_domain_dev.tsv").write_text(rows(16))
    (data / "out_of_domain_dev.tsv").write_text(rows(16))
    return data


@pytest.fixture(scope="module")
def init(minilm_dir, tmp_path_factory) -> Path:
    """A random 2-layer BERT without dropout (ranks draw other dropout masks than one process), MiniLM's tokenizer."""
    from fastbert.model import BertConfig, BertModel
    from fastbert.tokenizer import load_tokenizer

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny")
    config = BertConfig.preset("tiny", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
    BertModel(config).save_pretrained(path, tokenizer=load_tokenizer(minilm_dir))
    return path


def finetune_args(data: Path, init: Path, out: Path, batch_size: int) -> list[str]:
    return ["finetune", "--task", "cola", "--data-dir", str(data), "--init", str(init), "--out", str(out), "--seed", "5",
            "--epochs", "2", "--lr", "1e-3", "--max-seq-len", "32", "--batch-size", str(batch_size)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_ranks_fine_tune_as_one_process(task_data, init, tmp_path):
    assert main(finetune_args(task_data, init, tmp_path / "one", 16)) == 0
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES}
    env.update(PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1",
               TORCH_EXTENSIONS_DIR=env.get("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache/fastbert/torch_extensions")))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
               "-m", "fastbert", *finetune_args(task_data, init, tmp_path / "two", 8)]
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    one, two = (json.loads((tmp_path / run / "results.json").read_text())["runs"][0] for run in ("one", "two"))
    for a, b in zip(one["epochs"], two["epochs"], strict=True):
        assert b["train_steps"] == a["train_steps"] == 64 // 16
        assert b["lr_end"] == a["lr_end"]  # each rank's schedule spans the whole run, not 1/N of it
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        for split, metrics in a["eval"].items():
            assert b["eval"][split] == pytest.approx(metrics, abs=1e-6)
    assert one["epochs"][0]["lr_end"] > 0
