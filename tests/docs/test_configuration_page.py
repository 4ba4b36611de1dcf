"""The generated configuration page lists every setting of every Settings class.

The classes are discovered here on their own (every ``services.<name>.config`` module and
``services.common.config``), not taken from the generator, and each field's environment name is
derived the way pydantic-settings reads it, so a setting the page leaves out fails this test.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import re
import types

import pytest
from pydantic import AliasChoices
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

import services
from scripts.docsgen import settings_page

ROW = re.compile(r"^\| (?P<names>`ZHIKU_[^|]*?) \| (?P<type>[^|]+(?:\\\|[^|]*)*) \| (?P<default>[^|]+) \|")
NAME = re.compile(r"`(ZHIKU_[A-Z0-9_]+)`")


def config_modules() -> list[types.ModuleType]:
    modules = [importlib.import_module("services.common.config")]
    for info in pkgutil.iter_modules(services.__path__):
        try:
            modules.append(importlib.import_module(f"services.{info.name}.config"))
        except ModuleNotFoundError:
            continue
    return modules


def discovered_classes() -> set[type[BaseSettings]]:
    return {
        value
        for module in config_modules()
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, BaseSettings) and value.__module__ == module.__name__
    }


def expected_names(reader: type[BaseSettings], name: str, field: FieldInfo) -> set[str]:
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return {c for c in alias.choices if isinstance(c, str) and c.startswith("ZHIKU_")}
    if isinstance(alias, str):
        return {alias}
    return {f"{reader.model_config.get('env_prefix', '')}{name}".upper()}


def readers_of(cls: type[BaseSettings], classes: set[type[BaseSettings]]) -> set[type[BaseSettings]]:
    """The classes a process reads that carry ``cls``'s fields: itself, or its subclasses."""
    subclasses = {other for other in classes if other is not cls and issubclass(other, cls)}
    leaves = {sub for sub in subclasses if not any(o is not sub and issubclass(o, sub) for o in classes)}
    return leaves or {cls}


@pytest.fixture(scope="module")
def page() -> str:
    return settings_page.render()


@pytest.fixture(scope="module")
def rows(page: str) -> dict[str, tuple[str, str]]:
    found: dict[str, tuple[str, str]] = {}
    for line in page.splitlines():
        match = ROW.match(line)
        if match:
            for name in NAME.findall(match["names"]):
                found[name] = (match["type"].strip(), match["default"].strip())
    return found


def test_discovery_finds_every_service() -> None:
    modules = {cls.__module__ for cls in discovered_classes()}
    packages = {info.name for info in pkgutil.iter_modules(services.__path__) if info.ispkg}
    with_config = {name for name in packages if importlib.util.find_spec(f"services.{name}.config")}
    assert {f"services.{name}.config" for name in with_config} <= modules


def test_every_setting_of_every_settings_class_is_on_the_page(rows: dict[str, tuple[str, str]]) -> None:
    classes = discovered_classes()
    missing: list[str] = []
    checked = 0
    for cls in classes:
        for name, field in cls.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseSettings):
                assert annotation in classes, f"{cls.__name__}.{name}: nested {annotation} is not discovered"
                continue
            for reader in readers_of(cls, classes):
                for env in expected_names(reader, name, field):
                    checked += 1
                    if env not in rows:
                        missing.append(f"{cls.__name__}.{name} ({env})")
    assert checked > 50, "the discovery found almost no settings"
    assert not missing, f"settings missing from the configuration page: {missing}"


def test_each_row_has_a_type_and_a_default(rows: dict[str, tuple[str, str]]) -> None:
    assert rows
    for env, (kind, default) in rows.items():
        assert kind.strip("`") and default.strip("`"), env


def test_a_defaults_value_is_shown(rows: dict[str, tuple[str, str]]) -> None:
    gateway = importlib.import_module("services.gateway.config").GatewaySettings
    port = gateway.model_fields["port"].default
    assert rows["ZHIKU_GATEWAY_PORT"][1] == f"`{port}`"
