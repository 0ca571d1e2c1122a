"""The AsyncAPI document of every subject: committed and up to date, complete, self-consistent, and in
agreement with what faststream's own generator says of the catalog's subscribers."""

from __future__ import annotations

import inspect
import json
from typing import Any

import pytest

from contracts import asyncapi
from contracts.subjects import Subjects

pytestmark = pytest.mark.unit

DOC = asyncapi.document()


def test_committed_copy_is_up_to_date() -> None:
    assert asyncapi.ASYNCAPI_PATH.exists(), "no committed AsyncAPI document: run `make contracts`"
    assert asyncapi.ASYNCAPI_PATH.read_text() == asyncapi.render(DOC), (
        "the subjects or the wire changed: run `make contracts` and review the diff"
    )


def _subjects() -> set[str]:
    """Every subject a :class:`Subjects` names (``{run_id}`` for a per-run one); wildcards, streams,
    object store buckets and consumer names left out."""
    s = Subjects()
    out = set()
    for name, member in inspect.getmembers(Subjects):
        if name.startswith("_") or name.endswith(("_all", "_stream", "_bucket", "_consumer")) or name == "namespace":
            continue
        out.add(getattr(s, name) if isinstance(member, property) else getattr(s, name)("{run_id}"))
    return out


def test_every_subject_is_described() -> None:
    described = {c["address"] for c in DOC["channels"].values() if c["address"] is not None}
    assert _subjects() == described


def test_every_subject_has_a_sender_and_a_receiver() -> None:
    for key, channel in DOC["channels"].items():
        if channel["address"] is None:
            continue  # a reply inbox
        actions = {op["action"] for op in DOC["operations"].values() if op["channel"]["$ref"] == f"#/channels/{key}"}
        assert actions == {"send", "receive"}, key


def _resolve(ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = DOC
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def test_every_reference_resolves() -> None:
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            refs.extend(v for k, v in node.items() if k == "$ref")
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(DOC)
    assert refs
    for ref in refs:
        _resolve(ref)


def test_operations_send_what_their_channels_carry() -> None:
    for key, op in DOC["operations"].items():
        channel = op["channel"]["$ref"]
        assert all(m["$ref"].startswith(f"{channel}/messages/") for m in op["messages"]), key
        if "reply" in op:
            reply = op["reply"]["channel"]["$ref"]
            assert all(m["$ref"].startswith(f"{reply}/messages/") for m in op["reply"]["messages"]), key


#: Subjects of a service's own domain that every one of its replicas hears (a fan-out: no queue group,
#: no reply): each catalog replica applies every cache invalidation to the shared Redis cache.
FAN_OUT = {"catalog.receive.catalogInvalidated", "billing.receive.billingPricesChanged"}


def test_request_reply_subjects_name_their_queue_group_and_reply() -> None:
    for key, op in DOC["operations"].items():
        if key in FAN_OUT:
            assert "bindings" not in op and "reply" not in op, key
        elif key.startswith(("catalog.receive.catalog", "billing.receive.billing")):
            service = key.split(".")[0]
            assert op["bindings"]["nats"]["queue"] == service, key
            assert "reply" in op, key


def test_the_catalog_agrees_with_faststreams_own_generator() -> None:
    """faststream documents the catalog's broker from its subscribers: the same subjects, queue groups
    and handler descriptions must be in the document (it cannot see the nats-py services)."""
    from faststream.specification import AsyncAPI

    from catalog.app import CatalogRuntime
    from catalog.settings import CatalogSettings

    broker = CatalogRuntime(CatalogSettings(health_port=0)).broker
    generated = json.loads(AsyncAPI(broker, schema_version="3.0.0").to_specification().to_json())
    theirs = {(c["address"], c["bindings"]["nats"].get("queue")) for c in generated["channels"].values()}
    ours = {
        (_resolve(op["channel"]["$ref"])["address"], op.get("bindings", {}).get("nats", {}).get("queue"))
        for key, op in DOC["operations"].items()
        if key.startswith("catalog.receive.")
    }
    assert theirs == ours
