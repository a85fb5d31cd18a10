"""Shared setup of the benchmark suites (run by ``fastbert bench``, not by the default test command).

``--bench-suite cpu|gpu`` picks the device and the size of every case. Each timed call
goes through the :func:`measure` fixture, which tags the pytest-benchmark entry with what
the report needs (see benchmarks/README.md): which implementation ran, whether it is the
candidate or a baseline, and the work one call does (real tokens, sequences, FLOPs, bytes).
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Sequence

import pytest
import torch

SUITES = ("cpu", "gpu")
# (warm-up rounds, timed rounds) per suite: a CPU step of the mini model takes about a
# second, a GPU step a few milliseconds.
ROUNDS = {"cpu": (2, 6), "gpu": (10, 50)}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--bench-suite", choices=SUITES, default="cpu", help="which suite's cases and device to run")


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    """Record what the report needs to say where the numbers come from."""
    from fastbert.environment import package_versions

    gpu = config.getoption("--bench-suite") == "gpu" and torch.cuda.is_available()
    machine_info["fastbert_device"] = torch.cuda.get_device_name() if gpu else "cpu"
    machine_info["torch_threads"] = torch.get_num_threads()
    machine_info["versions"] = {**package_versions(), "cuda": torch.version.cuda or "none"}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A benchmark taking ``case`` runs over its module's ``CASES[suite]``."""
    if "case" in metafunc.fixturenames:
        suite = metafunc.config.getoption("--bench-suite")
        metafunc.parametrize("case", metafunc.module.CASES[suite], ids=str)


@pytest.fixture(scope="session")
def bench_suite(request: pytest.FixtureRequest) -> str:
    return request.config.getoption("--bench-suite")


@pytest.fixture(scope="session")
def device(bench_suite: str) -> torch.device:
    if bench_suite == "gpu":
        if not torch.cuda.is_available():
            pytest.skip("the gpu suite needs a CUDA device")
        return torch.device("cuda")
    return torch.device("cpu")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@pytest.fixture
def measure(benchmark, bench_suite: str, device: torch.device):
    """``measure(fn, inputs, group=..., impl=..., role=..., **work)`` times ``fn(x)`` over ``inputs`` in turn.

    ``inputs`` are distinct pre-built arguments (e.g. batches), cycled so that no two
    consecutive calls see the same data. ``work`` holds per-call counts (real_tokens,
    sequences, flops, bytes, ...) averaged over ``inputs``; the report divides them by
    the median time. On CUDA each call ends with a synchronize, and the peak memory of
    the timed calls is recorded.
    """

    def run(
        fn: Callable[[Any], Any], inputs: Sequence[Any], *, group: str, impl: str, role: str,
        rounds: int | None = None, warmup: int | None = None, **work: float,
    ) -> None:
        default_warmup, default_rounds = ROUNDS[bench_suite]
        cycle = itertools.cycle(inputs)

        def call() -> None:
            fn(next(cycle))
            synchronize(device)

        benchmark.group = group
        for _ in range(default_warmup if warmup is None else warmup):
            call()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        benchmark.pedantic(call, rounds=rounds or default_rounds, iterations=1, warmup_rounds=0)
        benchmark.extra_info.update(impl=impl, role=role, suite=bench_suite, device=_device_name(device), **work)
        if device.type == "cuda":
            benchmark.extra_info["peak_memory_bytes"] = torch.cuda.max_memory_allocated(device)

    return run


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
