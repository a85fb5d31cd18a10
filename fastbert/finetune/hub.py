"""The Hugging Face Hub: ``--init`` with a model id, ``--dataset`` through the ``datasets`` library.

Both are optional. ``huggingface_hub`` comes with ``tokenizers`` (a base dependency) and is
listed in the ``hub`` extra as well; ``datasets`` is the ``datasets`` extra. Without
network, a model id works once it is in the local Hub cache and a dataset works as a
directory written by ``save_to_disk``; anything else is one line saying what to do.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import UserError
from .custom import Columns
from .examples import LabelNames
from .tables import Row, Table

# What a BERT directory needs; weights as safetensors, falling back to the older pickle.
_MODEL_FILES = ["config.json", "model.safetensors", "model.safetensors.index.json", "model-*.safetensors",
                "vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def resolve_init(init: str) -> Path:
    """The model directory ``--init`` names: a local directory, else a Hub model id (cached or downloaded)."""
    path = Path(init).expanduser()
    if path.is_dir():
        return path
    if path.exists() or not _REPO_ID.fullmatch(init) or ".." in init:
        raise UserError(f"{init}: no such model directory")
    try:
        import huggingface_hub
        from huggingface_hub import constants
        from huggingface_hub.utils import LocalEntryNotFoundError
    except ImportError:
        raise UserError(f"{init}: no such directory; a Hub model id needs huggingface_hub: pip install 'fastbert[hub]'") from None
    advice = f"download it where there is network (`hf download {init}`) or pass --init a directory holding config.json, the weights and the tokenizer"
    try:
        return _snapshot(huggingface_hub, init, local_files_only=True)
    except LocalEntryNotFoundError:
        if constants.HF_HUB_OFFLINE:
            raise UserError(f"{init}: not a local directory, and not in the Hugging Face cache ({constants.HF_HUB_CACHE}) "
                            f"while offline (HF_HUB_OFFLINE); {advice}") from None
    try:
        return _snapshot(huggingface_hub, init, local_files_only=False)
    except Exception as err:  # noqa: BLE001 - no network, unknown repo, no access: all mean "not available here"
        raise UserError(f"{init}: not a local directory, not in the Hugging Face cache, and the download failed "
                        f"({type(err).__name__}: {_first_line(err)}); {advice}") from None


def _snapshot(huggingface_hub: Any, repo_id: str, local_files_only: bool) -> Path:
    directory = Path(huggingface_hub.snapshot_download(repo_id, allow_patterns=_MODEL_FILES, local_files_only=local_files_only))
    if not any(directory.glob("*.safetensors")):  # a repository from before safetensors
        directory = Path(huggingface_hub.snapshot_download(
            repo_id, allow_patterns=[*_MODEL_FILES, "pytorch_model.bin"], local_files_only=local_files_only))
    return directory


def load_dataset_tables(name: str, config_name: str | None, splits: dict[str, str], columns: Columns) -> dict[str, Table]:
    """Tables of the dataset's ``splits`` (role -> split name), holding the named columns it has.

    ``name`` is a directory written by ``save_to_disk`` (works offline) or a dataset on the
    Hub for ``datasets.load_dataset``. A ClassLabel label column brings its class names.
    """
    try:
        import datasets
    except ImportError:
        raise UserError("--dataset needs the datasets library: pip install 'fastbert[datasets]'") from None
    if Path(name).expanduser().is_dir():
        try:
            data = datasets.load_from_disk(str(Path(name).expanduser()))
        except FileNotFoundError as err:
            raise UserError(f"{name}: not a directory written by save_to_disk ({_first_line(err)})") from None
    else:
        try:
            data = datasets.load_dataset(name, config_name)
        except Exception as err:  # noqa: BLE001 - unreachable Hub, unknown name or config: one line for each
            raise UserError(
                f"dataset {name!r} could not be loaded ({type(err).__name__}: {_first_line(err)}); "
                f"without network, save it once with save_to_disk and pass that directory to --dataset"
            ) from None
    if not isinstance(data, datasets.DatasetDict):
        raise UserError(f"{name}: holds a single split; save a DatasetDict with {', '.join(sorted(set(splits.values())))} splits")
    tables = {}
    for role, split in splits.items():
        if split not in data:
            raise UserError(f"{name}: no {split!r} split for {role}; it has {', '.join(data)}")
        dataset = data[split]
        label = dataset.features.get(columns.label)
        names = LabelNames(tuple(label.names)) if isinstance(label, datasets.ClassLabel) else None
        present = [c for c in (*columns.text, columns.label) if c in dataset.column_names]
        rows = [Row(values, number) for number, values in enumerate(dataset.select_columns(present).to_list(), 1)]
        tables[role] = Table(f"{name}[{split}]", tuple(dataset.column_names), rows, counts_lines=False, label_names=names)
    return tables


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [""])[0]
