"""Requests built from the gateway's own OpenAPI schema, for tests that must cover every route.

Each operation's inputs (path, query, JSON body, form, bare JSON body) are read from the
schema; inputs marked with ``x-zhiku-refers-to`` (knowledge bases, file chats, conversations,
jobs, messages) are :class:`Slot` s a test fills with the values it wants, every other input
gets a valid value from the schema itself (its examples, default, enum or type). A route or
field added later is therefore probed without editing the test.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from services.gateway.schemas.refs import REF_EXTENSION

UPLOAD = ("probe.txt", b"a harmless probe upload\n", "text/plain")


@dataclass(frozen=True)
class Slot:
    """One input that refers to something: where it goes, its name, what it refers to."""

    where: str  # "path" | "query" | "json" | "form" | "body" (a bare JSON body)
    name: str
    kind: str
    required: bool


@dataclass
class Probe:
    method: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    data: dict[str, Any] | None = None
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None

    def key(self) -> tuple:
        return (self.method, self.path, repr(sorted(self.params.items())), repr(self.json), repr(self.data))


@dataclass(frozen=True)
class Operation:
    method: str
    template: str
    spec: dict[str, Any]

    @property
    def name(self) -> str:
        return f"{self.method.upper()} {self.template}"


class Schema:
    def __init__(self, spec: dict[str, Any], hints: dict[str, Any] | None = None) -> None:
        self.spec = spec
        # Values for unmarked inputs by name (e.g. a file name worth asking for).
        self.hints = hints or {}

    def operations(self) -> list[Operation]:
        return [
            Operation(method, template, operation)
            for template, methods in self.spec["paths"].items()
            for method, operation in methods.items()
        ]

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[-1]
            schema = self.spec["components"]["schemas"][name]
        return schema

    def _body(self, operation: Operation) -> tuple[str | None, dict[str, Any]]:
        content = operation.spec.get("requestBody", {}).get("content", {})
        for media in ("application/json", "multipart/form-data", "application/x-www-form-urlencoded"):
            if media in content:
                return media, self.resolve(content[media]["schema"])
        return None, {}

    def slots(self, operation: Operation) -> list[Slot]:
        """Every marked input of the operation."""
        found = [
            Slot(p["in"], p["name"], p["schema"][REF_EXTENSION], bool(p.get("required")))
            for p in operation.spec.get("parameters", [])
            if REF_EXTENSION in p.get("schema", {})
        ]
        media, body = self._body(operation)
        if media is None:
            return found
        if REF_EXTENSION in body:
            return [*found, Slot("body", "", body[REF_EXTENSION], True)]
        where = "json" if media == "application/json" else "form"
        required = set(body.get("required", []))
        for name, prop in body.get("properties", {}).items():
            if REF_EXTENSION in prop:
                found.append(Slot(where, name, prop[REF_EXTENSION], name in required))
        return found

    def sample(self, schema: dict[str, Any], name: str = "") -> Any:
        """A valid value for ``schema``: a hint, its example, default, first enum or type."""
        if name in self.hints:
            return copy.deepcopy(self.hints[name])
        schema = self.resolve(schema)
        if schema.get("examples"):
            return copy.deepcopy(schema["examples"][0])
        if schema.get("default") is not None:
            return copy.deepcopy(schema["default"])
        if "anyOf" in schema:
            options = [option for option in schema["anyOf"] if option.get("type") != "null"]
            return self.sample(options[0], name)
        if "enum" in schema:
            return schema["enum"][0]
        kind = schema.get("type")
        if kind == "string":
            if schema.get("format") == "binary" or "contentMediaType" in schema:
                return UPLOAD
            return "probe".ljust(schema.get("minLength", 0), "e")
        if kind == "integer":
            return max(int(schema.get("minimum", 1)), 1)
        if kind == "number":
            return schema.get("minimum", 0.5)
        if kind == "boolean":
            return False
        if kind == "array":
            return [self.sample(schema.get("items", {}))] * max(schema.get("minItems", 1), 1)
        if kind == "object":
            properties = schema.get("properties", {})
            return {key: self.sample(properties[key], key) for key in schema.get("required", [])}
        return "probe"

    def build(self, operation: Operation, values: dict[Slot, Any]) -> Probe:
        """A request for ``operation``: marked inputs from ``values`` (absent ones left out),
        every other required input sampled from the schema."""
        path = operation.template
        probe = Probe(operation.method.upper(), path)
        for parameter in operation.spec.get("parameters", []):
            name, where = parameter["name"], parameter["in"]
            marked = REF_EXTENSION in parameter.get("schema", {})
            if marked:
                slot = Slot(where, name, parameter["schema"][REF_EXTENSION], bool(parameter.get("required")))
                if slot not in values:
                    continue
                value = values[slot]
            elif parameter.get("required"):
                value = self.sample(parameter["schema"], name)
            else:
                continue
            if where == "path":
                probe.path = probe.path.replace("{" + name + "}", str(value))
            elif where == "query":
                probe.params[name] = value
        media, body = self._body(operation)
        if media is None:
            return probe
        marked_fields = {slot.name: value for slot, value in values.items() if slot.where in ("json", "form")}
        if REF_EXTENSION in body:
            bare = [value for slot, value in values.items() if slot.where == "body"]
            probe.json = bare[0] if bare else self.sample(body)
            return probe
        properties = body.get("properties", {})
        fields = copy.deepcopy(body["examples"][0]) if body.get("examples") else {}
        for name in list(fields):
            if REF_EXTENSION in properties.get(name, {}):
                del fields[name]  # marked inputs come from ``values`` only
        for name in body.get("required", []):
            if name not in fields and REF_EXTENSION not in properties.get(name, {}):
                fields[name] = self.sample(properties[name], name)
        fields.update(marked_fields)
        if media == "application/json":
            probe.json = fields
            return probe
        probe.data, probe.files = {}, []
        for name, value in fields.items():
            uploads = value if isinstance(value, list) else [value]
            if uploads and all(isinstance(item, tuple) for item in uploads):
                probe.files.extend((name, item) for item in uploads)
            elif value is not None:
                probe.data[name] = value if isinstance(value, str) else str(value).lower()
        return probe

    def request_properties(self, operation: Operation) -> list[tuple[str, dict[str, Any]]]:
        """(name, schema) of every input a client sends, nested models included, for the check
        that every input which looks like a reference is marked."""
        found = [(p["name"], p.get("schema", {})) for p in operation.spec.get("parameters", [])]
        _, body = self._body(operation)
        seen: set[int] = set()

        def walk(schema: dict[str, Any], name: str) -> None:
            if name:
                found.append((name, schema))  # as written: a marker sits beside a $ref
            schema = self.resolve(schema)
            if id(schema) in seen:
                return
            seen.add(id(schema))
            for key, prop in schema.get("properties", {}).items():
                walk(prop, key)
            for option in schema.get("anyOf", []):
                walk(option, "")
            if "items" in schema:
                walk(schema["items"], "")

        walk(body, "")
        return found
