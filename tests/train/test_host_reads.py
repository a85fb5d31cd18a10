"""No device-to-host read in the steady-state training step, for pretraining and fine-tuning.

On a GPU every ``.item()``, ``bool(tensor)``, ``.tolist()``, ``.cpu()`` or ``.numpy()`` of a
device tensor makes the host wait for the device, and so does every op whose output size
depends on the data (``nonzero``, boolean-mask indexing, ``unique``, ``masked_select``): the
host can no longer queue the next step while the GPU runs this one. On a CPU all tensors are
host tensors, so the test counts the calls themselves: an aten ``_local_scalar_dense`` (what
``.item()``, ``bool()`` and ``int()`` of a tensor dispatch), a call of the other three, or a
data-sized op. Reads made while the loop logs, evaluates or checkpoints are allowed (the host
waits there anyway), and so are reads made while producing batches (host tensors, in
DataLoader workers on a GPU). Everything else, between two logging steps, must be zero.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fastbert.train.engines import LocalEngine

# The loop's own functions that run only at logging, evaluation and checkpoint steps.
SYNC_POINTS = {"log", "run_evaluation", "check_finite", "save", "_publish_model"}
# Where batches are made: host tensors only.
DATA_FUNCTIONS = {"batches", "make_batches", "collate"}
DATA_PATHS = ("/fastbert/data/", "/torch/utils/data/")
# Code that runs on a CPU only (LocalEngine's sparse word-embedding gradients), where nothing
# waits for a device.
CPU_ONLY_FUNCTIONS = {"touched_rows"}
LOOP_FILE = str(Path("fastbert") / "train" / "loop.py")


class HostReads(TorchDispatchMode):
    """Records, per read, whether it happened inside the loop's steady-state step."""

    def __init__(self) -> None:
        super().__init__()
        self.in_step: list[str] = []
        self.at_sync_points = 0

    def record(self, what: str) -> None:
        names, in_loop = [], False
        frame = sys._getframe(1)
        while frame is not None:
            code = frame.f_code
            names.append(code.co_name)
            if code.co_filename.endswith(LOOP_FILE) and code.co_name == "train":
                in_loop = True
            if code.co_name in DATA_FUNCTIONS or any(p in code.co_filename for p in DATA_PATHS):
                return  # making a batch
            if code.co_name in CPU_ONLY_FUNCTIONS:
                return
            frame = frame.f_back
        if not in_loop:
            return  # set-up before the first step
        if SYNC_POINTS & set(names):
            self.at_sync_points += 1
        else:
            self.in_step.append(f"{what} in {' <- '.join(names[:6])}")

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.record("item/bool/int")
        elif func in DATA_SIZED or (func is torch.ops.aten.index.Tensor and _has_bool_index(args[1])):
            # The output's size depends on the data: on a GPU the host waits to learn it.
            self.record(str(func))
        return func(*args, **(kwargs or {}))


DATA_SIZED = {torch.ops.aten.nonzero.default, torch.ops.aten.masked_select.default, torch.ops.aten._unique2.default,
              torch.ops.aten.unique_consecutive.default, torch.ops.aten.unique_dim.default}


def _has_bool_index(indices) -> bool:
    return any(i is not None and i.dtype in (torch.bool, torch.uint8) for i in indices)


@pytest.fixture
def host_reads(monkeypatch):
    reads = HostReads()
    for name in ("tolist", "cpu", "numpy"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            reads.record(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    with reads:
        yield reads


def pretrain(data: Path, out: Path, optimizer: str = "adamw"):
    from fastbert.train.config import OptimizerConfig, PretrainConfig
    from fastbert.train.pretrain import run_pretraining

    config = PretrainConfig(model="tiny", max_steps=12, log_every=4, batch_size=4, num_workers=0, seed=3,
                            optim=OptimizerConfig(optimizer=optimizer))
    return run_pretraining(config, data, out, progress=False)


@pytest.mark.parametrize("optimizer", ["adamw", "lamb"])
def test_pretraining_steps_read_nothing_from_the_device_between_logs(tiny_pretraining_data, tmp_path, host_reads, optimizer):
    result = pretrain(tiny_pretraining_data, tmp_path, optimizer)
    assert result.step == 12 and [r["step"] for r in result.records] == [4, 8, 12]
    assert host_reads.in_step == []
    assert host_reads.at_sync_points > 0  # the detector sees the logging steps' reads


def test_fine_tuning_steps_read_nothing_from_the_device_between_logs(minilm_dir, shared_data, tmp_path, host_reads):
    from fastbert.finetune.config import FinetuneConfig
    from fastbert.finetune.runner import run_finetune
    from fastbert.train.config import OptimizerConfig

    config = FinetuneConfig(
        task="cola", data_dir=shared_data / "cola", init=minilm_dir, out=tmp_path, epochs=2, batch_size=8,
        max_seq_len=32, max_train_examples=64, log_every=4, optim=OptimizerConfig(lr=1e-4),
    )
    (run,) = run_finetune(config)["runs"]
    assert [e["train_steps"] for e in run["epochs"]] == [8, 8]
    assert host_reads.in_step == []
    assert host_reads.at_sync_points > 0


def test_the_detector_catches_a_data_sized_op_in_the_step(tiny_pretraining_data, tmp_path, monkeypatch, host_reads):
    # Batches without the collator's MLM positions: the head finds them with a nonzero, which
    # on a GPU waits for the device to say how many there are.
    from fastbert.data.collator import PretrainingCollator

    collate = PretrainingCollator.__call__

    def collate_without_positions(self, samples):
        batch = collate(self, samples)
        batch.inputs.mlm_positions = None
        return batch

    monkeypatch.setattr(PretrainingCollator, "__call__", collate_without_positions)
    pretrain(tiny_pretraining_data, tmp_path)
    assert len(host_reads.in_step) == 12 and all("nonzero" in read for read in host_reads.in_step)


def test_the_detector_catches_a_read_in_the_step(tiny_pretraining_data, tmp_path, monkeypatch, host_reads):
    step = LocalEngine.train_step

    def reading_step(self, batch):
        outputs = step(self, batch)
        outputs.loss.item()  # what the loop used to do for its non-finite check
        return outputs

    monkeypatch.setattr(LocalEngine, "train_step", reading_step)
    pretrain(tiny_pretraining_data, tmp_path)
    assert len(host_reads.in_step) == 12
