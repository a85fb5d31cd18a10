"""Who this process is in a training job, whichever launcher started it.

torchrun and the deepspeed launcher export torch's variables (RANK, LOCAL_RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT); srun and mpirun export their own. :func:`discover_launch` reads
them in this order:

1. torch's variables (torchrun, the deepspeed launcher, or set by hand);
2. a SLURM step (srun): SLURM_PROCID, SLURM_LOCALID, SLURM_STEP_NUM_TASKS, the rendezvous on
   the first host of SLURM_STEP_NODELIST (SLURM_JOB_NODELIST, SLURM_NODELIST) at a port
   derived from the job id; unless MPI variables disagree with it (mpirun starts its daemons
   with srun, so its ranks inherit a step of one task per node);
3. MPI (Open MPI, MVAPICH, MPICH/Intel MPI), with MASTER_ADDR given (MPI names no host);
4. nothing: one process. A SLURM allocation of several tasks whose processes srun did not
   start (plain ``python`` in an sbatch script) is an error rather than one process, which
   would waste the allocation, or N copies, which would write one --out N times.

:func:`start_launch` writes the result back as torch's variables (so torch.distributed and
DeepSpeed initialise from the same values) and joins the process group. Standard library
only, apart from that last step.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import UserError

logger = logging.getLogger(__name__)

DEFAULT_MASTER_PORT = 29500
"""torch's default rendezvous port, for launchers that name a host but no port."""
SLURM_PORT_BASE, SLURM_PORT_SPAN = 12000, 20000
"""SLURM names no port: every task derives the same one from the job id, below Linux's
ephemeral range (32768 and up) so that it is rarely taken."""
SLURM_NODELIST_VARIABLES = ("SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST")
MPI_VARIABLES = (  # (name, rank, world size, local rank)
    ("Open MPI", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
    ("MVAPICH", "MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_LOCAL_RANK"),
    ("MPICH/Intel MPI", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
)


@dataclass(frozen=True)
class Launch:
    """This process's place in the job and where the ranks meet."""

    rank: int
    local_rank: int
    """Index of this process among those on its node: its GPU."""
    world_size: int
    master_addr: str | None
    """Host of rank 0's rendezvous; None for one process."""
    master_port: int | None
    launcher: str
    """Where the values came from, for the log: "torchrun/deepspeed", "SLURM", "Open MPI", ... or "one process"."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def cuda_index(self, visible_devices: int) -> int:
        """The GPU of this process among the visible ones: its local rank, or the only one
        when the launcher binds one GPU per task (srun --gpus-per-task=1)."""
        if visible_devices == 1:
            return 0
        if self.local_rank >= visible_devices:
            raise UserError(f"local rank {self.local_rank} ({self.launcher}) but only {visible_devices} GPUs are visible; "
                            "start at most one process per GPU")
        return self.local_rank

    def export(self) -> None:
        """Set torch's variables to this launch (one process gets a local rendezvous of its own)."""
        addr = self.master_addr or os.environ.get("MASTER_ADDR", "127.0.0.1")
        port = self.master_port or _integer(os.environ, "MASTER_PORT", default=0) or _free_port()
        os.environ.update(RANK=str(self.rank), LOCAL_RANK=str(self.local_rank), WORLD_SIZE=str(self.world_size),
                          MASTER_ADDR=addr, MASTER_PORT=str(port))


def discover_launch(environ: Mapping[str, str] | None = None) -> Launch:
    """This process's launch, from whichever launcher's variables are set (see the module docstring)."""
    env = os.environ if environ is None else environ
    if "RANK" in env or "WORLD_SIZE" in env:
        return _from_torch(env)
    slurm, mpi = _from_slurm_step(env), _from_mpi(env)
    if slurm is not None and (mpi is None or (mpi.rank, mpi.world_size) == (slurm.rank, slurm.world_size)):
        return slurm
    if mpi is not None:
        return mpi
    tasks = _integer(env, "SLURM_NTASKS", default=1)
    if tasks > 1:
        raise UserError(
            f"this SLURM allocation has {tasks} tasks (SLURM_NTASKS) but srun did not start this process (no SLURM_STEP_NUM_TASKS): "
            "run `srun python -m fastbert ...` (one task per GPU), or torchrun, or ask for --ntasks 1"
        )
    return Launch(0, 0, 1, None, None, "one process")


def start_launch() -> Launch:
    """Discover this process's launch, export it as torch's variables and, for several
    processes, join the process group (NCCL on CUDA, gloo on CPUs) on this process's GPU."""
    import torch
    import torch.distributed as dist

    launch = discover_launch()
    launch.export()
    if torch.cuda.is_available():
        index = launch.cuda_index(torch.cuda.device_count())
        os.environ["LOCAL_RANK"] = str(index)  # DeepSpeed takes its device from LOCAL_RANK
        torch.cuda.set_device(index)
    if launch.world_size > 1 and not dist.is_initialized():
        if launch.is_main:
            logger.info("%d ranks (%s), rendezvous at %s:%d", launch.world_size, launch.launcher, launch.master_addr, launch.master_port)
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return launch


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: ``gpu[003-004,7],cpu1`` gives ``gpu003``.

    ``scontrol show hostnames`` expands lists where SLURM is installed; the parse below
    covers its bracket syntax elsewhere (and where scontrol fails).
    """
    if shutil.which("scontrol"):
        try:
            done = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=30)
            if done.returncode == 0 and done.stdout.split():
                return done.stdout.split()[0]
        except (OSError, subprocess.TimeoutExpired):
            pass
    first = re.match(r"[^,\[]*(?:\[[^\]]*\][^,\[]*)*", nodelist.strip()).group()
    # Each bracket group "[003-004,7]" becomes the start of its first range, zero padding kept.
    host = re.sub(r"\[([^\]\-,]*)[^\]]*\]", r"\1", first)
    if not host:
        raise UserError(f"cannot read a host from the SLURM node list {nodelist!r}")
    return host


def _from_torch(env: Mapping[str, str]) -> Launch:
    for name in ("RANK", "WORLD_SIZE"):
        if name not in env:
            raise UserError(f"{'WORLD_SIZE' if name == 'RANK' else 'RANK'} is set but {name} is not; a launcher sets both")
    world = _integer(env, "WORLD_SIZE")
    if world > 1 and "LOCAL_RANK" not in env:
        raise UserError("RANK and WORLD_SIZE are set but LOCAL_RANK is not; set it to the process's index on its node")
    return _checked("torchrun/deepspeed", _integer(env, "RANK"), _integer(env, "LOCAL_RANK", default=0), world,
                    env.get("MASTER_ADDR"), _integer(env, "MASTER_PORT", default=DEFAULT_MASTER_PORT), "MASTER_ADDR")


def _from_slurm_step(env: Mapping[str, str]) -> Launch | None:
    if "SLURM_STEP_NUM_TASKS" not in env or "SLURM_PROCID" not in env:
        return None
    world = _integer(env, "SLURM_STEP_NUM_TASKS")
    addr = env.get("MASTER_ADDR")
    if addr is None and world > 1:
        nodelist = next((env[name] for name in SLURM_NODELIST_VARIABLES if env.get(name)), None)
        addr = first_host(nodelist) if nodelist else None
    default_port = SLURM_PORT_BASE + _integer(env, "SLURM_JOB_ID", default=0) % SLURM_PORT_SPAN
    return _checked("SLURM", _integer(env, "SLURM_PROCID"), _integer(env, "SLURM_LOCALID", default=0), world,
                    addr, _integer(env, "MASTER_PORT", default=default_port), "MASTER_ADDR or SLURM_STEP_NODELIST")


def _from_mpi(env: Mapping[str, str]) -> Launch | None:
    for name, rank, size, local_rank in MPI_VARIABLES:
        if rank in env and size in env:
            world = _integer(env, size)
            if world > 1 and local_rank not in env:
                raise UserError(f"{name}: {rank} and {size} are set but {local_rank} is not; export LOCAL_RANK with RANK and WORLD_SIZE instead")
            return _checked(name, _integer(env, rank), _integer(env, local_rank, default=0), world,
                            env.get("MASTER_ADDR"), _integer(env, "MASTER_PORT", default=DEFAULT_MASTER_PORT),
                            "MASTER_ADDR (the host of rank 0)")
    return None


def _checked(launcher, rank, local_rank, world, addr, port, rendezvous_hint) -> Launch:
    if world < 1 or not 0 <= rank < world or local_rank < 0:
        raise UserError(f"{launcher}: rank {rank}, local rank {local_rank} and world size {world} do not fit together "
                        "(expected 0 <= rank < world size, local rank >= 0)")
    if world == 1:
        return Launch(0, local_rank, 1, None, None, launcher)
    if not addr:
        raise UserError(f"{launcher} started {world} processes but says nowhere to meet: set {rendezvous_hint}")
    if not 0 < port < 65536:
        raise UserError(f"{launcher}: MASTER_PORT {port} is not a port number (1-65535)")
    return Launch(rank, local_rank, world, addr, port, launcher)


def _integer(env: Mapping[str, str], name: str, default: int | None = None) -> int:
    value = env.get(name)
    if value is None or (value == "" and default is not None):
        if default is None:
            raise UserError(f"{name} is not set")
        return default
    try:
        return int(value)
    except ValueError:
        raise UserError(f"{name}={value!r} is not an integer") from None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def broadcast_from_main(value: Any, world_size: int) -> Any:
    """Rank 0's ``value`` on every rank (a picklable object; every rank must call this)."""
    if world_size == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
