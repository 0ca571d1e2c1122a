"""One AsyncAPI 3.0 document of every NATS subject of Switchboard: who sends, who receives, what.

It is built from the contracts alone — the names of :class:`contracts.subjects.Subjects`, the wire
models' JSON schemas and the table :data:`CHANNELS` below — as plain AsyncAPI 3.0 JSON. It is not
built with faststream's AsyncAPI generator, because that generator describes the subscribers of one
faststream broker, and only the catalog has one: the runner's, billing's and the gateway's
subscriptions and publishers are plain nats-py, which it cannot see. Even for the catalog it would
name no payloads, since the catalog's handlers read the raw message (so that a malformed request is
still answered). So the document is written here, and ``tests/unit/test_asyncapi.py`` compares its
catalog part with what faststream's generator says of the catalog's broker, subject by subject and
queue group by queue group, so the two cannot drift apart.

How the document is laid out:

- one channel per subject (subjects with a run id have an ``{run_id}`` parameter); a request/reply
  subject has a second channel with no address, the requester's inbox, for its reply;
- one operation per service and direction (``<service>.send.<channel>``, ``<service>.receive.<channel>``),
  tagged with the service; a request's operations name their reply;
- JetStream subjects carry ``x-jetstream`` (stream, durable consumer, acknowledgement, message id);
  request/reply receivers carry the NATS binding's ``queue`` (their queue group);
- ``components.schemas`` holds every payload's JSON schema (pydantic's, in serialization mode; the
  same as ``libs/contracts/schemas/``); headers are ``traceparent`` (W3C trace context) and, on
  JetStream, ``Nats-Msg-Id``.

Every subject and stream is shown without a namespace; ``SWITCHBOARD_NAMESPACE=ns`` prefixes subjects
with ``ns.`` and streams with ``ns_``. ``make contracts`` (``python -m contracts.snapshot --write``)
writes the document to ``libs/contracts/asyncapi.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, TypeAdapter

from . import billing, catalog, events, fleet, runs, usage
from .subjects import (
    BILLING_QUEUE,
    CATALOG_QUEUE,
    MSG_ID_HEADER,
    OFFER_DECLINED,
    OFFER_TAKEN,
    RUNNER_QUEUE,
    TRACEPARENT_HEADER,
    Subjects,
)

ASYNCAPI_PATH = Path(__file__).resolve().parents[2] / "asyncapi.json"

Service = Literal["gateway", "runner", "billing", "catalog"]
Headers = Literal["none", "trace", "jetstream", "runner"]

SERVICES: dict[Service, str] = {
    "gateway": "The OpenAI-compatible HTTP API: authenticates, admits, queues runs and relays their events.",
    "runner": "Executes agents: model calls, tools, streaming, cancellation; records usage.",
    "billing": "Pricing, the exact ledger, balances and admission (reservations).",
    "catalog": "Users, API keys, agents and permissions (FastStream subscribers).",
}

_RUN_ID = "{run_id}"


@dataclass(frozen=True)
class Channel:
    """One subject: its payload, who sends and who receives it, and how."""

    key: str
    address: str
    description: str
    message: str
    senders: tuple[Service, ...]
    receivers: tuple[Service, ...]
    reply: str | None = None
    queue: str | None = None
    headers: Headers = "trace"
    jetstream: dict[str, Any] = field(default_factory=dict)
    #: The wire model of the message's payload, when it is not the model named ``message`` (the same
    #: model sent on two subjects with different headers is two messages).
    payload: str | None = None


def _channels() -> list[Channel]:
    s = Subjects()
    return [
        Channel(
            "runRequest",
            s.run_request,
            "Run an agent that no runner took when offered (runOffer), or that was not offered. JetStream "
            "(work queue): every runner pulls from one durable consumer, by free capacity, and acks when the "
            "run starts.",
            "RunRequest",
            ("gateway",),
            ("runner",),
            headers="jetstream",
            jetstream={
                "stream": s.runs_stream,
                "retention": "workqueue",
                "consumer": s.runs_consumer,
                "ack": "explicit, when the run starts",
                "msgId": "run_id",
            },
        ),
        Channel(
            "runOffer",
            s.run_offer,
            "Run an agent at once: the gateway offers the run to a runner with a free slot before it queues "
            "it (core NATS request/reply; only runners with room listen, queue group runners). The answer is "
            "`taken` (the runner runs it) or `declined`; declined, or no responders, and the gateway puts it "
            "on runRequest instead. Unanswered, it is not queued (it may have been taken).",
            "RunOffer",
            ("gateway",),
            ("runner",),
            payload="RunRequest",
            reply="RunOfferAnswer",
            queue=RUNNER_QUEUE,
        ),
        Channel(
            "runEvents",
            s.run_events(_RUN_ID),
            "The events of one run, in order (core NATS: a delta must not wait for a JetStream ack). "
            "The gateway subscribes to one run's subject before it queues the run. The RUN_EVENTS stream "
            "also keeps them briefly (file storage), so a gateway that missed some (a gap, a NATS restart) "
            "reads them again.",
            "RunEvent",
            ("runner",),
            ("gateway",),
            headers="none",
            jetstream={
                "stream": s.run_events_stream,
                "retention": "limits: 120 s, 1 GiB, the oldest dropped",
                "consumer": "none standing: a gateway that missed events reads them with a short-lived consumer",
            },
        ),
        Channel(
            "runCancel",
            s.run_cancel(_RUN_ID),
            "Stop a run now (the client went away, or billing refused a run queued before its admission). "
            "Core NATS, best effort; every runner listens on run.cancel.v1.*.",
            "CancelRun",
            ("gateway",),
            ("runner",),
            headers="none",
        ),
        Channel(
            "runAdmitted",
            s.run_admitted(_RUN_ID),
            "The go-ahead for a run queued with await_admission, published by billing as it answers the "
            "admission (AdmitRequest.announce). Core NATS; every runner listens on run.admitted.v1.*.",
            "RunAdmitted",
            ("billing",),
            ("runner",),
            headers="none",
        ),
        Channel(
            "runnerHeartbeat",
            s.runner_heartbeat,
            "Every runner, about once a second: it is alive, and how far each of its runs has got. Core NATS "
            "fan-out: billing bills a silent runner's calls in flight and releases their holds; gateways fail "
            "its open streams.",
            "RunnerHeartbeat",
            ("runner",),
            ("billing", "gateway"),
            headers="runner",
        ),
        Channel(
            "gatewayHeartbeat",
            s.gateway_heartbeat,
            "Every gateway process, about once a second: it is alive. Core NATS fan-out: a runner cancels the "
            "runs whose client waits on a gateway it no longer hears (RunRequest.gateway_id), billed for what "
            "they did.",
            "GatewayHeartbeat",
            ("gateway",),
            ("runner",),
            headers="none",
        ),
        Channel(
            "usageRecorded",
            s.usage_recorded,
            "One model call's usage: money. JetStream (file storage); publishes are retried until stored, "
            "billing acks only after its ledger commit. Billing sends it too, estimated, for the call in "
            "flight on a runner that fell silent (same message id: the runner's own record wins).",
            "UsageRecorded",
            ("runner", "billing"),
            ("billing",),
            headers="jetstream",
            jetstream={
                "stream": s.usage_stream,
                "retention": "limits",
                "consumer": s.usage_consumer,
                "ack": "explicit, after the ledger commit",
                "msgId": "{run_id}:{call_index}",
            },
        ),
        Channel(
            "usageRunClosed",
            s.usage_run_closed,
            "A run makes no more calls: billing releases what is left of its reservation. The runner sends "
            "it when a run ends; the gateway for a run admitted ahead of time and never used; billing for "
            "the runs of a runner that fell silent.",
            "RunClosed",
            ("runner", "gateway", "billing"),
            ("billing",),
            headers="jetstream",
            jetstream={
                "stream": s.usage_stream,
                "retention": "limits",
                "consumer": s.usage_consumer,
                "ack": "explicit, after the ledger commit",
                "msgId": "{run_id}:closed",
            },
        ),
        Channel(
            "catalogVerifyKey",
            s.catalog_verify_key,
            "Who does this API key (its hash) act as? Request/reply, queue group catalog.",
            "VerifyKeyRequest",
            ("gateway",),
            ("catalog",),
            reply="VerifyKeyReply",
            queue=CATALOG_QUEUE,
        ),
        Channel(
            "catalogAgentAccess",
            s.catalog_agent_access,
            "May this user run this agent? The agent's snapshot when they may. Request/reply, queue group catalog.",
            "AgentAccessRequest",
            ("gateway",),
            ("catalog",),
            reply="AgentAccessReply",
            queue=CATALOG_QUEUE,
        ),
        Channel(
            "catalogModelsList",
            s.catalog_models_list,
            "The agents a user may run, as OpenAI models. Request/reply, queue group catalog.",
            "ListModelsRequest",
            ("gateway",),
            ("catalog",),
            reply="ListModelsReply",
            queue=CATALOG_QUEUE,
        ),
        Channel(
            "catalogAdmin",
            s.catalog_admin,
            "One admin API call on users, groups, roles, API keys, agents or grants, forwarded by the gateway. "
            "Request/reply, queue group catalog.",
            "AdminRequest",
            ("gateway",),
            ("catalog",),
            reply="AdminReply",
            queue=CATALOG_QUEUE,
        ),
        Channel(
            "catalogInvalidated",
            s.catalog_invalidated,
            "Something cached changed: drop matching entries now. Core NATS fan-out (no queue group): every "
            "gateway drops its own cache, every catalog replica drops the entry from the shared Redis cache too "
            "(the replica that made the change may not have reached Redis).",
            "CacheInvalidated",
            ("catalog",),
            ("gateway", "catalog"),
        ),
        Channel(
            "billingAdmit",
            s.billing_admit,
            "Reserve the worst-case cost of a run's next model call before it starts. Request/reply, queue "
            "group billing (hand-written on nats-py: admission is on every request's path).",
            "AdmitRequest",
            ("gateway",),
            ("billing",),
            reply="AdmitReply",
            queue=BILLING_QUEUE,
        ),
        Channel(
            "billingPrefetch",
            s.billing_prefetch,
            "Admit runs ahead of time for a user's next requests to an agent. Request/reply, queue group billing.",
            "PrefetchRequest",
            ("gateway",),
            ("billing",),
            reply="PrefetchReply",
            queue=BILLING_QUEUE,
        ),
        Channel(
            "billingExtend",
            s.billing_extend,
            "Grow a run's reservation before a further model call. Request/reply, queue group billing.",
            "ExtendRequest",
            ("runner",),
            ("billing",),
            reply="ExtendReply",
            queue=BILLING_QUEUE,
        ),
        Channel(
            "billingBalance",
            s.billing_balance,
            "A user's balance and what is reserved of it. Request/reply, queue group billing.",
            "BalanceRequest",
            ("gateway",),
            ("billing",),
            reply="BalanceReply",
            queue=BILLING_QUEUE,
        ),
        Channel(
            "billingAdmin",
            s.billing_admin,
            "One admin API call on credits, the ledger or prices, forwarded by the gateway. Request/reply, "
            "queue group billing.",
            "AdminRequest",
            ("gateway",),
            ("billing",),
            reply="AdminReply",
            queue=BILLING_QUEUE,
        ),
        Channel(
            "billingPricesChanged",
            s.billing_prices_changed,
            "A model's price was set. Core NATS fan-out (no queue group): every gateway hands back the runs it "
            "admitted ahead at the old prices and admits its next requests afresh; every billing replica reloads "
            "its prices (the replica that stored the price may not be the one that admits or bills next).",
            "PricesChanged",
            ("billing",),
            ("gateway", "billing"),
        ),
    ]


#: Every subject of the system, in the document's order.
CHANNELS: list[Channel] = _channels()


#: Payloads that are plain text, not JSON: a runner's answer to an offered run (``OFFER_TAKEN``, ``OFFER_DECLINED``).
_PLAIN: dict[str, TypeAdapter[Any]] = {
    "RunOfferAnswer": TypeAdapter(Literal[OFFER_TAKEN.decode(), OFFER_DECLINED.decode()])  # type: ignore[valid-type,arg-type]
}


def _payloads() -> dict[str, TypeAdapter[Any]]:
    """Message name → the adapter of its payload (the run-event union included)."""
    out: dict[str, TypeAdapter[Any]] = {"RunEvent": events.RUN_EVENT, **_PLAIN}
    for module in (runs, usage, fleet, billing, catalog):
        for name, obj in vars(module).items():
            if isinstance(obj, type) and issubclass(obj, BaseModel) and obj.__module__ == module.__name__:
                out[name] = TypeAdapter(obj)
    return out


def _schemas(names: set[str]) -> dict[str, Any]:
    adapters = _payloads()
    missing = names - set(adapters)
    assert not missing, f"no wire model for {sorted(missing)}"
    inputs = [(name, "serialization", adapters[name]) for name in sorted(names)]
    top, defs = TypeAdapter.json_schemas(inputs, ref_template="#/components/schemas/{model}")  # type: ignore[arg-type]
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))
    for (name, _mode), schema in top.items():
        if "$ref" not in schema:  # a union (RunEvent): its own entry
            schemas[str(name)] = schema
    return _asyncapi_schema(schemas)


def _asyncapi_schema(node: Any) -> Any:
    """pydantic writes OpenAPI's ``discriminator`` object; an AsyncAPI schema names the property only."""
    if isinstance(node, dict):
        out = {k: _asyncapi_schema(v) for k, v in node.items()}
        if isinstance(out.get("discriminator"), dict):
            out["discriminator"] = out["discriminator"]["propertyName"]
        return out
    if isinstance(node, list):
        return [_asyncapi_schema(v) for v in node]
    return node


