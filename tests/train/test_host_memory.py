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
