"""Property-based fuzzing of the gateway over its own OpenAPI document (``/openapi.json``) with schemathesis.

A stack of its own (the admin routes create and change things), a valid API key (the admin token on the
admin routes), and ids that exist in most examples: an agent as ``model``, stored responses as
``response_id``, a user, an agent and a group on the admin routes; some examples also get a valid
conversation, so the other generated fields reach the agent loop. Every answer is checked: no 5xx, every
error in the OpenAI envelope (:func:`openai_error_envelope`), and the status codes, content types and
bodies the document promises; each operation is also called without credentials (``ignored_auth``).

Bounded for CI: ``SWITCHBOARD_FUZZ_EXAMPLES`` examples per operation (default 10), derandomized with a
fixed seed (the same cases on every run), no shrinking, and a wall-clock budget for the calls
(``SWITCHBOARD_FUZZ_BUDGET_S``, default 30 s) after which each remaining operation makes one call. The
OpenAI routes go first. Longer locally, with schemathesis's coverage phase (boundary values, unexpected
methods) too — docs/testing.md::

    SWITCHBOARD_FUZZ_EXAMPLES=200 SWITCHBOARD_FUZZ_BUDGET_S=1800 SWITCHBOARD_FUZZ_COVERAGE=1 \\
        .venv/bin/pytest tests/e2e/test_fuzz.py -s
"""

from __future__ import annotations

import os
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import CheckContext
from schemathesis.config import SchemathesisConfig
from schemathesis.core.transport import Response
from schemathesis.generation.case import Case
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from devstack.seed import AdminClient
from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.e2e.conftest import BILLING_ENV, StackHandle, seed
from tests.e2e.fake import FakeLLM
from tests.support.stack import running_stack

pytestmark = pytest.mark.e2e

EXAMPLES = int(os.environ.get("SWITCHBOARD_FUZZ_EXAMPLES", "10"))
BUDGET_S = float(os.environ.get("SWITCHBOARD_FUZZ_BUDGET_S", "30"))
#: schemathesis's coverage phase (boundary values of every field, unexpected methods): for longer runs.
COVERAGE = os.environ.get("SWITCHBOARD_FUZZ_COVERAGE", "0") == "1"
#: A fixed seed: CI generates the same cases on every run, so a failure is reproduced by running it again.
SEED = int(os.environ.get("SWITCHBOARD_FUZZ_SEED", "20261203"))


