"""Generate ``crds/workerpools.jetpool.dev.yaml`` from the pydantic models.

    python -m jetpool_operator.api.crdgen            # (re)write the CRD and the field tables
    python -m jetpool_operator.api.crdgen --check    # exit 1 with a diff when either is stale

The field tables of ``docs/api.md`` (between the GENERATED markers) come from the same schema,
so the reference cannot drift from the CRD.

pydantic emits JSON Schema 2020-12; a CRD needs a *structural* OpenAPI v3.0 schema. The
post-processing below inlines ``$ref``/``$defs``, turns ``Optional[X]`` (``anyOf`` with
``null``) into ``nullable: true``, drops titles and ``additionalProperties: false``, rewrites
numeric ``exclusiveMinimum``/``exclusiveMaximum`` into the OpenAPI v3.0 boolean form, and
removes defaults from the status (the operator writes every status field it uses).
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from jetpool_operator.api import v1alpha1 as api

log = logging.getLogger(__name__)

CRD_PATH = Path(__file__).resolve().parents[3] / "crds" / f"{api.PLURAL}.{api.GROUP}.yaml"
DOCS_PATH = Path(__file__).resolve().parents[3] / "docs" / "api.md"
BEGIN_FIELDS = "<!-- BEGIN GENERATED FIELDS (make crds) -->"
END_FIELDS = "<!-- END GENERATED FIELDS -->"
HEADER = (
    "# Generated from operator/jetpool_operator/api/v1alpha1.py by\n"
    "# `python -m jetpool_operator.api.crdgen` (make crds). DO NOT EDIT.\n"
)

_KEY_ORDER = (
    "description",
    "type",
    "format",
    "enum",
    "default",
    "nullable",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "anyOf",
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "items",
    "additionalProperties",
    "required",
    "properties",
    "x-kubernetes-validations",
)
_DROPPED = frozenset({"title"})


class SchemaError(ValueError):
    """The models use a construct that has no structural-schema equivalent."""


def _ordered(node: dict[str, Any]) -> dict[str, Any]:
    rank = {key: i for i, key in enumerate(_KEY_ORDER)}
    return dict(sorted(node.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))


def _structural(node: Mapping[str, Any], defs: Mapping[str, Any]) -> dict[str, Any]:
    """Rewrite one pydantic JSON-schema node (recursively) into a structural CRD node."""
    node = dict(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        # The field's own keys (description, default) win over the model's docstring.
        node = {**target, **node}
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        variants = [v for v in node.pop("anyOf") if v.get("type") != "null"]
        if len(variants) != 1:
            raise SchemaError(f"unions are not structural: {variants}")
        inner = _structural(variants[0], defs)
        node = {**inner, **{k: v for k, v in node.items() if k != "default"}, "nullable": True}
        if node.get("default") is None:
            node.pop("default", None)
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if "default" in node and node["default"] is None:
        del node["default"]
    if node.get("additionalProperties") is False:
        del node["additionalProperties"]
    for bound, inclusive in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if bound in node and not isinstance(node[bound], bool):
            node[inclusive] = node[bound]
            node[bound] = True

    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key == "properties":
            out[key] = {name: _structural(sub, defs) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, Mapping):
            out[key] = _structural(value, defs)
        elif key == "anyOf":
            out[key] = [_structural(v, defs) for v in value]
        else:
            out[key] = value
    return _ordered(out)


def _strip_defaults(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_defaults(v) for k, v in node.items() if k != "default"}
    if isinstance(node, list):
        return [_strip_defaults(v) for v in node]
    return node


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural CRD schema of one model."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _structural(raw, defs)


def _printer_columns() -> list[dict[str, Any]]:
    ready = '.status.conditions[?(@.type=="Ready")]'
    return [
        {"name": "Ready", "type": "string", "jsonPath": f"{ready}.status"},
        {"name": "Desired", "type": "integer", "jsonPath": ".status.desiredReplicas"},
        {"name": "Backlog", "type": "integer", "jsonPath": ".status.backlog"},
        {"name": "Error-Rate", "type": "number", "jsonPath": ".status.errorRate"},
        {"name": "Breaker", "type": "string", "jsonPath": ".status.circuitBreaker.state"},
        {"name": "Healthy", "type": "boolean", "jsonPath": ".status.health.healthy"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        {"name": "Replicas", "type": "integer", "jsonPath": ".status.replicas", "priority": 1},
        {"name": "Throughput", "type": "number", "jsonPath": ".status.throughput", "priority": 1},
        {
            "name": "Dead-Letters",
            "type": "integer",
            "jsonPath": ".status.deadLetters",
            "priority": 1,
        },
        {
            "name": "Rate-Limit",
            "type": "number",
            "jsonPath": ".spec.rateLimit.perSecond",
            "priority": 1,
        },
        {
            "name": "Per-Key",
            "type": "integer",
            "jsonPath": ".spec.keyedConcurrency.maxPerKey",
            "priority": 1,
        },
        {"name": "Message", "type": "string", "jsonPath": f"{ready}.message", "priority": 1},
    ]


def crd() -> dict[str, Any]:
    """The CustomResourceDefinition as a plain dict."""
    spec = model_schema(api.WorkerPoolSpec)
    status = _strip_defaults(model_schema(api.WorkerPoolStatus))
    root = {
        "description": "A pool of task workers fed by a NATS JetStream stream.",
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {
                "description": "APIVersion of this object (jetpool.dev/v1alpha1).",
                "type": "string",
            },
            "kind": {"description": "Kind of this object (WorkerPool).", "type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{api.PLURAL}.{api.GROUP}",
            "labels": {"app.kubernetes.io/name": "jetpool", "app.kubernetes.io/part-of": "jetpool"},
        },
        "spec": {
            "group": api.GROUP,
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": list(api.SHORT_NAMES),
                "categories": list(api.CATEGORIES),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": _printer_columns(),
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def render() -> str:
    """The CRD file's exact text (deterministic: equal models give equal bytes)."""
    body = yaml.safe_dump(crd(), sort_keys=False, width=100, allow_unicode=True)
    return HEADER + body


