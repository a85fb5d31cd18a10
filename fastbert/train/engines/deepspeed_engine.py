"""The :class:`~.base.Engine` interface over ``deepspeed.initialize`` (ZeRO 0-3).

DeepSpeed is imported here only, lazily: the GPU image has none, and a CPU user training
locally never pays for it. The optimizer (torch AdamW or our LAMB) and the schedule are
client objects, so DeepSpeed never JIT-compiles its fused CUDA optimizers.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...errors import UserError
from ...model.inputs import Batch
from ..config import EngineConfig
from ..host_memory import give_back_if_memory_is_low, keep_freed_host_memory
from ..launch import start_launch
from ..schedule import build_scheduler
from .base import AccumulationWindow, Engine
from .optim import build_optimizer

logger = logging.getLogger(__name__)

ENGINE_TAG = "engine"
DEFAULT_CONFIG: dict[str, Any] = {"zero_optimization": {"stage": 0}}
"""What a launch with several processes and no DeepSpeed config runs: plain data parallelism."""
# Keys a DeepSpeed JSON may leave as "auto" (or omit): filled from the training config.
AUTO_KEYS = ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping")


def import_deepspeed():
    try:
        import deepspeed
    except ImportError:
        raise UserError("a DeepSpeed config was given but deepspeed is not installed (pip install deepspeed)") from None
    return deepspeed


def resolve_deepspeed_config(config: EngineConfig, cuda: bool) -> dict[str, Any]:
    """Fill the "auto" entries of ``config.deepspeed_config`` from the training config.

    A concrete value that contradicts the training config is an error rather than a
    silent override: the two would otherwise disagree about the global batch.
    """
    ds = copy.deepcopy(config.deepspeed_config or DEFAULT_CONFIG)
    for key in ("optimizer", "scheduler"):
        if key in ds:
            raise UserError(f"DeepSpeed config key {key!r} is not supported: fastbert passes its own {key} (set it in the training config)")
    ours = {
        "train_micro_batch_size_per_gpu": config.micro_batch_size,
        "gradient_accumulation_steps": config.grad_accum_steps,
        "gradient_clipping": config.optim.grad_clip,
    }
    for key, value in ours.items():
        given = ds.get(key, "auto")
        if given != "auto" and given != value:
            raise UserError(f"DeepSpeed config key {key!r} is {given!r} but the training config says {value!r}; set it to \"auto\"")
        ds[key] = value
    if ds.get("train_batch_size", "auto") == "auto":
        ds.pop("train_batch_size", None)
    bf16 = ds.setdefault("bf16", {})
    if bf16.get("enabled", "auto") == "auto":
        bf16["enabled"] = cuda if config.bf16 is None else config.bf16
    ds.setdefault("steps_per_print", 1 << 30)  # the training loop does the logging
    if config.optim.optimizer == "lamb":
        check_lamb(zero_stage(ds))
    return ds


def check_lamb(stage: int) -> None:
    """fastbert's LAMB runs as DeepSpeed's client optimizer at ZeRO stage 0; nothing runs LAMB at 1-3.

    LAMB's trust ratio is per parameter tensor. At stage 0 DeepSpeed steps a client optimizer
    on whole tensors: the parameters themselves in fp32, or per-tensor fp32 master copies in
    bf16 (its FP16_UnfusedOptimizer wrapper). At stages 1-3 the optimizer gets flat fp32 shards
    that cut across tensors, so no per-tensor norm exists.

    DeepSpeed's own LAMB (``"optimizer": {"type": "Lamb"}``, ``deepspeed.ops.lamb.FusedLamb``) is
    no better anywhere: it is CUDA-only and JIT-compiles with nvcc; it is not on ZeRO's list of
    supported optimizers (with ``zero_allow_untested_optimizer`` it would take each flat shard
    for a tensor); it loops over tensors in Python with three kernels each and a host-side step
    count, and has no device-side skip; and it is another update (bias correction applied
    after the trust ratio, which is clamped to [0.01, 10]), so a run could not resume across
    engines or match the local engine's.
    """
    if stage > 0:
        raise UserError(
            f"LAMB needs whole parameter tensors for its per-tensor trust ratio, but ZeRO stage {stage} shards them "
            "across ranks (DeepSpeed's own LAMB does not support ZeRO either); use ZeRO stage 0, AdamW, or no --deepspeed"
        )


def zero_stage(ds_config: dict[str, Any]) -> int:
    return int(ds_config.get("zero_optimization", {}).get("stage", 0))


SHM_DIR = Path("/dev/shm")


def shm_allreduce_buffer(rank: int) -> Path:
    """Where DeepSpeed's CPU accelerator puts rank ``rank``'s shared-memory all-reduce buffer
    (ops/csrc/cpu/comm/shm.cpp names it after the user, MASTER_ADDR and MASTER_PORT)."""
    addr, port = os.environ.get("MASTER_ADDR", ""), os.environ.get("MASTER_PORT", "")
    return SHM_DIR / f"deepspeed_allreduce_buffer_{os.getuid()}_{addr}_{port}_{rank}"


def release_shm_allreduce_buffer() -> None:
    """Unlink this rank's DeepSpeed CPU all-reduce buffer once every rank has mapped it.

    On the CPU accelerator, when all ranks share one machine, ``init_distributed`` gives each
    rank a 66 MB buffer in /dev/shm and maps every rank's; DeepSpeed never unlinks them, so
    every CPU launch left 66 MB of RAM per rank behind until reboot (3.4 GB in /dev/shm after
    one day of this project's tests). Unlinked once all ranks are past the barrier (their
    mapping is done inside ``init_distributed``), the memory lives on in those mappings and
    goes back to the system when the last rank exits, however it exits.
    """
    if not torch.distributed.is_initialized():
        return
    buffer = shm_allreduce_buffer(torch.distributed.get_rank())
    if torch.distributed.get_world_size() > 1:
        torch.distributed.barrier()  # every rank has mapped every buffer
    buffer.unlink(missing_ok=True)  # absent: a GPU launch, or ranks on several machines


class DeepSpeedEngine(Engine):
    """DeepSpeed's engine behind fastbert's Engine interface."""

    def __init__(self, model: nn.Module, config: EngineConfig):
        deepspeed = import_deepspeed()
        from deepspeed.accelerator import get_accelerator

        ds_config = resolve_deepspeed_config(config, cuda=get_accelerator().device_name() == "cuda")
        # The launch as fastbert discovers it (torchrun, srun, mpirun or none), never
        # DeepSpeed's guess of a world of one (or its mpi4py discovery) when RANK is unset.
        start_launch()
        deepspeed.init_distributed()
        release_shm_allreduce_buffer()
        self.stage = zero_stage(ds_config)
        self.bf16 = bool(ds_config["bf16"]["enabled"])
        if self.stage == 3:
            # ZeRO-3 gathers a module's own parameters around its forward only; fused modules
            # read their children's (and the tied decoder reads the embeddings') parameters.
            for module, param in getattr(model, "external_parameter_uses", lambda: ())():
                deepspeed.zero.register_external_parameter(module, param)
        device = torch.device(get_accelerator().current_device_name())
        optimizer = build_optimizer(model, config.optim, device)
        scheduler = build_scheduler(optimizer, config.warmup_steps, config.total_steps)
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config
        )
        self.config = config
        self.module = self.engine.module
        self.device = self.engine.device
        if torch.device(self.device).type == "cpu":
            keep_freed_host_memory()  # a CPU step reallocates its large buffers every step
        self.rank = self.engine.global_rank
        self.world_size = self.engine.world_size
        self.window = AccumulationWindow(config.grad_accum_steps, self.device)
        # The last checkpoint written, reused by export_hf to gather ZeRO shards.
        self._saved: tuple[Path, int] | None = None

    def train_step(self, batch: Batch) -> Any:
        batch = batch.to(self.device, non_blocking=self.device.type == "cuda")
        outputs = self.engine(batch.inputs, **batch.targets)
        closes_window = self.window.add(outputs.loss)
        self.engine.backward(outputs.loss)  # DeepSpeed scales by 1/accumulation itself
        if closes_window:
            self._check_before_update(self.window.nonfinite)  # DeepSpeed's step cannot be skipped on the device
            self.window.reset()
        self.engine.step()  # DeepSpeed counts micro-batches and updates at the boundary
        give_back_if_memory_is_low()  # what the CPU heap keeps must not get the run killed
        return outputs

    @torch.no_grad()
    def forward(self, batch: Batch) -> Any:
        was_training = self.module.training
        self.engine.eval()
        try:
            batch = batch.to(self.device, non_blocking=self.device.type == "cuda")
            return self.engine(batch.inputs, **batch.targets)
        finally:
            self.engine.train(was_training)

    @property
    def global_step(self) -> int:
        return self.engine.global_steps

    @property
    def grad_norm(self) -> float | None:
        norm = self.engine.get_global_grad_norm()
        return None if norm is None else float(norm)

    def get_lr(self) -> float:
        return self.engine.get_lr()[0]

    def save_checkpoint(self, directory: str | os.PathLike, client_state: dict[str, Any]) -> None:
        directory = Path(directory)
        self.engine.save_checkpoint(str(directory), tag=ENGINE_TAG, client_state=client_state, save_latest=False)
        self._saved = (directory, self.global_step)

    def load_checkpoint(self, directory: str | os.PathLike) -> dict[str, Any]:
        path, client_state = self.engine.load_checkpoint(str(directory), tag=ENGINE_TAG)
        if path is None:
            raise UserError(f"{directory}: no DeepSpeed checkpoint here (was it written without --deepspeed?)")
        return client_state

    def export_hf(self, out_dir: str | os.PathLike, tokenizer: Any = None) -> None:
        if self._saved is not None and self._saved[1] == self.global_step and (self._saved[0] / ENGINE_TAG).is_dir():
            self._export_from(self._saved[0], out_dir, tokenizer)
            return
        # No checkpoint of the current weights: write a scratch one to gather from.
        scratch = None
        if self.is_main:  # beside out_dir, whose parent may not exist yet (as save_pretrained allows)
            Path(out_dir).parent.mkdir(parents=True, exist_ok=True)
            scratch = Path(tempfile.mkdtemp(prefix=".export-", dir=Path(out_dir).parent))
        scratch_list = [scratch]
        if self.world_size > 1:
            torch.distributed.broadcast_object_list(scratch_list, src=0)
        scratch = scratch_list[0]
        try:
            self.save_checkpoint(scratch, client_state={})
            self._export_from(scratch, out_dir, tokenizer)
        finally:
            self._saved = None
            self.barrier()
            if self.is_main:
                shutil.rmtree(scratch, ignore_errors=True)

    def _export_from(self, checkpoint_dir: Path, out_dir: str | os.PathLike, tokenizer: Any) -> None:
        self.barrier()  # every rank's shard is on disk
        if self.is_main:
            state = self._fp32_state_dict(checkpoint_dir)
            # A fresh host copy: the engine's module may hold sharded or bf16 parameters. Its
            # initialisation must not consume the training RNG, or a resumed run would diverge.
            with torch.random.fork_rng(devices=[]):
                model = type(self.module)(self.module.config)
            model.load_checkpoint_state(state, checkpoint_dir)
            model.save_pretrained(out_dir, tokenizer=tokenizer)
        self.barrier()

    def _fp32_state_dict(self, checkpoint_dir: Path) -> dict[str, torch.Tensor]:
        if self.stage == 0 and not self.bf16:
            # Stage 0 writes no ZeRO shards: the module states are the fp32 weights.
            states = torch.load(checkpoint_dir / ENGINE_TAG / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)
            return states["module"]
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        return get_fp32_state_dict_from_zero_checkpoint(str(checkpoint_dir), tag=ENGINE_TAG)
