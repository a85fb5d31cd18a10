"""The versions and device a result was measured with, for reports and results.json."""

from __future__ import annotations

import importlib.metadata

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
