"""Checkpoints are HuggingFace BERT directories: config.json + model.safetensors (or pytorch_model.bin).

Loading accepts any BERT checkpoint transformers writes (``BertModel`` keys without a
prefix, ``BertFor*`` keys under ``bert.``, TF-era ``gamma``/``beta`` names, tied decoder
copies). Saving writes what ``transformers.BertFor*.from_pretrained`` loads with no missing
or unexpected keys.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, TypeVar

import torch

from ..atomic import write_file
from ..errors import UserError
from .config import BertConfig

logger = logging.getLogger("fastbert.checkpoint")

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_BIN = "pytorch_model.bin"
BACKBONE_PREFIXES = ("embeddings.", "encoder.", "pooler.")
# Keys transformers writes that carry no information of their own here.
REDUNDANT_SUFFIXES = ("embeddings.position_ids", "cls.predictions.decoder.weight")

M = TypeVar("M", bound="PretrainedMixin")


def read_state_dict(directory: Path) -> tuple[dict[str, torch.Tensor], Path]:
    """All tensors of a checkpoint directory, and the file (or index) they came from."""
    if (directory / SAFETENSORS).is_file():
        from safetensors.torch import load_file

        path = directory / SAFETENSORS
        return _load_or_fail(path, lambda: load_file(path)), path
    if (directory / SAFETENSORS_INDEX).is_file():
        from safetensors.torch import load_file

        index = directory / SAFETENSORS_INDEX
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            path = directory / shard
            if not path.is_file():
                raise UserError(f"{index}: names shard {shard}, which is missing")
            state.update(_load_or_fail(path, lambda p=path: load_file(p)))
        return state, index
    if (directory / TORCH_BIN).is_file():
        path = directory / TORCH_BIN
        return _load_or_fail(path, lambda: torch.load(path, map_location="cpu", weights_only=True)), path
    raise UserError(f"{directory}: no {SAFETENSORS}, {SAFETENSORS_INDEX} or {TORCH_BIN} found")


def _load_or_fail(path: Path, load):
    try:
        return load()
    except Exception as err:  # noqa: BLE001 - any reader failure means a bad file
        raise UserError(f"{path}: cannot read weights ({type(err).__name__}: {err})") from None


def normalize_keys(state: dict[str, torch.Tensor], wants_prefix: bool) -> dict[str, torch.Tensor]:
    """Map checkpoint names onto fastbert's (= transformers') names for a model with or without ``bert.``."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith(REDUNDANT_SUFFIXES):
            continue
        key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        if key == "cls.predictions.decoder.bias":
            key = "cls.predictions.bias"
        if wants_prefix and key.startswith(BACKBONE_PREFIXES):
            key = "bert." + key
        elif not wants_prefix and key.startswith("bert."):
            key = key[len("bert."):]
        out.setdefault(key, value)
    return out


class PretrainedMixin:
    """``from_pretrained`` / ``save_pretrained`` for the BERT model classes (which provide
    ``init_parameters(names)``, the initialisation of parameters a checkpoint lacks)."""

    config: BertConfig

    @classmethod
    def from_pretrained(cls: type[M], directory: str | os.PathLike, **config_overrides: Any) -> M:
        """Load an HF BERT directory; heads absent from the checkpoint are freshly initialised."""
        directory = Path(directory)
        if not directory.is_dir():
            raise UserError(f"{directory}: no such model directory")
        config = BertConfig.from_pretrained(directory / "config.json", **config_overrides)
        state, source = read_state_dict(directory)
        # Built without memory or random init (a base model's init costs more than reading
        # its weights); only what the checkpoint lacks (a new head) is initialised.
        with torch.device("meta"):
            model = cls(config)
        model.to_empty(device="cpu")
        model.load_checkpoint_state(state, source, init_missing=True)
        return model

    def load_checkpoint_state(
        self, state: dict[str, torch.Tensor], source: Path | str = "<state dict>", init_missing: bool = False
    ) -> None:
        """Copy ``state`` into the model; ``init_missing`` initialises what it lacks first
        (for a model built on the meta device, whose memory holds nothing yet)."""
        own = self.state_dict()
        has_backbone_prefix = any(k.startswith("bert.") for k in own)
        state = normalize_keys(state, has_backbone_prefix)
        backbone = "bert." if has_backbone_prefix else ""
        for key, target in own.items():
            if key in state and state[key].shape != target.shape:
                raise UserError(
                    f"{source}: {key} has shape {tuple(state[key].shape)}, the model expects {tuple(target.shape)}"
                )
        missing = [k for k in own if k not in state]
        broken = [k for k in missing if k.startswith((backbone + "embeddings.", backbone + "encoder."))]
        if broken:
            raise UserError(f"{source}: missing {broken[0]}" + (f" and {len(broken) - 1} more keys" if len(broken) > 1 else ""))
        if missing:
            logger.info("newly initialised (not in %s): %s", source, ", ".join(missing))
            if init_missing:
                self.init_parameters(set(missing))
        unexpected = [k for k in state if k not in own]
        if unexpected:
            logger.info("ignored (not used by %s): %s", type(self).__name__, ", ".join(unexpected))
        with torch.no_grad():
            for key, target in own.items():
                if key in state:
                    target.copy_(state[key].to(target.dtype))

    def save_pretrained(self, directory: str | os.PathLike, tokenizer: Any = None) -> None:
        """Write config.json and model.safetensors (and the tokenizer's files when given)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, torch.Tensor] = {}
        seen: set[int] = set()
        for key, value in self.state_dict().items():
            if id(value) in seen:
                continue
            seen.add(id(value))
            tensors[key] = value.detach().to("cpu").contiguous().clone()
        write_file(directory / SAFETENSORS, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
        write_file(
            directory / "config.json",
            lambda tmp: self.config.save(tmp, architectures=[type(self).__name__]),
        )
        if tokenizer is not None:
            from fastbert.tokenizer import save_tokenizer

            save_tokenizer(tokenizer, directory)
