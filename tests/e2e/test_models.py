"""``GET /v1/models`` and ``GET /v1/models/{model}``: the agents the caller may use, in the OpenAI shape."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import StackHandle
from tests.support.openapi_schema import validate

pytestmark = pytest.mark.e2e


async def test_models_lists_the_callers_agents(e2e: StackHandle, client: Any, http: httpx.AsyncClient) -> None:
    mine = e2e.agent("openai")
    theirs = e2e.agent("openai", owner_id=e2e.seeded.outsider_id)

    r = await http.get("/v1/models")
    assert r.status_code == 200
    validate("ListModelsResponse", r.json())
    ids = {m.id async for m in client.models.list()}
    assert mine.id in ids
    assert theirs.id not in ids

    one = await http.get(f"/v1/models/{mine.id}")
    assert one.status_code == 200
    validate("Model", one.json())
    assert one.json()["id"] == mine.id

    # Another user's agent, no grant: the answer a missing one gets (404 model_not_found, as for running it).
    with pytest.raises(openai.NotFoundError) as hidden:
        await client.models.retrieve(theirs.id)
    assert hidden.value.code == "model_not_found"
