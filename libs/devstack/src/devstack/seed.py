"""Seeding a stack over its admin API: a demo user, a fresh API key, a demo agent.

:class:`AdminClient` is a small synchronous client of ``/admin/v1`` (the e2e tests use it as well);
:func:`seed_demo` is what ``make run`` calls. Seeding is idempotent for the user and the agent (found
by name, else created). A key is shown only once, so the caller keeps it (``make run`` in
``.run/env``) and passes it back: it is reused while it still works for the demo agent, and a new one
is made only when it does not.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx

from .errors import SeedError

DEMO_USER = "demo"
DEMO_AGENT = "Demo assistant"
DEMO_TOOLS = ["calculator", "current_time"]
DEMO_INSTRUCTIONS = "You are a helpful assistant."
#: The fake LLM answers any model name; this one reads well in examples.
FAKE_DEMO_MODEL = "fake-demo"


class AdminClient:
    """``/admin/v1`` of one gateway, authenticated with the admin token."""

    def __init__(self, gateway_url: str, admin_token: str, timeout: float = 10.0) -> None:
        self._http = httpx.Client(
            base_url=f"{gateway_url.rstrip('/')}/admin/v1",
            headers={"Authorization": f"Bearer {admin_token}"},
            timeout=timeout,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One admin call; an answer of 300 or more raises :class:`SeedError` with the body."""
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 300:
            raise SeedError(f"{method} /admin/v1{path} → {response.status_code}: {response.text}")
        return response.json() if response.content else None

    def iterate(self, path: str, **params: str) -> Iterator[dict[str, Any]]:
        """Every item of a paginated list."""
        after: str | None = None
        while True:
            query = {"limit": "100", **params}
            if after:
                query["after"] = after
            page = self.request("GET", path, params=query)
            yield from page["data"]
            if not page.get("has_more") or not page["data"]:
                return
            after = page.get("last_id") or page["data"][-1]["id"]

    # --- resources ------------------------------------------------------------------------------
    def create_user(self, name: str, **fields: Any) -> dict[str, Any]:
        return self.request("POST", "/users", json={"name": name, **fields})  # type: ignore[no-any-return]

    def find_user(self, name: str) -> dict[str, Any] | None:
        return next((u for u in self.iterate("/users") if u.get("name") == name), None)

    def ensure_user(self, name: str) -> dict[str, Any]:
        return self.find_user(name) or self.create_user(name)

    def create_api_key(self, user_id: str, name: str, **fields: Any) -> dict[str, Any]:
        """The answer holds the plaintext ``key`` (the only time it is shown)."""
        return self.request("POST", f"/users/{user_id}/api-keys", json={"name": name, **fields})  # type: ignore[no-any-return]

    def create_agent(self, **fields: Any) -> dict[str, Any]:
        return self.request("POST", "/agents", json=fields)  # type: ignore[no-any-return]

    def find_agent(self, name: str, owner_id: str) -> dict[str, Any] | None:
        return next(
            (a for a in self.iterate("/agents") if a.get("name") == name and a.get("owner_id") == owner_id), None
        )

    def grant(self, agent_id: str, **fields: Any) -> dict[str, Any]:
        return self.request("POST", f"/agents/{agent_id}/grants", json=fields)  # type: ignore[no-any-return]

    def add_credits(self, user_id: str, amount: int | str | Decimal) -> Any:
        value = amount if isinstance(amount, int) else str(amount)
        return self.request("POST", f"/users/{user_id}/credits", json={"amount": value})

    def balance(self, user_id: str) -> dict[str, Any]:
        return self.request("GET", f"/users/{user_id}/balance")  # type: ignore[no-any-return]

    def ledger(self, user_id: str, run_id: str | None = None) -> list[dict[str, Any]]:
        params = {"run_id": run_id} if run_id else {}
        return list(self.iterate(f"/users/{user_id}/ledger", **params))


@dataclass(frozen=True)
class DemoSeed:
    """What ``make run`` prints: who to call as, and which agent."""

    user_id: str
    api_key: str
    agent_id: str
    model: str
    key_reused: bool = False
    """``api_key`` is the one passed in (it still works), not a new one."""


def key_works(gateway_url: str, api_key: str, agent_id: str) -> bool:
    """Whether ``api_key`` authenticates at the gateway and may use ``agent_id`` (``GET /v1/models``)."""
    try:
        response = httpx.get(
            f"{gateway_url.rstrip('/')}/v1/models", headers={"Authorization": f"Bearer {api_key}"}, timeout=10.0
        )
    except httpx.HTTPError:
        return False
    if response.status_code != 200:
        return False
    return any(m.get("id") == agent_id for m in response.json().get("data", []))


def seed_demo(
    gateway_url: str,
    admin_token: str,
    model: str = FAKE_DEMO_MODEL,
    provider: str = "openai",
    api_key: str | None = None,
) -> DemoSeed:
    """Ensure the demo user and agent exist; reuse ``api_key`` when it still works for the agent, else make one."""
    with AdminClient(gateway_url, admin_token) as admin:
        user = admin.ensure_user(DEMO_USER)
        agent = admin.find_agent(DEMO_AGENT, user["id"])
        if agent is not None and (agent.get("model") != model or agent.get("provider") != provider):
            # The same demo agent, pointed at the model this run uses (fake LLM or a real provider).
            agent = admin.request("PATCH", f"/agents/{agent['id']}", json={"provider": provider, "model": model})
        if agent is None:
            agent = admin.create_agent(
                name=DEMO_AGENT,
                description="The demo agent of make run",
                provider=provider,
                model=model,
                instructions=DEMO_INSTRUCTIONS,
                tools=DEMO_TOOLS,
                owner_id=user["id"],
            )
        if api_key and key_works(gateway_url, api_key, agent["id"]):
            return DemoSeed(user_id=user["id"], api_key=api_key, agent_id=agent["id"], model=model, key_reused=True)
        key = admin.create_api_key(user["id"], "make run")
    return DemoSeed(user_id=user["id"], api_key=key["key"], agent_id=agent["id"], model=model)
