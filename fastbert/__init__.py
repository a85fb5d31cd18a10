"""fastbert: fast BERT pretraining and fine-tuning with HuggingFace-compatible checkpoints."""

from __future__ import annotations

from pathlib import Path as _Path

__version__ = "0.1.0"

_MODEL_EXPORTS = (
    "BertConfig",
    "BertModel",
    "BertForPreTraining",
    "BertForSequenceClassification",
    "BertForQuestionAnswering",
    "BertForMultipleChoice",
)
__all__ = [*_MODEL_EXPORTS, "__version__"]

# The kernels live in the repository's top-level kernels/ and are installed as
# fastbert.kernels. When this package is imported straight from a source tree (a script
# that puts the repository on sys.path, or a legacy editable install that ignores
# package-dir), let the subpackage search look there too.
_SOURCE_ROOT = _Path(__file__).resolve().parent.parent
if not (_SOURCE_ROOT / "fastbert" / "kernels").exists() and (_SOURCE_ROOT / "kernels" / "__init__.py").is_file():
    __path__.append(str(_SOURCE_ROOT))


def __getattr__(name: str):
    # Lazy: data-preparation workers and `fastbert --help` should not pay for importing torch.
    if name in _MODEL_EXPORTS:
        from . import model

        return getattr(model, name)
    raise AttributeError(f"module 'fastbert' has no attribute {name!r}")
