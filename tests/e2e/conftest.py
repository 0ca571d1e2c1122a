"""End-to-end fixtures: the stack as real processes, seeded over the admin API, the openai SDK as client.

Most tests share one session stack (``stack``): real NATS under a fresh namespace, fresh PostgreSQL
databases for catalog and billing, the real Redis, the fake LLM, one runner and the gateway, with short
timeouts, exporting traces to an in-process OTLP receiver. Tests that break the stack on purpose
(killing or stopping the runner) use ``isolated_stack``, a stack of their own.

Each test scripts the fake LLM for a model name of its own (``make_agent`` makes one per call), so
tests never see each other's scripts.
"""

from __future__ import annotations

import contextlib
import secrets
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from devstack.seed import AdminClient
from devstack.stack import Stack
from tests.e2e.fake import FakeLLM
from tests.e2e.otlp import OtlpReceiver
from tests.support.images import Image, build_all
from tests.support.stack import running_stack

#: Credits of the main test user: plenty (1,000,000 credits = 1 USD).
RICH_CREDITS = 1_000_000_000
#: Prices (USD per million tokens) of every model the tests use, so a run has a real, non-zero cost.
TEST_PRICE = {"input": "1.00", "output": "2.00", "cache_write": "1.25", "cache_read": "0.10"}
BILLING_ENV = {
    "BILLING_BALANCE_ENABLED": "true",
    "BILLING_TRANSACTIONS_ENABLED": "true",
    "BILLING_START_BALANCE": "0",
}


@dataclass(frozen=True)
class Seeded:
    """Users and keys of the session stack."""

    user_id: str
    api_key: str
    outsider_id: str
    outsider_key: str
    poor_id: str
    poor_key: str


@dataclass(frozen=True)
class AgentRef:
    id: str
    model: str
    provider: str


@dataclass
class StackHandle:
    """A running stack with the clients a test needs."""

    stack: Stack
    admin: AdminClient
    fake: FakeLLM
    seeded: Seeded

    @property
    def base_url(self) -> str:
        return f"{self.stack.gateway_url}/v1"

    def agent(
        self,
        provider: str = "openai",
        *,
        tools: list[str] | None = None,
        model_parameters: dict[str, Any] | None = None,
        owner_id: str | None = None,
    ) -> AgentRef:
        """A new agent on its own fake model name (so its script is this test's alone)."""
        model = f"e2e-{provider}-{secrets.token_hex(4)}"
        set_price(self.admin, provider, model)
        agent = self.admin.create_agent(
            name=f"agent {model}",
            provider=provider,
            model=model,
            instructions="You are a test agent.",
            tools=tools or [],
            model_parameters=model_parameters or {},
            owner_id=owner_id or self.seeded.user_id,
        )
        return AgentRef(id=agent["id"], model=model, provider=provider)

    def client(self, api_key: str | None = None, **kwargs: Any) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=self.base_url, api_key=api_key or self.seeded.api_key, max_retries=0, timeout=30, **kwargs
        )


def set_price(admin: AdminClient, provider: str, model: str) -> None:
    """Price ``model`` for billing as docs/api.md says: under ``provider/model``, the agent's provider
    connection and its model (so that every billed figure checked also checks that key is used)."""
    admin.request("PUT", f"/pricing/{provider}/{model}", json=TEST_PRICE)


@contextlib.contextmanager
def handle_of(stack: Stack) -> Iterator[StackHandle]:
    """A running stack, seeded (a user with credits, an outsider, a poor user), with its admin client."""
    assert stack.fakellm_url is not None
    with AdminClient(stack.gateway_url, stack.admin_token) as admin:
        yield StackHandle(stack=stack, admin=admin, fake=FakeLLM(stack.fakellm_url), seeded=seed(admin))


