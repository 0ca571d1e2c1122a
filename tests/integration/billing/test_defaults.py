"""The defaults admit a new user's ordinary first request.

A user created through the admin API starts with ``BILLING_START_BALANCE`` credits, balances enforced.
Their first request is reserved at its worst case: the gateway's prompt bound and, without
``max_tokens``, the gateway's default output limit, priced at the model's price or, for a model
without one (a local model behind an OpenAI-compatible server), the default price. The start balance
must cover that, or the first thing a new user sees is a 402.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from billing.app import BillingApp
from billing.settings import BillingSettings
from contracts import AdmitReply, AdmitRequest, ChatMessage, Subjects
from contracts.estimate import prompt_tokens_bound
from gateway.settings import GatewaySettings

pytestmark = pytest.mark.integration

#: An ordinary first request: a few paragraphs from the user, an agent with instructions and two tools.
ORDINARY = [ChatMessage(role="user", content="Please summarise this for me. " * 70)]  # ≈ 2,100 characters
INSTRUCTIONS = "You are a helpful assistant. " * 17  # ≈ 500 characters


@pytest.mark.parametrize("model", ["llama-3.1-8b-local", "gpt-4o"], ids=["unpriced", "priced"])
async def test_a_new_users_first_ordinary_request_is_admitted_on_defaults(
    billing_settings: Callable[..., BillingSettings], nats_client, namespace: str, model: str
) -> None:
    defaults = BillingSettings.model_fields
    settings = billing_settings(
        start_balance=defaults["start_balance"].default, balance_enabled=defaults["balance_enabled"].default
    )
    assert settings.balance_enabled  # balances are enforced by default: the product bills
    prompt = prompt_tokens_bound(ORDINARY, model=model, instructions=INSTRUCTIONS, tools=2)
    request = AdmitRequest(
        run_id="first",
        user_id="brand-new-user",
        agent_id="a",
        provider="openai",
        model=model,
        prompt_tokens=prompt,
        max_output_tokens=GatewaySettings.model_fields["default_max_output_tokens"].default,
    )
    async with BillingApp(settings).running():
        raw = await nats_client.request(
            Subjects(namespace).billing_admit, request.model_dump_json().encode(), timeout=10
        )
    reply = AdmitReply.model_validate_json(raw.data)
    assert reply.admitted, reply.error


def test_the_chart_and_compose_start_users_with_the_same_balance() -> None:
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[3]
    default = str(BillingSettings.model_fields["start_balance"].default)
    values = yaml.safe_load((root / "deploy/helm/switchboard/values.yaml").read_text())
    compose = yaml.safe_load((root / "deploy/compose/compose.yaml").read_text())
    assert values["services"]["billing"]["env"]["BILLING_START_BALANCE"] == default
    assert compose["services"]["billing"]["environment"]["BILLING_START_BALANCE"] == default
