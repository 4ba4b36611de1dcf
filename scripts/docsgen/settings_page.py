"""The configuration page, generated from every Settings class in ``services/*/config.py``.

Settings classes are found by importing ``services.common.config`` and each
``services.<name>.config`` module, never from a hand-kept list, so a new setting (or a new
service) shows up on the page by itself. A field's description is its ``Field(description=...)``
or else the ``#`` comments written on and just above it, the house style of those modules.
"""

from __future__ import annotations

import ast
import enum
import importlib
import inspect
import io
import pkgutil
import textwrap
import tokenize
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import AliasChoices, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

import services

COMMON_MODULE = "services.common.config"


@dataclass(frozen=True)
class Setting:
    """One row of the page: a field as the environment sees it."""

    env_names: tuple[str, ...]
    type_name: str
    default: str
    description: str


def settings_modules() -> list[types.ModuleType]:
    """``services.common.config`` first, then every service package's ``config`` module."""
    modules = [importlib.import_module(COMMON_MODULE)]
    for info in sorted(pkgutil.iter_modules(services.__path__), key=lambda i: i.name):
        if not info.ispkg or info.name == "common":
            continue
        try:
            modules.append(importlib.import_module(f"services.{info.name}.config"))
        except ModuleNotFoundError as error:
            if error.name != f"services.{info.name}.config":
                raise
    return modules


def defined_settings_class(value: object, module: types.ModuleType) -> bool:
    return isinstance(value, type) and issubclass(value, BaseSettings) and value.__module__ == module.__name__


def settings_classes() -> list[type[BaseSettings]]:
    """Every BaseSettings subclass defined in those modules, in module and source order."""
    found: list[type[BaseSettings]] = []
    for module in settings_modules():
        classes = [value for value in vars(module).values() if defined_settings_class(value, module)]
        found.extend(sorted(classes, key=lambda cls: inspect.getsourcelines(cls)[1]))
    return found


def documented_classes() -> list[type[BaseSettings]]:
    """The classes a process reads: every Settings class that no other one extends.

    A base such as ``ServiceSettings`` is read only through its subclasses, each under its own
    prefix, so its fields are listed once per subclass instead of under the base's prefix.
    """
    classes = settings_classes()
    return [cls for cls in classes if not any(o is not cls and issubclass(o, cls) for o in classes)]


def env_prefix(cls: type[BaseSettings]) -> str:
    return str(cls.model_config.get("env_prefix", ""))


def is_nested_settings(field: FieldInfo) -> bool:
    annotation = field.annotation
    return isinstance(annotation, type) and issubclass(annotation, BaseSettings)


def env_names(cls: type[BaseSettings], name: str, field: FieldInfo) -> tuple[str, ...]:
    """What pydantic-settings reads for the field: its ``ZHIKU_*`` aliases, or prefix + name."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        chosen = tuple(c for c in alias.choices if isinstance(c, str) and c.upper() == c)
        if chosen:
            return chosen
    elif isinstance(alias, str):
        return (alias,)
    return (f"{env_prefix(cls)}{name}".upper(),)


def type_name(annotation: Any) -> str:
    """A short, readable spelling of a field's type: ``int``, ``str | None``, ``"a" | "b"``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(f'"{a}"' if isinstance(a, str) else repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join("None" if a is type(None) else type_name(a) for a in args)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is not None:
        inner = ", ".join(type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


BOUNDS = (
    (annotated_types.Ge, "ge", "≥"),
    (annotated_types.Gt, "gt", ">"),
    (annotated_types.Le, "le", "≤"),
    (annotated_types.Lt, "lt", "<"),
)


def bounds(field: FieldInfo) -> str:
    """The field's numeric bounds (``Field(ge=..., le=...)``), e.g. ``≥ 0, ≤ 300``."""
    parts: list[str] = []
    for item in field.metadata:
        for kind, attribute, sign in BOUNDS:
            if isinstance(item, kind):
                parts.append(f"{sign} {getattr(item, attribute)}")
    return ", ".join(parts)


def default_text(field: FieldInfo) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, SecretStr):
        return "(secret)" if value.get_secret_value() else "empty"
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, list | tuple | set | frozenset):
        return ",".join(str(v) for v in value) if value else "empty"
    if isinstance(value, dict):
        return str(value) if value else "empty"
    if isinstance(value, Path | str):
        return str(value) if str(value) else "empty"
    return str(value)


