"""Throughput, model FLOPs utilisation and the metrics.jsonl log."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from ..atomic import write_text
from ..errors import InputError

logger = logging.getLogger(__name__)

# bf16 dense tensor-core TFLOP/s from the vendors' datasheets. First substring match of the
# device name wins, so the more specific names come first (A100 before A10, L40S before L4).
PEAK_BF16_TFLOPS: list[tuple[str, float]] = [
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A10G", 70.0),
    ("A10", 125.0),
    ("L40S", 362.0),
    ("L4", 121.0),
]


def flops_per_token(non_embedding_params: int, num_layers: int, hidden_size: int, avg_seq_len: float) -> float:
    """Training FLOPs per token: 6·N for the matmuls (forward + backward) plus 12·L·H·T for attention."""
    return 6.0 * non_embedding_params + 12.0 * num_layers * hidden_size * avg_seq_len


def peak_flops(device: torch.device) -> float | None:
    """Peak bf16 FLOP/s of one device: the datasheet value when known, else measured; None off CUDA."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_BF16_TFLOPS:
        if key in name:
            return tflops * 1e12
    measured = measure_matmul_flops(device)
    logger.info("%s is not in the peak-FLOPs table; measured %.0f TFLOP/s bf16 matmul", name, measured / 1e12)
    return measured


def measure_matmul_flops(device: torch.device, size: int = 4096, repeats: int = 20) -> float:
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        a @ b
    end.record()
    torch.cuda.synchronize(device)
    seconds = start.elapsed_time(end) / 1e3
    return 2.0 * size**3 * repeats / seconds


class MetricsLog:
    """Appends one JSON object per logging step to ``metrics.jsonl``.

    A run killed while appending leaves a torn last line; reading drops it (with a
    warning), since the resumed run logs that step again. A bad line before the last is
    damage from elsewhere and an error naming it.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def truncate_after(self, step: int) -> None:
        """Drop records past ``step`` (and a torn last line): a resumed run rewrites the steps it repeats."""
        kept = [record for record in self.read() if record["step"] <= step]
        if self.path.is_file():
            write_text(self.path, "".join(json.dumps(record) + "\n" for record in kept))

    def append(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        lines = self.path.read_text(encoding="utf-8").split("\n")
        records = []
        for number, line in enumerate(lines, 1):
            if not line:
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict) or "step" not in record:
                    raise ValueError("no step")
            except ValueError:
                if number == len(lines):  # no newline after it: the write was cut short
                    logger.warning("%s:%d: dropping a torn last record (%d bytes) left by an interrupted run", self.path, number, len(line))
                    break
                raise InputError(self.path, "not a metrics record (a JSON object with a step)", line=number) from None
            records.append(record)
        return records
