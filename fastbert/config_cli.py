"""Command-line flags made from a config dataclass: one per field, its docstring as the help.

``max_seq_len: int = 128`` becomes ``--max-seq-len INT``; the fields of a nested config
(``optim: OptimizerConfig``) become flags of their own, flat (``--lr``). A flag the user did
not give stays out of the parsed namespace, so the layer below (a YAML file, the dataclass
defaults) decides; the help shows the dataclass's defaults.

The help comes from the string literal under each field (read from the class's source),
the docstring convention the configs already follow: putting it in ``field(metadata=...)``
instead would make every field a call and keep two kinds of documentation.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import textwrap
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError

_DEST = "setting:"  # namespace prefix of config flags, apart from a command's other arguments


@dataclass(frozen=True)
class Setting:
    """One flag's worth of a config: a field, or a field of a nested config, by its flat name."""

    name: str
    kind: Any
    """The field's type hint (e.g. ``int | None``)."""
    default: Any
    """The default value, or dataclasses.MISSING for a required field."""
    doc: str


@functools.cache
def config_settings(cls: type) -> dict[str, Setting]:
    """The settings of the dataclass ``cls`` in field order, a nested dataclass's fields in its place."""
    hints, docs = typing.get_type_hints(cls), field_docs(cls)
    settings = {}
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(hints[f.name]):
            # The nested config's defaults are those of this field's default (fine-tuning's lr is not pretraining's).
            settings |= {name: dataclasses.replace(s, default=getattr(default, name))
                         for name, s in config_settings(hints[f.name]).items()}
        else:
            settings[f.name] = Setting(f.name, hints[f.name], default, docs.get(f.name, ""))
    return settings


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The string literal under each field of ``cls``, whitespace collapsed."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    return {
        node.target.id: " ".join(after.value.value.split())
        for node, after in zip(body, body[1:])
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
        and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)
    }


def add_config_flags(container: argparse._ActionsContainer, cls: type, *, skip: tuple[str, ...] = (),
                     **options: dict[str, Any]) -> None:
    """A flag for every setting of ``cls`` but ``skip``; ``options[name]`` adds add_argument keywords (e.g. choices)."""
    for name, setting in config_settings(cls).items():
        if name not in skip:
            add_setting_flag(container, setting, **options.get(name, {}))


def add_setting_flag(container: argparse._ActionsContainer, setting: Setting, **options: Any) -> None:
    """Add the flag of one setting; ``options`` adds or overrides add_argument keywords."""
    required = setting.default is dataclasses.MISSING
    help = setting.doc if required or _hidden_default(setting.default) else f"{setting.doc} (default: {_show(setting.default)})"
    options = {**_value_options(setting), **options}
    if "choices" in options:
        options.pop("metavar", None)  # argparse then shows the choices themselves
    container.add_argument(
        "--" + setting.name.replace("_", "-"), dest=_DEST + setting.name, default=argparse.SUPPRESS, required=required,
        help=help.replace("%", "%%"), **options,  # argparse %-formats help
    )


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings whose flags were on the command line, by (flat) name."""
    return {key[len(_DEST):]: value for key, value in vars(args).items() if key.startswith(_DEST)}


def build_config(cls: type, args: argparse.Namespace, **values: Any) -> Any:
    """``cls`` from ``values`` and the flags given, a nested config from its flat flags; the rest are the defaults."""
    given, hints = {**given_settings(args), **values}, typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        nested = hints[f.name]
        if dataclasses.is_dataclass(nested):
            inner = {name: given.pop(name) for name in config_settings(nested) if name in given}
            given[f.name] = dataclasses.replace(f.default_factory(), **inner)
    return cls(**given)


def add_set_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config setting (VALUE is YAML), e.g. --set model_overrides={hidden_dropout_prob: 0}")


def parse_set(items: list[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` arguments as settings, each VALUE read as YAML."""
    settings = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected KEY=VALUE")
        try:
            settings[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise UserError(f"--set {item!r}: VALUE is not valid YAML") from None
    return settings


def _value_options(setting: Setting) -> dict[str, Any]:
    """add_argument keywords for a value of the setting's type."""
    hint = setting.kind
    kinds = [k for k in typing.get_args(hint) if k is not type(None)] if typing.get_origin(hint) in (typing.Union, types.UnionType) else [hint]
    if len(kinds) != 1:
        raise TypeError(f"no flag for {setting.name}: {hint}")
    kind = typing.get_origin(kinds[0]) or kinds[0]
    if kind is bool:
        # A switch when off by default; otherwise both ways (bf16: None means "on CUDA", so --no-bf16 matters).
        return {"action": "store_true"} if setting.default is False else {"action": argparse.BooleanOptionalAction}
    if kind is tuple:  # tuple[int, ...] or tuple[str, ...]: comma-separated values
        if typing.get_args(kinds[0])[0] is str:
            return {"type": _str_tuple, "metavar": "NAME[,NAME...]"}
        return {"type": _int_tuple, "metavar": "N,N,..."}
    if kind is dict:
        return {"type": _yaml_mapping, "metavar": "YAML"}
    if kind not in (int, float, str, Path):
        raise TypeError(f"no flag for {setting.name}: {hint}")
    return {"type": kind, "metavar": "PATH" if kind is Path else kind.__name__.upper()}


def _int_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _str_tuple(text: str) -> tuple[str, ...]:
    parts = tuple(part.strip() for part in text.split(","))
    if not all(parts):
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return parts


def _yaml_mapping(text: str) -> dict[str, Any]:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a YAML mapping such as {{key: value}}, got {text!r}")
    return value


def _hidden_default(default: Any) -> bool:
    """Defaults not worth showing: unset (the docstring says what None means), off, empty."""
    return default is None or default is False or default == {} or default == ()


def _show(default: Any) -> str:
    return ",".join(map(str, default)) if isinstance(default, tuple) else str(default)