def field_comments(cls: type) -> dict[str, str]:
    """Each field's ``#`` comments in the class body: the lines right above it and its own line."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    comments: dict[int, str] = {}
    code_lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
        elif token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            code_lines.update(range(token.start[0], token.end[0] + 1))
    found: dict[str, str] = {}
    class_node = ast.parse(source).body[0]
    for node in getattr(class_node, "body", []):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above: list[str] = []
        line = node.lineno - 1
        while line in comments and line not in code_lines:
            above.insert(0, comments[line])
            line -= 1
        inline = [comments[node.lineno]] if node.lineno in comments else []
        text = " ".join(above + inline).strip()
        if text:
            found[node.target.id] = text
    return found


def description(cls: type[BaseSettings], name: str, field: FieldInfo) -> str:
    """``Field(description=...)``, else the nearest comment along the class's bases."""
    if field.description:
        return field.description
    for klass in cls.__mro__:
        if isinstance(klass, type) and issubclass(klass, BaseSettings) and klass is not BaseSettings:
            text = field_comments(klass).get(name)
            if text:
                return text
    return ""


def settings_of(cls: type[BaseSettings]) -> Iterator[Setting]:
    for name, field in cls.model_fields.items():
        if is_nested_settings(field):
            continue
        kind = type_name(field.annotation)
        limits = bounds(field)
        yield Setting(
            env_names=env_names(cls, name, field),
            type_name=f"{kind} ({limits})" if limits else kind,
            default=default_text(field),
            description=description(cls, name, field),
        )


def own_summary(cls: type) -> str:
    """The first paragraph of the class's own docstring, else of its module's (never a base's)."""
    doc = cls.__dict__.get("__doc__") or inspect.getmodule(cls).__doc__ or ""
    return inspect.cleandoc(doc).split("\n\n")[0].replace("\n", " ")


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def code(text: str) -> str:
    return f"`{text}`" if "`" not in text else f"``{text}``"


def render() -> str:
    """The whole Markdown page."""
    out = [
        "# Configuration",
        "",
        "<!-- Generated by scripts/docsgen/settings_page.py from services/*/config.py; do not edit. -->",
        "",
        "Every setting comes from the environment (pydantic-settings, names are case-insensitive).",
        "Values every process needs use the prefix `ZHIKU_`; each service's own values use",
        "`ZHIKU_<SERVICE>_`. This page is generated from the Settings classes each time the site is",
        "built, so it lists every setting there is. In compose put them in `.env`; in the Helm chart",
        "use `config.extraEnv` (all components) or `<component>.extraEnv` (one).",
        "",
    ]
    for cls in documented_classes():
        nested = [f for f in cls.model_fields.values() if is_nested_settings(f)]
        out += [f"## {cls.__name__}", "", f"`{cls.__module__}`, prefix `{env_prefix(cls)}`.", ""]
        summary = own_summary(cls)
        if summary:
            out += [summary, ""]
        for field in nested:
            target = typing.cast(type, field.annotation)
            out += [f"Also reads every setting of [{target.__name__}](#{target.__name__.lower()}).", ""]
        out += ["| variable | type | default | description |", "|---|---|---|---|"]
        for setting in settings_of(cls):
            names = "<br>".join(code(n) for n in setting.env_names)
            out.append(
                f"| {names} | {cell(code(setting.type_name))} | {cell(code(setting.default))} "
                f"| {cell(setting.description)} |"
            )
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(render())
