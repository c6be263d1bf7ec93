"""Validation of sandbox answers against the shared OpenAPI document of the Marketplace API."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

_RELATIVE = Path("shared") / "api" / "marketplace-notifications.openapi.json"
# The project sits next to shared/ (../shared); a git worktree may sit one level deeper.
SPEC = next(
    (p / _RELATIVE for p in Path(__file__).resolve().parents if (p / _RELATIVE).exists()),
    Path(__file__).resolve().parents[2] / _RELATIVE,
)


def _to_json_schema(node: Any) -> Any:
    """OpenAPI 3.0 ``nullable`` becomes a JSON Schema null alternative."""
    if isinstance(node, list):
        return [_to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    converted = {k: _to_json_schema(v) for k, v in node.items() if k != "x-softwareone-rql"}
    if converted.pop("nullable", False):
        if "type" in converted:
            converted["type"] = [converted["type"], "null"]
        else:
            converted = {"anyOf": [converted, {"type": "null"}]}
    return converted


@functools.cache
def _components() -> dict[str, Any]:
    document = json.loads(SPEC.read_text())
    return _to_json_schema(document["components"])


@functools.cache
def validator(schema_name: str) -> Draft202012Validator:
    """A validator for one named component schema (``ContactListResponse``, ``Contact`` ...)."""
    root = {"$ref": f"#/components/schemas/{schema_name}", "components": _components()}
    return Draft202012Validator(root)


def errors(schema_name: str, instance: Any) -> list[str]:
    """Every validation error, as readable strings (empty when the instance is valid)."""
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator(schema_name).iter_errors(instance)
    ]
