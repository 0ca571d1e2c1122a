"""The Responses routes are in the gateway's OpenAPI document under OpenAI's names."""

import pytest

from gateway.app import create_app
from gateway.settings import GatewaySettings

pytestmark = pytest.mark.unit


def test_responses_routes_are_documented() -> None:
    schema = create_app(GatewaySettings()).openapi()
    paths = schema["paths"]
    create = paths["/v1/responses"]["post"]
    assert create["operationId"] == "createResponse"
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CreateResponse"
    }
    request = schema["components"]["schemas"]["CreateResponse"]
    assert {"model", "input", "previous_response_id", "background", "store"} <= set(request["properties"])
    assert set(create["responses"]) >= {"200", "400", "401", "402", "403", "404", "429"}
    assert "get" in paths["/v1/responses/{response_id}"] and "delete" in paths["/v1/responses/{response_id}"]
    assert "get" in paths["/v1/responses/{response_id}/input_items"]
    assert "post" in paths["/v1/responses/{response_id}/cancel"]
    # The chat route is still there beside it.
    assert paths["/v1/chat/completions"]["post"]["operationId"] == "createChatCompletion"
