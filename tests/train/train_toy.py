"""A tiny regression model with the BERT models' calling convention, for engine and loop tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fastbert.model import Batch


@dataclass
class ToyOutput:
    loss: torch.Tensor
    prediction: torch.Tensor


class ToyRegressor(nn.Module):
    """Linear → LayerNorm → dropout → linear with a mean-squared loss; ``input_ids`` are float features here."""

    def __init__(self, width: int = 8, dropout: float = 0.0):
        super().__init__()
        self.hidden = nn.Linear(width, 16)
        self.norm = nn.LayerNorm(16)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(16, 1)

    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor) -> ToyOutput:
        prediction = self.head(self.dropout(torch.tanh(self.norm(self.hidden(input_ids))))).squeeze(-1)
        return ToyOutput(loss=((prediction - targets) ** 2).mean(), prediction=prediction)

    def save_pretrained(self, directory, tokenizer=None) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        torch.save(self.state_dict(), directory / "toy.pt")
        (directory / "config.json").write_text(json.dumps({"model_type": "toy"}))


def toy_batch(inputs: torch.Tensor, targets: torch.Tensor) -> Batch:
    """A batch for :class:`ToyRegressor`; each feature counts as a token."""
    return Batch(inputs, {"targets": targets}, num_tokens=inputs.numel(), num_sequences=inputs.shape[0])


def toy_batches(count: int, batch_size: int, width: int = 8, seed: int = 0) -> list[Batch]:
    """Fixed regression batches: the target is a smooth function of the inputs."""
    g = torch.Generator().manual_seed(seed)
    weights = torch.randn(width, generator=g)
    out = []
    for _ in range(count):
        inputs = torch.randn(batch_size, width, generator=g)
        out.append(toy_batch(inputs, torch.tanh(0.3 * inputs @ weights)))
    return out
