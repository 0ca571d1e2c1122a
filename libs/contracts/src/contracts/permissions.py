"""What each service may publish and subscribe on NATS: the one list of least privilege.

Every subject comes from :class:`contracts.subjects.Subjects`, so a namespace prefixes them as it does
the traffic. Per service, as the code uses them:

- core subjects it publishes (events, requests, replies' fan-outs) and subscribes (requests it serves,
  events it reads);
- its own inbox prefix both ways (:func:`inbox_prefix`, ``_INBOX_<ns>_<service>``, which the
  service uses when it connects as its user): replies to its requests and JetStream's answers arrive
  there, and the health check's round trip is a request to a fresh inbox of its own. No service reads
  another's replies; a service that answers requests (billing, the catalog) may publish once to each
  request's reply subject (``allow_responses``), and nowhere else in anyone's inbox;
- the JetStream API only for the streams it uses, and only the operations it makes: creating or
  updating and reading the configuration of the shared streams (every service that uses them ensures
  them at start), consuming from its own consumers, acknowledging its own messages. Deleting or
  purging RUNS, USAGE or RUN_EVENTS is denied to every service;
- the gateway's own key-value bucket and object stores (idempotency, stored responses) wholly, and
  nobody else's.

So the runner cannot top up credits or change an account (``billing.admin…``, ``catalog.admin…``),
the gateway cannot record usage (only close a run that never started; it publishes a run's events
only to end a run whose runner was lost), billing cannot queue a run,
and the catalog touches no stream at all.

The Helm chart renders the NATS server's ``authorization`` block from ``deploy/helm/switchboard/files/
nats-permissions.yaml``, which ``python -m contracts.permissions`` writes from this module (a unit test
checks that the file and the chart's rendered lists equal it).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from .subjects import Subjects

#: The services that connect to NATS (the migrations and the fake LLM do not).
SERVICES = ("gateway", "runner", "billing", "catalog")


def inbox_prefix(s: Subjects, service: str) -> str:
    """Where ``service``'s replies arrive when it connects as its own NATS user (``_INBOX_<ns>_<service>``
    instead of the shared ``_INBOX``): no other service may read them."""
    return f"_INBOX_{s.namespace}_{service}" if s.namespace else f"_INBOX_{service}"


@dataclass(frozen=True)
class Permissions:
    """One NATS user's allow and deny lists (a deny wins over an allow)."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    publish_deny: tuple[str, ...] = field(default=())
    subscribe_deny: tuple[str, ...] = field(default=())
    #: May answer the requests it receives (publish once to each one's reply subject, whatever it is).
    allow_responses: bool = False

    def as_config(self) -> dict[str, Any]:
        """The ``permissions`` map of a user in the NATS server configuration."""
        publish: dict[str, list[str]] = {"allow": list(self.publish)}
        if self.publish_deny:
            publish["deny"] = list(self.publish_deny)
        subscribe: dict[str, list[str]] = {"allow": list(self.subscribe)}
        if self.subscribe_deny:
            subscribe["deny"] = list(self.subscribe_deny)
        config: dict[str, Any] = {"publish": publish, "subscribe": subscribe}
        if self.allow_responses:
            config["allow_responses"] = True
        return config


def _ensure(stream: str) -> list[str]:
    """Create or update a stream and read its configuration (``ensure_streams``, ``stream_info``)."""
    return [f"$JS.API.STREAM.{op}.{stream}" for op in ("INFO", "CREATE", "UPDATE")]


def _consume(stream: str) -> list[str]:
    """Consumers of a stream (durable or ephemeral, push or pull), their batches, acks and flow control."""
    return [
        f"$JS.API.CONSUMER.CREATE.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}.>",
        f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.>",
        f"$JS.API.CONSUMER.INFO.{stream}.>",
        f"$JS.API.CONSUMER.DELETE.{stream}.>",
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.>",
        f"$JS.ACK.{stream}.>",
        f"$JS.FC.{stream}.>",
    ]


def _own_store(stream: str, subjects: str) -> list[str]:
    """A key-value bucket or object store the service alone owns: every API operation on its stream
    (an object's deletion purges its chunks), and its data subjects."""
    return [
        f"$JS.API.STREAM.*.{stream}",
        f"$JS.API.STREAM.MSG.*.{stream}",
        f"$JS.API.DIRECT.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}.>",
        *_consume(stream),
        subjects,
    ]


def _kv(bucket: str) -> list[str]:
    return _own_store(f"KV_{bucket}", f"$KV.{bucket}.>")


def _objects(bucket: str) -> list[str]:
    return _own_store(f"OBJ_{bucket}", f"$O.{bucket}.>")


def _no_destruction(s: Subjects) -> list[str]:
    """Nobody deletes or purges the shared streams, nor deletes messages from them."""
    return [
        f"$JS.API.{op}.{stream}"
        for stream in (s.runs_stream, s.usage_stream, s.run_events_stream)
        for op in ("STREAM.DELETE", "STREAM.PURGE", "STREAM.MSG.DELETE")
    ]