@schemathesis.check
def openai_error_envelope(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """Every error answer is ``{"error": {"message": str, "type": str, "param": str|null, "code": str|null}}``."""
    if response.status_code < 400:
        return None
    try:
        body = response.json()
    except ValueError as exc:
        raise AssertionError(f"a {response.status_code} whose body is not JSON: {response.text[:200]!r}") from exc
    assert isinstance(body, dict) and set(body) == {"error"}, f"not the OpenAI envelope: {body!r}"
    error = body["error"]
    assert isinstance(error, dict), f"'error' is not an object: {body!r}"
    assert {"message", "type", "param", "code"} <= set(error), f"the error lacks a field: {error!r}"
    assert isinstance(error["message"], str) and error["message"], f"no message: {error!r}"
    assert isinstance(error["type"], str) and error["type"], f"no type: {error!r}"
    assert error["param"] is None or isinstance(error["param"], str), f"param: {error!r}"
    assert error["code"] is None or isinstance(error["code"], str), f"code: {error!r}"
    return True


CHECKS = [
    schemathesis.checks.not_a_server_error,
    openai_error_envelope,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    ignored_auth,
]


@dataclass
class Target:
    """What the examples aim at: the stack, ids that exist, and what was sent and answered so far."""

    stack: StackHandle
    #: path parameter or body field -> an id that exists (stored responses: one to read, one to delete, one to
    #: cancel; admin ids: a user and an agent of their own, so the session's user and key are never touched)
    ids: dict[str, str]
    started: float = field(default_factory=time.monotonic)
    calls: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    samples: dict[str, list[str]] = field(default_factory=dict)

    def over_budget(self) -> bool:
        return time.monotonic() - self.started > BUDGET_S


def _make_ids(handle: StackHandle) -> dict[str, str]:
    agent_id = handle.agent("openai").id
    ids = {"agent": agent_id}
    with httpx.Client(
        base_url=handle.base_url, headers={"Authorization": f"Bearer {handle.seeded.api_key}"}, timeout=30
    ) as http:
        for name, extra in (("response", {}), ("doomed_response", {}), ("background_response", {"background": True})):
            r = http.post("/responses", json={"model": agent_id, "input": "Hello", **extra})
            assert r.status_code == 200, r.text
            ids[name] = r.json()["id"]
    victim = handle.admin.create_user(f"fuzz-{secrets.token_hex(3)}")
    ids["admin_user"] = victim["id"]
    ids["admin_agent"] = handle.agent("openai", owner_id=victim["id"]).id
    ids["admin_group"] = handle.admin.request("POST", "/groups", json={"name": f"fuzz-{secrets.token_hex(3)}"})["id"]
    return ids


@pytest.fixture(scope="module")
def target(
    tmp_path_factory: pytest.TempPathFactory, nats_url: str, postgres_url: str, redis_url: str
) -> Iterator[Target]:
    """A stack of this module's own (the admin routes change it), with ids to aim at; the served document is
    the one fuzzed."""
    with running_stack(
        tmp_path_factory.mktemp("fuzz"),
        nats_url=nats_url,
        postgres_url=postgres_url,
        redis_url=redis_url,
        # A long run makes thousands of calls with one key: no rate limit, so they all go deep.
        service_env={"billing": BILLING_ENV, "gateway": {"GATEWAY_DEFAULT_RATE_LIMIT_PER_MINUTE": "100000000"}},
    ) as stack:
        assert stack.fakellm_url is not None
        served = httpx.get(f"{stack.gateway_url}/openapi.json", timeout=30)
        assert served.status_code == 200, served.text
        assert served.json() == DOCUMENT, "the gateway serves another document than the one fuzzed"
        with AdminClient(stack.gateway_url, stack.admin_token) as admin:
            handle = StackHandle(stack=stack, admin=admin, fake=FakeLLM(stack.fakellm_url), seeded=seed(admin))
            found = Target(handle, _make_ids(handle))
            yield found
            elapsed = time.monotonic() - found.started
            print(f"\nfuzz: {sum(found.calls.values())} calls in {elapsed:.0f} s")
            for key, count in sorted(found.statuses.items()):
                print(f"  {key}: {count}")
                if os.environ.get("SWITCHBOARD_FUZZ_VERBOSE"):
                    for sample in found.samples.get(key, []):
                        print(f"      {sample}")


#: The gateway's OpenAPI document, built as the gateway builds it (the fixture checks it is the one it serves):
#: the operations are known when tests are collected. The operational routes (health, metrics) are left out.
DOCUMENT = create_app(GatewaySettings()).openapi()
CONFIG = SchemathesisConfig.from_dict(
    {
        "seed": SEED,
        "request-timeout": 30,
        "max-stream-events": 200,
        "generation": {
            "allow-x00": False,
            "with-security-parameters": False,
            "deterministic": True,
            "no-shrink": True,
            "max-examples": EXAMPLES,
            "database": "none",
        },
        "phases": {"coverage": {"enabled": COVERAGE}, "stateful": {"enabled": False}},
    }
)
#: The OpenAI routes first: when the budget runs out, the operations left make one call each.
FIRST = ("/v1/chat/completions", "/v1/responses")
ORDERED = {
    **DOCUMENT,
    "paths": dict(sorted(DOCUMENT["paths"].items(), key=lambda i: (i[0] not in FIRST, i[0].startswith("/admin")))),
}
schema = schemathesis.openapi.from_dict(ORDERED, config=CONFIG).include(path_regex=r"^/(v1|admin/v1)/")


#: What a valid conversation looks like, put in place of the generated one in some examples so that the other
#: generated fields (options, tools, stream, formats) reach the agent loop.
HELLO_MESSAGES = [{"role": "user", "content": "Hello"}]


def _aim(case: Case, target: Target, n: int) -> None:
    """Point most examples at things that exist (every fourth keeps what was generated)."""
    if n % 4 == 3:
        return
    ids = target.ids
    body: dict[str, Any] = case.body if isinstance(case.body, dict) else {}
    if isinstance(body.get("model"), str):
        body["model"] = ids["agent"]
    if n % 4 == 0 and "messages" in body:
        body["messages"] = [dict(m) for m in HELLO_MESSAGES]
    if n % 4 == 0 and "input" in body and case.path == "/v1/responses":
        body["input"] = "Hello"
    if isinstance(body.get("owner_id"), str):
        body["owner_id"] = ids["admin_user"]
    params = case.path_parameters if case.path_parameters is not None else {}
    if "response_id" in params:
        params["response_id"] = ids[
            "doomed_response"
            if case.method == "DELETE"
            else "background_response"
            if case.path.endswith("/cancel")
            else "response"
        ]
    if "model" in params:
        params["model"] = ids["agent"]
    if case.path.startswith("/admin/") and case.method != "DELETE":
        for name, key in (("user_id", "admin_user"), ("agent_id", "admin_agent"), ("group_id", "admin_group")):
            if name in params:
                params[name] = ids[key]


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_gateway_survives_fuzzing(case: Case, target: Target) -> None:
    label = f"{case.method} {case.path}"
    if target.over_budget() and target.calls[label] > 0:
        return
    _aim(case, target, target.calls[label])
    target.calls[label] += 1
    secret = target.stack.stack.admin_token if case.path.startswith("/admin/") else target.stack.seeded.api_key
    response = case.call_and_validate(
        base_url=target.stack.stack.gateway_url,
        headers={"Authorization": f"Bearer {secret}"},
        checks=CHECKS,
        timeout=30,
    )
    key = f"{label} {response.status_code}"
    target.statuses[key] += 1
    if response.status_code >= 400:
        target.samples.setdefault(key, []).append(response.text[:300])