def seed(admin: AdminClient) -> Seeded:
    user = admin.create_user(f"e2e-user-{secrets.token_hex(3)}")
    key = admin.create_api_key(user["id"], "e2e")
    admin.add_credits(user["id"], RICH_CREDITS)
    outsider = admin.create_user(f"e2e-outsider-{secrets.token_hex(3)}")
    outsider_key = admin.create_api_key(outsider["id"], "e2e")
    admin.add_credits(outsider["id"], RICH_CREDITS)
    poor = admin.create_user(f"e2e-poor-{secrets.token_hex(3)}")
    poor_key = admin.create_api_key(poor["id"], "e2e")
    return Seeded(
        user_id=user["id"],
        api_key=key["key"],
        outsider_id=outsider["id"],
        outsider_key=outsider_key["key"],
        poor_id=poor["id"],
        poor_key=poor_key["key"],
    )


@pytest.fixture(scope="session")
def built_images() -> Iterator[dict[str, Image]]:
    """Every service's environment built once, as its Dockerfile builds it (its own pinned requirements,
    no development packages): the image test and the chart test both run what they hold."""
    with tempfile.TemporaryDirectory(prefix="switchboard-images-") as tmp:
        yield build_all(Path(tmp))


@pytest.fixture(scope="session")
def otlp_receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver().start()
    yield receiver
    receiver.stop()


@contextlib.contextmanager
def own_stack(
    run_dir: Path,
    nats_url: str,
    postgres_url: str,
    redis_url: str,
    *,
    service_env: dict[str, dict[str, str]] | None = None,
    **options: Any,
) -> Iterator[StackHandle]:
    """A stack of a test's own on the machine's servers, seeded (:func:`handle_of`): billing with the test
    price list, ``service_env`` added per service, ``options`` as :func:`running_stack` takes them."""
    services: dict[str, dict[str, str]] = {"billing": dict(BILLING_ENV)}
    for name, extra in (service_env or {}).items():
        services[name] = {**services.get(name, {}), **extra}
    with (
        running_stack(
            run_dir,
            nats_url=nats_url,
            postgres_url=postgres_url,
            redis_url=redis_url,
            service_env=services,
            **options,
        ) as stack,
        handle_of(stack) as handle,
    ):
        yield handle


@pytest.fixture(scope="session")
def e2e(
    tmp_path_factory: pytest.TempPathFactory,
    nats_url: str,
    postgres_url: str,
    redis_url: str,
    otlp_receiver: OtlpReceiver,
) -> Iterator[StackHandle]:
    """The shared stack, seeded."""
    run_dir = tmp_path_factory.mktemp("stack")
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint}
    with own_stack(run_dir, nats_url, postgres_url, redis_url, env=env) as handle:
        yield handle


@pytest.fixture
def isolated_stack(tmp_path: Path, nats_url: str, postgres_url: str, redis_url: str) -> Iterator[StackHandle]:
    """A stack of this test's own, for tests that kill or stop its processes."""
    with own_stack(tmp_path / "stack", nats_url, postgres_url, redis_url) as handle:
        yield handle


@pytest.fixture
async def client(e2e: StackHandle) -> AsyncIterator[openai.AsyncOpenAI]:
    """The official SDK, pointed at the shared stack's gateway with the main user's key."""
    async with e2e.client() as c:
        yield c


@pytest.fixture
async def http(e2e: StackHandle) -> AsyncIterator[httpx.AsyncClient]:
    """Raw HTTP to the shared gateway with the main user's key (for bodies the SDK would not send)."""
    async with httpx.AsyncClient(
        base_url=e2e.stack.gateway_url, headers={"Authorization": f"Bearer {e2e.seeded.api_key}"}, timeout=30
    ) as c:
        yield c


@pytest.fixture(params=["openai", "anthropic"])
def provider(request: pytest.FixtureRequest) -> str:
    """Both provider connections: the fake's OpenAI API and its Anthropic API."""
    return str(request.param)


@pytest.fixture
def make_agent(e2e: StackHandle) -> Callable[..., AgentRef]:
    return e2e.agent
