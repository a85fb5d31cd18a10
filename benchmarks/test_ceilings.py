"""Measured device limits that the report divides by: matrix-multiply FLOP/s (for MFU) and copy bandwidth.

On the GPU the matmul is bf16 (the rate MFU is quoted against); on a CPU it is fp32, the
dtype the CPU suite trains in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CeilingCase:
    matmul_size: int
    matmul_dtype: torch.dtype
    copy_mib: int

    def __str__(self) -> str:
        return f"{str(self.matmul_dtype).removeprefix('torch.')}-{self.matmul_size}"


CASES = {"cpu": [CeilingCase(1024, torch.float32, 64)], "gpu": [CeilingCase(8192, torch.bfloat16, 1024)]}


def test_matmul_rate(case: CeilingCase, measure, device: torch.device):
    n = case.matmul_size
    a, b = (torch.randn(n, n, device=device).to(case.matmul_dtype) for _ in range(2))
    measure(lambda _: torch.mm(a, b), [None], group="ceilings", impl=f"{case} matmul", role="",
            ceiling="matmul", flops=2.0 * n**3)


def test_copy_bandwidth(case: CeilingCase, measure, device: torch.device):
    source = torch.randn(case.copy_mib * 2**18, device=device)
    target = torch.empty_like(source)
    # A copy reads and writes every byte once.
    measure(lambda _: target.copy_(source), [None], group="ceilings", impl=f"copy {case.copy_mib} MiB", role="",
            ceiling="copy", bytes=2.0 * source.numel() * source.element_size())
