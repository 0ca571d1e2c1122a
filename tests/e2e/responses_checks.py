"""Checks of Responses API streams and bodies: every event against its member schema of the spec's
``ResponseStreamEvent`` and the SDK's strict models; sequence numbers, ids, item lifecycles."""

from __future__ import annotations

import functools
from typing import Any

import pydantic
from openai.types.responses import Response, ResponseStreamEvent

from tests.support.openapi_schema import _URI, _registry, validate

_STREAM_EVENT: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ResponseStreamEvent)


@functools.cache
def _event_schemas() -> dict[str, str]:
    """Event type → the spec's component schema of that member of ``ResponseStreamEvent``."""
    schemas = _registry().contents(_URI)["components"]["schemas"]
    out: dict[str, str] = {}
    for ref in schemas["ResponseStreamEvent"]["anyOf"]:
        name = ref["$ref"].rsplit("/", 1)[-1]
        enum = schemas[name].get("properties", {}).get("type", {}).get("enum") or []
        for kind in enum:
            out[kind] = name
    return out


def raw_event(event: Any) -> dict[str, Any]:
    return event.to_dict(mode="json", warnings=False) if hasattr(event, "to_dict") else dict(event)


def check_stream(events: list[Any], *, first_seq: int = 0) -> list[dict[str, Any]]:
    """Every event valid (spec and SDK, strictly); numbers from ``first_seq`` without gaps; one response
    id; every item added is done and none is done unadded; the stream ends with a terminal event."""
    raw = [raw_event(e) for e in events]
    assert raw, "no events"
    schemas = _event_schemas()
    for event in raw:
        assert event["type"] in schemas, f"not a ResponseStreamEvent: {event['type']}"
        validate(schemas[event["type"]], event)
        _STREAM_EVENT.validate_python(event, strict=True)
    assert [e["sequence_number"] for e in raw] == list(range(first_seq, first_seq + len(raw)))
    ids = {e["response"]["id"] for e in raw if "response" in e}
    assert len(ids) <= 1, ids
    added = {e["output_index"]: e["item"]["id"] for e in raw if e["type"] == "response.output_item.added"}
    done = {e["output_index"]: e["item"] for e in raw if e["type"] == "response.output_item.done"}
    if first_seq == 0:
        assert raw[0]["type"] == "response.created"
        assert raw[1]["type"] == "response.in_progress"
        assert set(added) == set(done), (added, done)
        assert all(added[i] == done[i]["id"] for i in added)
    assert all(item["status"] != "in_progress" for item in done.values())
    assert raw[-1]["type"] in ("response.completed", "response.failed", "response.incomplete")
    final = raw[-1]["response"]
    assert all(item.get("status") != "in_progress" for item in final["output"])
    return raw


def check_response(body: dict[str, Any]) -> Response:
    """A Response body against the spec and the SDK's model."""
    validate("Response", body)
    return Response.model_validate(body, strict=True)
