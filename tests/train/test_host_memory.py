"""CPU training keeps freed buffers for reuse (glibc's thresholds), unless the user chose an allocator."""

import subprocess
import sys

import pytest

from fastbert.train.host_memory import user_chose_allocator


def test_a_users_allocator_choice_is_kept():
    assert not user_chose_allocator({})
    assert user_chose_allocator({"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"})
    assert user_chose_allocator({"LD_PRELOAD": "libtcmalloc_minimal.so.4"})
    assert user_chose_allocator({"MALLOC_TRIM_THRESHOLD_": "0"})
    assert user_chose_allocator({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=4096"})


def _configured_in_fresh_process(env: dict[str, str]) -> str:
    code = "from fastbert.train.host_memory import keep_freed_host_memory; print(keep_freed_host_memory())"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_thresholds_are_set_on_glibc_and_left_alone_when_chosen():
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "LD_PRELOAD") and not k.startswith("MALLOC_")}
    assert _configured_in_fresh_process(env) == "True"
    assert _configured_in_fresh_process({**env, "MALLOC_MMAP_THRESHOLD_": "131072"}) == "False"


FRAGMENTED_HEAP = """
import torch
from fastbert.train.host_memory import give_back_if_memory_is_low, keep_freed_host_memory

def rss_mib():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

assert keep_freed_host_memory()
held = [torch.ones(4 << 20) for _ in range(32)]  # 32 x 16 MiB in the heap, pages touched
# A large buffer after them holds the heap's top, so the freed ones are a hole in the middle
# (a small one could be served from an older free chunk and leave them at the top).
tail = torch.ones(4 << 20)
used = rss_mib()
del held
kept = rss_mib()
assert kept > used - 64, (used, kept)  # freed, and still resident
assert not give_back_if_memory_is_low(low_fraction=0.0)  # the machine has plenty: keep them
assert rss_mib() > kept - 64
assert give_back_if_memory_is_low(low_fraction=1.0)  # the machine is short: hand them back
print(kept - rss_mib())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_kept_free_memory_goes_back_when_the_machine_runs_short():
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "LD_PRELOAD") and not k.startswith("MALLOC_")}
    done = subprocess.run([sys.executable, "-c", FRAGMENTED_HEAP], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout) > 400  # of the 512 MiB freed in the middle of the heap


def _cgroup(tmp_path, line: str, files: dict[str, str]):
    from fastbert.train.host_memory import _find_cgroup_files

    tmp_path.mkdir()
    (tmp_path / "proc_cgroup").write_text(line + "\n")
    for name, text in files.items():
        (tmp_path / "root" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "root" / name).write_text(text + "\n")
    found = _find_cgroup_files(tmp_path / "proc_cgroup", tmp_path / "root")
    return found and tuple(str(p.relative_to(tmp_path / "root")) for p in found)


def test_the_memory_cgroup_limit_is_found_where_one_is_set(tmp_path):
    # cgroup v2 (a SLURM job step; the limit on the step, then on the job), then v1 seen from
    # inside a container (its own cgroup at the root; the path names the host's hierarchy), then
    # no limit in either.
    assert _cgroup(tmp_path / "v2", "0::/job_7/step_0", {"job_7/step_0/memory.max": "8589934592",
                                                          "job_7/step_0/memory.current": "1"}) == (
        "job_7/step_0/memory.max", "job_7/step_0/memory.current")
    assert _cgroup(tmp_path / "v1", "4:memory:/docker/abc", {"memory/memory.limit_in_bytes": "4294967296",
                                                             "memory/memory.usage_in_bytes": "1"}) == (
        "memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")
    assert _cgroup(tmp_path / "v2job", "0::/job_7/step_0", {"job_7/step_0/memory.max": "max",
                                                             "job_7/memory.max": "8589934592", "job_7/memory.current": "1"}) == (
        "job_7/memory.max", "job_7/memory.current")  # the limit is the job's, the step says "max"
    assert _cgroup(tmp_path / "v2max", "0::/", {"memory.max": "max", "memory.current": "1"}) is None
    assert _cgroup(tmp_path / "v1max", "4:memory:/", {"memory/memory.limit_in_bytes": "9223372036854771712",
                                                      "memory/memory.usage_in_bytes": "1"}) is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_a_cgroup_near_its_limit_counts_as_a_machine_short_of_memory(tmp_path, monkeypatch):
    from fastbert.train import host_memory

    if not host_memory.keep_freed_host_memory():
        pytest.skip("the allocator is the user's choice here")
    limit, usage = tmp_path / "memory.max", tmp_path / "memory.current"
    limit.write_text(str(8 << 30))
    monkeypatch.setattr(host_memory, "_cgroup_files", (limit, usage))
    usage.write_text(str(7 << 30))  # 1 GiB of the job's 8 left, however much the machine has
    assert host_memory.give_back_if_memory_is_low()
    usage.write_text(str(1 << 30))  # 7 GiB left
    assert not host_memory.give_back_if_memory_is_low()
