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