_HEADER_SCHEMAS: dict[str, Any] = {
    "TraceHeaders": {
        "type": "object",
        "properties": {TRACEPARENT_HEADER: {"type": "string", "description": "W3C trace context of the sender's span"}},
    },
    "RunnerHeaders": {
        "type": "object",
        "required": [fleet.RUNNER_ID_HEADER],
        "properties": {
            fleet.RUNNER_ID_HEADER: {"type": "string", "description": "the runner's id, readable without the body"}
        },
    },
    "JetStreamHeaders": {
        "type": "object",
        "required": [MSG_ID_HEADER],
        "properties": {
            MSG_ID_HEADER: {"type": "string", "description": "JetStream deduplication id (see x-jetstream.msgId)"},
            TRACEPARENT_HEADER: {"type": "string", "description": "W3C trace context of the sender's span"},
        },
    },
}


def _message(name: str, headers: Headers, payload: str | None = None) -> dict[str, Any]:
    schema = payload or name
    out: dict[str, Any] = {
        "name": name,
        "title": name,
        "contentType": "text/plain" if schema in _PLAIN else "application/json",
        "payload": {"$ref": f"#/components/schemas/{schema}"},
    }
    if headers == "trace":
        out["headers"] = {"$ref": "#/components/schemas/TraceHeaders"}
    elif headers == "jetstream":
        out["headers"] = {"$ref": "#/components/schemas/JetStreamHeaders"}
    elif headers == "runner":
        out["headers"] = {"$ref": "#/components/schemas/RunnerHeaders"}
    return out