def _shared_streams(s: Subjects) -> list[str]:
    streams = (s.run_events_stream, s.runs_stream, s.usage_stream)
    return ["$JS.API.INFO", *(subject for stream in streams for subject in _ensure(stream))]


def permissions(s: Subjects) -> dict[str, Permissions]:
    """Each service's NATS permissions under the namespace of ``s``."""
    deny = tuple(_no_destruction(s))

    def inbox(service: str) -> str:
        return f"{inbox_prefix(s, service)}.>"

    return {
        "gateway": Permissions(
            publish=(
                s.run_request,
                s.run_offer,
                s.run_cancel_all,
                s.catalog_verify_key,
                s.catalog_agent_access,
                s.catalog_models_list,
                s.catalog_admin,
                s.billing_admit,
                s.billing_prefetch,
                s.billing_balance,
                s.billing_admin,
                # A run admitted ahead of time that never started is closed (no usage in it).
                s.usage_run_closed,
                s.gateway_heartbeat,
                inbox("gateway"),
                *_shared_streams(s),
                # Reading an object finds its stream by subject (names only).
                "$JS.API.STREAM.NAMES",
                *_consume(s.run_events_stream),
                # A run whose runner was lost: its failure stored as its last event (after the last
                # one stored), where a retry of its Idempotency-Key reads it.
                s.run_events_all,
                f"$JS.API.STREAM.MSG.GET.{s.run_events_stream}",
                # The RUNS queue's backlog, read for /metrics (gateway_runs_queue_pending_messages).
                f"$JS.API.CONSUMER.INFO.{s.runs_stream}.{s.runs_consumer}",
                *_objects(s.responses_bucket),
                *_kv(s.idempotency_bucket),
                *_objects(s.idempotency_results_bucket),
            ),
            subscribe=(
                s.run_events_all,
                s.catalog_invalidated,
                # A price was set: the runs it admitted ahead at the old prices go back.
                s.billing_prices_changed,
                s.runner_heartbeat,
                inbox("gateway"),
            ),
            publish_deny=deny,
        ),
        "runner": Permissions(
            publish=(
                s.run_events_all,
                s.usage_recorded,
                s.usage_run_closed,
                s.runner_heartbeat,
                s.billing_extend,
                inbox("runner"),
                *_shared_streams(s),
                *_consume(s.runs_stream),
            ),
            subscribe=(s.run_offer, s.run_cancel_all, s.run_admitted_all, s.gateway_heartbeat, inbox("runner")),
            publish_deny=deny,
            # Its answer to a run offered to it (taken or declined), once, to the gateway's inbox.
            allow_responses=True,
        ),
        "billing": Permissions(
            publish=(
                s.run_admitted_all,
                # A lost runner's runs are billed and closed by billing on its behalf.
                s.usage_recorded,
                s.usage_run_closed,
                # Its start-up probe: a request to its own admin subject until it answers.
                s.billing_admin,
                # A price was set: gateways drop their runs ahead, billing replicas reload prices.
                s.billing_prices_changed,
                inbox("billing"),
                *_shared_streams(s),
                *_consume(s.usage_stream),
            ),
            subscribe=(
                s.billing_admit,
                s.billing_prefetch,
                s.billing_extend,
                s.billing_balance,
                s.billing_admin,
                s.billing_prices_changed,
                s.runner_heartbeat,
                inbox("billing"),
            ),
            publish_deny=deny,
            allow_responses=True,
        ),
        "catalog": Permissions(
            # Its start-up probe: a request to its own admin subject until it answers.
            publish=(s.catalog_invalidated, s.catalog_admin, inbox("catalog")),
            subscribe=(
                s.catalog_verify_key,
                s.catalog_agent_access,
                s.catalog_models_list,
                s.catalog_admin,
                s.catalog_invalidated,
                s.runner_heartbeat,
                inbox("catalog"),
            ),
            allow_responses=True,
        ),
    }


#: The namespace placeholder of the chart's copy (a valid namespace, replaced at render time).
PLACEHOLDER = "NAMESPACE"


def chart_file() -> str:
    """The chart's ``files/nats-permissions.yaml``: every service's lists with the namespace left as
    ``NAMESPACE`` (subjects ``NAMESPACE.…``, streams and buckets ``NAMESPACE_…``), which the chart
    replaces with ``nats.namespace`` (or removes, with its separator, when there is none)."""
    import json

    lines = [
        "# Written by `python -m contracts.permissions` from libs/contracts/src/contracts/permissions.py:",
        "# edit that module, then run it again. The chart replaces NAMESPACE with nats.namespace.",
    ]
    for service, perms in permissions(Subjects(PLACEHOLDER)).items():
        lines.append(f"{service}:")
        for key, values in perms.as_config().items():
            if not isinstance(values, dict):
                lines.append(f"  {key}: {json.dumps(values)}")
                continue
            lines.append(f"  {key}:")
            for kind, subjects in values.items():
                lines.append(f"    {kind}:")
                lines.extend(f"      - {json.dumps(subject)}" for subject in subjects)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(chart_file())
