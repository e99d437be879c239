"""Helpers to walk the generated CRD schema in tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from jetpool_operator.api import crdgen


def root_schema() -> dict[str, Any]:
    version = crdgen.crd()["spec"]["versions"][0]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with a readable path (``.spec.nats.url``, ``...[]`` for items)."""
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from nodes(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from nodes(schema["additionalProperties"], f"{path}{{}}")
    for i, sub in enumerate(schema.get("anyOf", [])):
        yield from nodes(sub, f"{path}<anyOf{i}>")


def at(schema: dict[str, Any], dotted: str) -> dict[str, Any]:
    """The node at ``.spec.scaling`` style paths."""
    node = schema
    for part in filter(None, dotted.split(".")):
        items = part.count("[]")
        node = node["properties"][part.removesuffix("[]" * items)]
        for _ in range(items):
            node = node["items"]
    return node


def unknown_fields(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields of a manifest the apiserver would prune (or reject with strict validation)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    found: list[str] = []
    if isinstance(value, dict) and "properties" in schema:
        for key, sub in value.items():
            if key not in schema["properties"]:
                found.append(f"{path}.{key}")
            else:
                found += unknown_fields(sub, schema["properties"][key], f"{path}.{key}")
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, sub in value.items():
            found += unknown_fields(sub, schema["additionalProperties"], f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, sub in enumerate(value):
            found += unknown_fields(sub, schema["items"], f"{path}[{i}]")
    return found
