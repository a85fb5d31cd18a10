"""The examples the readers produce, and the class names of a classification task."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SentenceExample:
    """One sentence or sentence pair with its gold label (a class id, or a float score)."""

    text_a: str
    text_b: str | None
    label: int | float | None
    """None in a file without labels (a test set to predict)."""
    index: str | None = None
    """The row's id in a submission file (GLUE's ``index`` column); None: its position."""


@dataclass(frozen=True)
class ChoiceExample:
    """A context and its candidate continuations; each choice is ``[CLS] context [SEP] start ending [SEP]``."""

    context: str
    start: str
    """The beginning of the second segment, shared by every ending (SWAG's sent2; "" elsewhere)."""
    endings: tuple[str, ...]
    label: int | None
    """Index of the right ending; None in a file without labels."""
    index: str | None = None


@dataclass(frozen=True)
class LabelNames:
    """A classification task's classes in id order, as the exported config's id2label names them."""

    names: tuple[str, ...]

    @classmethod
    def of_values(cls, values: set[str]) -> "LabelNames":
        """The classes of a user's data: sorted, numerically when every label is an integer (so "2" > "10" cannot happen)."""
        if all(_is_integer(v) for v in values):
            return cls(tuple(sorted(values, key=int)))
        return cls(tuple(sorted(values)))

    def id_of(self, name: str) -> int | None:
        try:
            return self.names.index(name)
        except ValueError:
            return None

    def describe(self) -> str:
        return ", ".join(self.names)

    def config_fields(self) -> dict[str, dict]:
        """id2label and label2id as transformers writes them into config.json."""
        return {"id2label": {str(i): name for i, name in enumerate(self.names)},
                "label2id": {name: i for i, name in enumerate(self.names)}}


def _is_integer(text: str) -> bool:
    return text.lstrip("-").isdigit()
