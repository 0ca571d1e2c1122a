"""The whole stack with each service as its own NATS user, on a server enforcing the chart's permissions.

The chart's ``auth.conf`` (rendered by Helm's library, for this stack's namespace) is included by a
``nats-server`` of the test's own, as an operator's NATS would include it; each service gets its chart
user and password (``NATS_USER`` / ``NATS_PASSWORD``, as the chart's pods do). One more user with no
restriction is added for the test's own tooling (the stack's namespace cleanup), never given to a service.

Then the paths the chart run does not take: a streamed chat, a keyed chat and its replay, a stored
response continued by ``previous_response_id`` and deleted, a background response cancelled mid-run
(the gateway's cancel, the runner's abort, billing's usage), a background stream resumed from a
sequence number, the models list and the admin API's balance and credits. Every one must succeed, every
service must be connected as its own user, and the server must have refused nothing at all.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from contracts.permissions import SERVICES
from devstack.embedded import nats_server_binary
from devstack.procs import ManagedProcess, free_port, tcp_accepts
from tests.e2e.conftest import BILLING_ENV, StackHandle, handle_of
from tests.e2e.fake import eventually
from tests.e2e.test_chart_runs import RELEASE, nats_users, of_kind, render
from tests.support.stack import running_stack

pytestmark = pytest.mark.e2e

NAMESPACE = f"users{secrets.token_hex(4)}"
TOOLING = ("tooling", secrets.token_hex(16))
LONG_TEXT = " ".join(f"word{i}" for i in range(400))


class NatsServer:
    """A nats-server including the chart's users (plus the tooling user); its log says what it refused."""

    def __init__(self, where: Path) -> None:
        values = {
            "secrets": {"adminToken": "t" * 32},
            "postgresql": {"url": "postgresql://u:pw-in-test@pg:5432/sb"},
            "nats": {"namespace": NAMESPACE, "streamReplicas": 1},
        }
        docs = render(values)
        found = of_kind(docs, "Secret")
        conf = base64.b64decode(found[f"{RELEASE}-nats-auth"]["data"]["auth.conf"]).decode()
        self.passwords = {k: base64.b64decode(v).decode() for k, v in found[f"{RELEASE}-nats-users"]["data"].items()}
        assert "users = [\n" in conf
        user, password = TOOLING
        conf = conf.replace(
            "users = [\n", f"users = [\n    {{user: {json.dumps(user)}, password: {json.dumps(password)}}}\n", 1
        )
        where.mkdir(parents=True, exist_ok=True)
        (where / "auth.conf").write_text(conf)
        self.port, self.monitor_port = free_port(), free_port()
        (where / "nats.conf").write_text(
            f"listen: 127.0.0.1:{self.port}\nhttp: 127.0.0.1:{self.monitor_port}\n"
            f"jetstream {{ store_dir: {json.dumps(str(where / 'store'))} }}\ninclude ./auth.conf\n"
        )
        self.log = where / "nats.log"
        self.process = ManagedProcess("nats", [nats_server_binary(), "-c", str(where / "nats.conf")], log_path=self.log)

    def start(self) -> None:
        self.process.start()
        self.process.wait_until(lambda: tcp_accepts("127.0.0.1", self.port), 15.0, "accepting connections")

    def violations(self) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if "Violation" in line]

    def service_env(self) -> dict[str, dict[str, str]]:
        """Each service's NATS user, as the chart's pods get it."""
        return {name: {"NATS_USER": f"{RELEASE}-{name}", "NATS_PASSWORD": self.passwords[name]} for name in SERVICES}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    nats = NatsServer(tmp_path_factory.mktemp("nats-users"))
    nats.start()
    try:
        yield nats
    finally:
        nats.process.stop()


@pytest.fixture(scope="module")
def handle(
    tmp_path_factory: pytest.TempPathFactory, server: NatsServer, postgres_url: str, redis_url: str
) -> Iterator[StackHandle]:
    user, password = TOOLING
    service_env = server.service_env()
    service_env["billing"].update(BILLING_ENV)
    with (
        running_stack(
            tmp_path_factory.mktemp("stack"),
            # The tooling user is in the URL (the stack's cleanup uses it); each service's NATS_USER wins over it.
            nats_url=f"nats://{user}:{password}@127.0.0.1:{server.port}",
            postgres_url=postgres_url,
            redis_url=redis_url,
            env={"SWITCHBOARD_NAMESPACE": NAMESPACE},
            service_env=service_env,
        ) as stack,
        handle_of(stack) as handle,
    ):
        yield handle


async def test_every_path_works_with_each_service_as_its_own_user(handle: StackHandle, server: NatsServer) -> None:
    client = openai.AsyncOpenAI(base_url=handle.base_url, api_key=handle.seeded.api_key, max_retries=0, timeout=30)
    try:
        agent = handle.agent()
        # A streamed chat.
        stream = await client.chat.completions.create(
            model=agent.id, messages=[{"role": "user", "content": "Hello"}], stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text.strip()

        # A keyed chat and its replay (the idempotency bucket and its results' object store).
        key = {"Idempotency-Key": f"users-{secrets.token_hex(8)}"}
        first = await client.chat.completions.create(
            model=agent.id, messages=[{"role": "user", "content": "Once"}], extra_headers=key
        )
        again = await client.chat.completions.create(
            model=agent.id, messages=[{"role": "user", "content": "Once"}], extra_headers=key
        )
        assert again.id == first.id

        # A stored response, continued, read back and deleted (the responses object store).
        one = await client.responses.create(model=agent.id, input="My name is Ada.")
        two = await client.responses.create(model=agent.id, input="And?", previous_response_id=one.id)
        assert (await client.responses.retrieve(two.id)).id == two.id
        await client.responses.delete(one.id)
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(one.id)

        # A background response cancelled mid-run: the gateway's cancel, the runner's abort, usage billed.
        slow = handle.agent()
        await handle.fake.script(slow.model, [{"text": LONG_TEXT, "tokens_per_s": 40}])
        created = await client.responses.create(model=slow.id, input="Talk", background=True)
        await eventually(
            lambda: client.responses.retrieve(created.id),
            lambda r: r.status == "in_progress" and bool(r.output_text),
            timeout=20,
        )
        assert (await client.responses.cancel(created.id)).status == "cancelled"

        # A background stream read again from a sequence number (the run's events, from RUN_EVENTS).
        short = handle.agent()
        await handle.fake.script(short.model, [{"text": "one two three four five", "tokens_per_s": 50}])
        background = await client.responses.create(model=short.id, input="Go", background=True)
        await eventually(
            lambda: client.responses.retrieve(background.id), lambda r: r.status == "completed", timeout=20
        )
        resumed = await client.responses.retrieve(background.id, stream=True, starting_after=2)
        kinds = [event.type async for event in resumed]
        assert kinds and kinds[-1] == "response.completed"

        # The models list (the catalog), the admin API's balance and credits (billing).
        assert [m async for m in client.models.list()]
        before = handle.admin.balance(handle.seeded.user_id)
        handle.admin.add_credits(handle.seeded.user_id, 1000)
        assert handle.admin.balance(handle.seeded.user_id) != before
    finally:
        await client.close()

    users = {name.partition("-")[0]: user for name, user in nats_users(server.monitor_port).items() if name}
    for service in SERVICES:
        assert users.get(service) == f"{RELEASE}-{service}", users
    assert server.violations() == []
