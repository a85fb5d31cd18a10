"""Training on a CPU: keep large freed buffers in the heap instead of handing them back to the kernel.

glibc's malloc serves an allocation above its mmap threshold (32 MiB at most, adjusted on
the fly) with a fresh ``mmap`` and unmaps it on free. A CPU training step allocates and
frees buffers that large every step: the dense gradient of the word embeddings alone is
30,522 x 384 floats (47 MB) for MiniLM and 94 MB for BERT-base. Each step then page-faults
them in afresh: in MiniLM's CoLA step, zero-filling that gradient took 54 ms against 1.7 ms
for a multiply over the same tensor once resident, and the step went from 0.259 s to
0.198 s when freed memory was kept (30 steps on the same batches, this project's 2-core
CPU; transformers' step, in the same process, 0.433 -> 0.393 s). Raising the mmap and trim
thresholds makes the next step reuse resident pages. Intel's CPU guides for PyTorch get the same with jemalloc or
tcmalloc through ``LD_PRELOAD``; this needs no extra library.

The cost: the process keeps the heap of its largest step (as CUDA's caching allocator keeps
device memory), and more: with batches of varying shapes the kept heap fragments, and freed
holes the next step cannot fit into stay resident. Fine-tuning MiniLM on SQuAD (batches of
32 windows of up to 384 tokens, 7.5 GiB at the peak of a step) grew to 24 GiB in under 150 steps
and was killed for memory on a 24 GiB machine. So while the machine (or this process's
memory cgroup, where it sets a limit: containers, SLURM jobs) has less than
LOW_MEMORY_FRACTION of its memory available, each step ends by handing the heap's free pages
back (``malloc_trim``): the run goes on, slower (the next steps fault their pages in again;
at SQuAD's shapes 10.1 s a step against 7.0 s), instead of being killed. A user who chose an allocator
(``LD_PRELOAD``, ``GLIBC_TUNABLES`` or glibc's ``MALLOC_*_`` variables) keeps that choice:
nothing is changed then.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD_BYTES = 1 << 30
"""Only buffers of 1 GiB or more still get their own mmap. (A threshold of 16 GiB made the step 2.5x
slower here rather than faster: keep it well below that.)"""
TRIM_THRESHOLD_BYTES = 1 << 34
"""Free memory at the top of the heap is given back to the kernel only beyond 16 GiB."""
LOW_MEMORY_FRACTION = 0.25
"""Below this share of the machine's memory available, kept free memory goes back to the kernel."""
USER_CHOICES = ("GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_MAX_", "MALLOC_TOP_PAD_")

_configured: bool | None = None
_libc: ctypes.CDLL | None = None
_gave_back = False


def user_chose_allocator(environ: dict[str, str] | os._Environ = os.environ) -> bool:
    return any(name in environ for name in USER_CHOICES) or "malloc" in environ.get("LD_PRELOAD", "")


def keep_freed_host_memory() -> bool:
    """Set glibc's thresholds once per process; whether they are set (False off glibc or by the user's choice)."""
    global _configured
    if _configured is None:
        _configured = _configure()
    return _configured


def _configure() -> bool:
    if not sys.platform.startswith("linux") or user_chose_allocator():
        return False
    global _libc
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt, _ = libc.mallopt, libc.malloc_trim  # the hand-back needs malloc_trim too
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    done = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
    _libc = libc if done else None
    if done:
        logger.info("host memory: freed buffers are kept for reuse (glibc mmap/trim thresholds raised)")
    return done


def give_back_if_memory_is_low(low_fraction: float = LOW_MEMORY_FRACTION) -> bool:
    """Return the heap's free pages to the kernel (``malloc_trim(0)``) when this process keeps
    them and the machine has less than ``low_fraction`` of its memory available; whether it did.

    Cheap enough for every step: one read of /proc/meminfo (tens of microseconds).
    """
    if _libc is None:
        return False
    available, total = _available_memory()
    if (limited := _cgroup_memory()) is not None:  # a container's or SLURM job's limit is what kills
        limit, usage = limited
        available = None if available is None else min(available, limit - usage)
        total = min(total, limit) if total else limit
    if available is None or available >= low_fraction * total:
        return False
    global _gave_back
    _libc.malloc_trim(0)
    if not _gave_back:  # once: a machine short of memory for other reasons would log it every step
        _gave_back = True
        logger.info("host memory: %.1f of %.1f GiB available; freed buffers go back to the system while it stays short",
                    available / 2**30, total / 2**30)
    return True


def _available_memory() -> tuple[int | None, int]:
    """(MemAvailable, MemTotal) in bytes from /proc/meminfo; (None, 0) where it cannot be read."""
    fields = {}
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                name, value = line.split(":", 1)
                if name in ("MemAvailable", "MemTotal"):
                    fields[name] = int(value.split()[0]) * 1024
                    if len(fields) == 2:
                        break
    except (OSError, ValueError):
        return None, 0
    return fields.get("MemAvailable"), fields.get("MemTotal", 0)


CGROUP_ROOT = Path("/sys/fs/cgroup")
_cgroup_files: tuple[Path, Path] | None | bool = False  # False: not looked up yet


def _cgroup_memory() -> tuple[int, int] | None:
    """(limit, usage) in bytes of this process's memory cgroup (v2 or v1) where it has a limit."""
    global _cgroup_files
    if _cgroup_files is False:
        _cgroup_files = _find_cgroup_files(Path("/proc/self/cgroup"), CGROUP_ROOT)
    if _cgroup_files is None:
        return None
    try:
        limit, usage = (path.read_text().strip() for path in _cgroup_files)
        return int(limit), int(usage)
    except (OSError, ValueError):
        return None


def _find_cgroup_files(proc_cgroup: Path, root: Path) -> tuple[Path, Path] | None:
    """The (limit, usage) files of the memory cgroup that ``proc_cgroup`` names, if it sets a limit.

    The limit may be set on an ancestor (SLURM limits the job, and its steps' cgroups say
    "max"), so the cgroup and then its ancestors are tried, deepest first; a container sees
    its own cgroup at the root of ``root``, under a path that may name the host's hierarchy,
    which the root, an ancestor of every path, also covers.
    """
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        hierarchy, controllers, path = line.split(":", 2)
        if hierarchy == "0" and not controllers:  # cgroup v2's unified hierarchy
            names, base = ("memory.max", "memory.current"), root
        elif "memory" in controllers.split(","):  # cgroup v1's memory controller
            names, base = ("memory.limit_in_bytes", "memory.usage_in_bytes"), root / "memory"
        else:
            continue
        relative = Path(path.lstrip("/"))
        for directory in (base / relative, *(base / parent for parent in relative.parents)):
            limit_file = directory / names[0]
            try:
                limit = limit_file.read_text().strip()
            except OSError:
                continue
            # "max" (v2) or a huge number (v1) when no limit is set.
            if limit.isdigit() and int(limit) < 1 << 60:
                return limit_file, directory / names[1]
    return None
