"""/v1/models as three users whose access comes from a user grant, a group grant and a role grant,
plus a public agent: each lists exactly what it may run, through the official SDK."""

from __future__ import annotations

import openai
import pytest

from tests.e2e.conftest import StackHandle
from tests.support.openapi_schema import validate

pytestmark = pytest.mark.e2e


def _viewer(e2e: StackHandle, agent_id: str, principal_type: str, principal_id: str | None) -> None:
    e2e.admin.grant(
        agent_id, resource_type="remote_agent", principal_type=principal_type, principal_id=principal_id, role="viewer"
    )


async def test_each_user_lists_and_retrieves_exactly_its_agents(e2e: StackHandle) -> None:
    admin = e2e.admin
    owner = admin.create_user("models-owner")
    alice = admin.create_user("models-alice")
    bob = admin.create_user("models-bob")
    carol = admin.create_user("models-carol", role="ADMIN")
    group = admin.request("POST", "/groups", json={"name": f"models-group-{alice['id'][-6:]}"})
    admin.request("POST", f"/groups/{group['id']}/members", json={"user_id": bob["id"]})

    def agent(name: str) -> str:
        return admin.create_agent(name=name, provider="openai", model="fake-grants", owner_id=owner["id"])["id"]

    for_alice, for_group, for_role, for_all = agent("a"), agent("g"), agent("r"), agent("p")
    _viewer(e2e, for_alice, "user", alice["id"])
    _viewer(e2e, for_group, "group", group["id"])
    _viewer(e2e, for_role, "role", "ADMIN")
    _viewer(e2e, for_all, "public", None)

    expected = {alice["id"]: {for_alice, for_all}, bob["id"]: {for_group, for_all}, carol["id"]: {for_all}}
    # carol's role is ADMIN: the role grant is hers too (so is any other ADMIN's)
    expected[carol["id"]].add(for_role)
    mine = {for_alice, for_group, for_role, for_all}
    for user in (alice, bob, carol):
        key = admin.create_api_key(user["id"], "k")["key"]
        async with e2e.client(api_key=key) as client:
            page = await client.models.list()
            raw = await client.models.with_raw_response.list()
            validate("ListModelsResponse", raw.http_response.json())
            listed = {m.id for m in page.data} & mine
            assert listed == expected[user["id"]], user["name"]
            for agent_id in mine:
                if agent_id in expected[user["id"]]:
                    model = await client.models.retrieve(agent_id)
                    assert model.id == agent_id and model.object == "model"
                else:
                    with pytest.raises(openai.NotFoundError) as denied:
                        await client.models.retrieve(agent_id)
                    assert denied.value.code == "model_not_found"
            with pytest.raises(openai.NotFoundError) as missing:
                await client.models.retrieve("agent_does_not_exist")
            assert missing.value.code == "model_not_found"
