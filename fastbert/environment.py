"""The versions, device and source commit a result was measured with, for reports, results.json and run.json."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from pathlib import Path

# The packages that decide fastbert's numbers.
VERSIONED = ("torch", "triton", "transformers", "deepspeed", "flash-attn", "tokenizers", "pytest-benchmark", "fastbert")


def package_versions(names: tuple[str, ...] = VERSIONED) -> dict[str, str]:
    """Installed distribution versions; "not installed" for the absent ones."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def environment_versions() -> dict[str, str]:
    """Python and package versions, and the device runs train on."""
    import torch

    versions = {"python": platform.python_version(), **package_versions()}
    versions["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    return versions


def git_commit() -> dict[str, str | bool] | None:
    """The commit of the fastbert source tree that runs, and whether it has uncommitted changes;
    None when fastbert is not run from a git checkout (an installed wheel)."""
    source = Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(source), *args], capture_output=True, text=True, timeout=10, check=True).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").strip())
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}
