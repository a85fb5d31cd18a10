"""Rank, local rank, world size and rendezvous from torchrun, the deepspeed launcher, srun and mpirun."""

from __future__ import annotations

import pytest

from fastbert.errors import UserError
from fastbert.train import launch as launch_module
from fastbert.train.launch import Launch, discover_launch, first_host

SRUN_TASK = {  # what srun sets in task 3 of a 4-task step over two nodes
    "SLURM_JOB_ID": "4242", "SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_NTASKS": "4",
    "SLURM_STEP_NUM_TASKS": "4", "SLURM_STEP_NODELIST": "gpu[007-008]", "SLURM_JOB_NODELIST": "gpu[007-008]",
}


@pytest.fixture(autouse=True)
def no_scontrol(monkeypatch):
    """The bracket parser, not whatever scontrol the machine has."""
    monkeypatch.setattr(launch_module.shutil, "which", lambda name: None)


def test_torchrun_and_the_deepspeed_launcher():
    env = {"RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8", "MASTER_ADDR": "node0", "MASTER_PORT": "29600"}
    assert discover_launch(env) == Launch(5, 1, 8, "node0", 29600, "torchrun/deepspeed")


def test_srun_tasks_meet_on_the_first_host_at_a_port_from_the_job_id():
    assert discover_launch(SRUN_TASK) == Launch(3, 1, 4, "gpu007", 12000 + 4242, "SLURM")
    given = discover_launch({**SRUN_TASK, "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "2000"})
    assert (given.master_addr, given.master_port) == ("10.0.0.1", 2000)


def test_mpirun_needs_a_master_address_and_wins_over_the_slurm_step_it_runs_in():
    mpi = {"OMPI_COMM_WORLD_RANK": "6", "OMPI_COMM_WORLD_SIZE": "8", "OMPI_COMM_WORLD_LOCAL_RANK": "2"}
    with pytest.raises(UserError, match="Open MPI started 8 processes but says nowhere to meet: set MASTER_ADDR"):
        discover_launch(mpi)
    # mpirun under SLURM starts one daemon per node with srun: its SLURM step says 2 tasks.
    daemon_step = {**SRUN_TASK, "SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2"}
    assert discover_launch({**daemon_step, **mpi, "MASTER_ADDR": "gpu007"}) == Launch(6, 2, 8, "gpu007", 29500, "Open MPI")
    intel = {"PMI_RANK": "1", "PMI_SIZE": "2", "MPI_LOCALRANKID": "1", "MASTER_ADDR": "h"}
    assert discover_launch(intel).launcher == "MPICH/Intel MPI"


def test_a_multi_task_allocation_without_srun_is_an_error_not_one_run_or_n_copies():
    batch_script = {"SLURM_JOB_ID": "7", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NTASKS": "4"}
    with pytest.raises(UserError, match=r"4 tasks \(SLURM_NTASKS\) but srun did not start this process"):
        discover_launch(batch_script)
    assert discover_launch({**batch_script, "SLURM_NTASKS": "1"}).world_size == 1
    assert discover_launch({}) == Launch(0, 0, 1, None, None, "one process")


@pytest.mark.parametrize("env, message", [
    ({"WORLD_SIZE": "2"}, "WORLD_SIZE is set but RANK is not"),
    ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "h"}, "LOCAL_RANK is not"),
    ({"RANK": "2", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "h"}, "do not fit together"),
    ({"RANK": "one", "WORLD_SIZE": "1"}, "RANK='one' is not an integer"),
    ({**SRUN_TASK, "SLURM_STEP_NODELIST": "", "SLURM_JOB_NODELIST": ""}, "set MASTER_ADDR or SLURM_STEP_NODELIST"),
])
def test_incomplete_launch_variables_are_one_line_errors(env, message):
    with pytest.raises(UserError, match=message):
        discover_launch(env)


@pytest.mark.parametrize("nodelist, host", [
    ("gnode[10,20,25,37]", "gnode10"),
    ("gpu[003-004,7],cpu1", "gpu003"),
    ("login1,login2", "login1"),
    ("rack[1-2]-node[01-04]", "rack1-node01"),
    ("node-7", "node-7"),
    ("localhost", "localhost"),
])
def test_first_host_of_a_slurm_node_list(nodelist, host):
    assert first_host(nodelist) == host


def test_first_host_asks_scontrol_where_there_is_one(monkeypatch):
    monkeypatch.setattr(launch_module.shutil, "which", lambda name: "/usr/bin/scontrol")
    calls = []

    def run(command, **kwargs):
        calls.append(command)
        return launch_module.subprocess.CompletedProcess(command, 0, stdout="a12\na13\n")

    monkeypatch.setattr(launch_module.subprocess, "run", run)
    assert first_host("a[12-13]") == "a12" and calls == [["scontrol", "show", "hostnames", "a[12-13]"]]


def test_each_process_takes_the_gpu_of_its_local_rank():
    task = Launch(3, 1, 4, "h", 1, "SLURM")
    assert task.cuda_index(visible_devices=8) == 1
    assert task.cuda_index(visible_devices=1) == 0  # srun --gpus-per-task=1 shows each task its own GPU
    with pytest.raises(UserError, match="local rank 3 .* only 2 GPUs are visible"):
        Launch(3, 3, 4, "h", 1, "SLURM").cuda_index(visible_devices=2)