def _type_of(node: dict[str, Any]) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "quantity"
    kind = str(node.get("type", "object"))
    if kind == "array":
        return f"[]{_type_of(node.get('items', {}))}"
    if kind == "object" and isinstance(node.get("additionalProperties"), dict):
        return f"map[string]{_type_of(node['additionalProperties'])}"
    if node.get("x-kubernetes-preserve-unknown-fields"):
        return "object (Kubernetes)"
    return f"{kind} ({node['format']})" if "format" in node else kind


def _rows(node: dict[str, Any], path: str, required: bool) -> list[str]:
    rows = []
    if path:
        default = node.get("default")
        shown = "" if default is None or isinstance(default, dict) else json.dumps(default)
        kind = " \\| ".join(str(v) for v in node["enum"]) if node.get("enum") else _type_of(node)
        note = " **required**" if required else ""
        text = " ".join(str(node.get("description", "")).split())
        text = text.replace("|", "\\|").replace("<", "\\<")
        rows.append(f"| `{path}` | {kind}{note} | {f'`{shown}`' if shown else ''} | {text} |")
    children = node.get("properties", {})
    if "items" in node:
        children = node["items"].get("properties", {})
        path += "[]"
    needed = set(node.get("items", node).get("required", []))
    for name, sub in children.items():
        rows += _rows(sub, f"{path}.{name}" if path else name, name in needed)
    return rows


def field_tables() -> str:
    """Markdown tables of every spec and status field: type, default, description."""
    root = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    head = "| field | type | default | meaning |\n|---|---|---|---|\n"
    parts = [BEGIN_FIELDS, "", "### spec", "", head + "\n".join(_rows(root["spec"], "", False))]
    parts += ["", "### status", "", head + "\n".join(_rows(root["status"], "", False)), ""]
    parts.append(END_FIELDS)
    return "\n".join(parts)


def render_docs(current: str) -> str:
    """``current`` with its generated section replaced (appended if missing)."""
    if BEGIN_FIELDS in current and END_FIELDS in current:
        before, rest = current.split(BEGIN_FIELDS, 1)
        after = rest.split(END_FIELDS, 1)[1]
        return before + field_tables() + after
    return current.rstrip("\n") + "\n\n" + field_tables() + "\n"


def _stale(path: Path, fresh: str) -> bool:
    current = path.read_text() if path.exists() else ""
    if current == fresh:
        return False
    sys.stdout.writelines(
        difflib.unified_diff(
            current.splitlines(keepends=True),
            fresh.splitlines(keepends=True),
            fromfile=f"{path} (committed)",
            tofile=f"{path} (generated)",
        )
    )
    sys.stderr.write(f"{path} is stale: run `make crds`\n")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a file is stale")
    parser.add_argument("--output", type=Path, default=CRD_PATH, help="CRD file to write")
    parser.add_argument("--docs", type=Path, default=DOCS_PATH, help="API reference to update")
    args = parser.parse_args(argv)
    fresh_crd = render()
    fresh_docs = render_docs(args.docs.read_text() if args.docs.exists() else "")
    if args.check:
        stale = [_stale(args.output, fresh_crd), _stale(args.docs, fresh_docs)]
        return 1 if any(stale) else 0
    for path, text in ((args.output, fresh_crd), (args.docs, fresh_docs)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        log.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