def _package_version() -> str:
    try:
        return version("switchboard-contracts")
    except PackageNotFoundError:  # pragma: no cover - the source tree without an install
        return "0.0.0"


def document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of every subject (a JSON-ready dict)."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for ch in CHANNELS:
        described = _message(ch.message, ch.headers, ch.payload)
        message = messages.setdefault(ch.message, described)
        assert message == described, f"{ch.message} travels with two kinds of headers"
        channel: dict[str, Any] = {
            "address": ch.address,
            "description": ch.description,
            "messages": {ch.message: {"$ref": f"#/components/messages/{ch.message}"}},
        }
        if _RUN_ID in ch.address:
            channel["parameters"] = {"run_id": {"description": "the run's id (one subject per run)"}}
        if ch.jetstream:
            channel["x-jetstream"] = ch.jetstream
        channels[ch.key] = channel
        reply: dict[str, Any] | None = None
        if ch.reply is not None:
            messages.setdefault(ch.reply, _message(ch.reply, "none"))
            channels[f"{ch.key}Reply"] = {
                "address": None,
                "description": f"The requester's inbox: the reply subject of a {ch.address} request.",
                "messages": {ch.reply: {"$ref": f"#/components/messages/{ch.reply}"}},
            }
            reply = {
                "channel": {"$ref": f"#/channels/{ch.key}Reply"},
                "messages": [{"$ref": f"#/channels/{ch.key}Reply/messages/{ch.reply}"}],
            }
        for action, services in (("send", ch.senders), ("receive", ch.receivers)):
            for service in services:
                operation: dict[str, Any] = {
                    "action": action,
                    "channel": {"$ref": f"#/channels/{ch.key}"},
                    "messages": [{"$ref": f"#/channels/{ch.key}/messages/{ch.message}"}],
                    "tags": [{"name": service}],
                }
                if reply is not None:
                    operation["reply"] = reply
                if action == "receive" and ch.queue is not None:
                    operation["bindings"] = {"nats": {"queue": ch.queue, "bindingVersion": "0.1.0"}}
                operations[f"{service}.{action}.{ch.key}"] = operation
    payloads = {ch.payload or ch.message for ch in CHANNELS} | {ch.reply for ch in CHANNELS if ch.reply}
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Switchboard",
            "version": _package_version(),
            "description": "Every NATS subject of Switchboard's four services (gateway, runner, billing, "
            "catalog). Subjects are shown without a namespace: SWITCHBOARD_NAMESPACE=ns prefixes every "
            "subject with 'ns.' and every stream with 'ns_'. Generated from libs/contracts by `make "
            "contracts`; do not edit.",
            "tags": [{"name": name, "description": text} for name, text in SERVICES.items()],
        },
        "defaultContentType": "application/json",
        "servers": {
            "nats": {
                "host": "127.0.0.1:4222",
                "protocol": "nats",
                "description": "NATS with JetStream (NATS_URL)",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "schemas": {**_schemas(payloads), **_HEADER_SCHEMAS},
        },
    }


def render(doc: dict[str, Any] | None = None) -> str:
    """The committed text: stable key order, two-space indent, a final newline."""
    return json.dumps(document() if doc is None else doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
