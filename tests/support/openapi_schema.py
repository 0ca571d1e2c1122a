"""Validate JSON bodies against the official OpenAI OpenAPI component schemas.

``validate("CreateChatCompletionStreamResponse", chunk)`` raises :class:`jsonschema.ValidationError`
when ``chunk`` does not conform. The 3 MB spec is loaded once per process; OpenAPI 3.0-style
``nullable: true`` is translated to JSON Schema (``null`` allowed) before validating with Draft 2020-12.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

_SPEC = Path("reference") / "openai-openapi" / "openapi.yaml"
#: The official spec: $OPENAI_OPENAPI_SPEC, else shared/ beside the repository (as CI lays it out).
SPEC_PATH = Path(
    os.environ.get("OPENAI_OPENAPI_SPEC")
    or next(
        (
            str(p)
            for p in (Path(__file__).resolve().parents[3] / "shared" / _SPEC, Path("/work/shared") / _SPEC)
            if p.exists()
        ),
        str(Path(__file__).resolve().parents[3] / "shared" / _SPEC),
    )
)
_URI = "urn:openai:openapi"


def _allow_null(node: dict[str, Any]) -> dict[str, Any]:
    node = dict(node)
    node.pop("nullable", None)
    if "$ref" in node:
        ref = node.pop("$ref")
        node["anyOf"] = [{"$ref": ref}, {"type": "null"}]
        return node
    typ = node.get("type")
    if isinstance(typ, str):
        node["type"] = [typ, "null"]
    elif isinstance(typ, list) and "null" not in typ:
        node["type"] = [*typ, "null"]
    for combinator in ("anyOf", "oneOf"):
        if combinator in node:
            node[combinator] = [*node[combinator], {"type": "null"}]
    if "enum" in node and None not in node["enum"]:
        node["enum"] = [*node["enum"], None]
    if "allOf" in node and "type" not in node:
        # allOf cannot be widened in place: accept null or everything the allOf accepts.
        node = {"anyOf": [{"allOf": node.pop("allOf")}, {"type": "null"}], **node}
    return node


def _translate(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _translate(v) for k, v in node.items()}
        if out.get("nullable") is True:
            return _allow_null(out)
        out.pop("nullable", None)
        return out
    if isinstance(node, list):
        return [_translate(v) for v in node]
    return node


@functools.cache
def _registry() -> Registry:
    with SPEC_PATH.open("rb") as fh:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        spec = yaml.load(fh, Loader=loader)  # noqa: S506 - a safe loader
    spec = _translate(spec)
    return Registry().with_resource(_URI, Resource.from_contents(spec, default_specification=DRAFT202012))


@functools.cache
def validator(schema_name: str) -> Draft202012Validator:
    """A validator for ``#/components/schemas/<schema_name>`` (cached)."""
    registry = _registry()
    spec = registry.contents(_URI)
    if schema_name not in spec["components"]["schemas"]:
        raise KeyError(f"no schema {schema_name!r} in the OpenAI spec")
    return Draft202012Validator({"$ref": f"{_URI}#/components/schemas/{schema_name}"}, registry=registry)


def validate(schema_name: str, instance: Any) -> None:
    """Raise :class:`jsonschema.ValidationError` unless ``instance`` conforms to the named component schema."""
    validator(schema_name).validate(instance)


def errors(schema_name: str, instance: Any) -> list[str]:
    """Every mismatch, as readable strings (empty when valid)."""
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator(schema_name).iter_errors(instance)]
