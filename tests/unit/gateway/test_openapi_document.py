"""The admin API is documented in the gateway's OpenAPI document (served at /openapi.json)."""

import pytest

from gateway.app import create_app
from gateway.settings import GatewaySettings

pytestmark = pytest.mark.unit


def test_every_admin_route_is_documented_with_its_body() -> None:
    app = create_app(GatewaySettings())
    assert app.openapi_url == "/openapi.json"
    schema = app.openapi()
    admin = {path: ops for path, ops in schema["paths"].items() if path.startswith("/admin/v1")}
    operations = [(path, method) for path, ops in admin.items() for method in ops]
    assert len(operations) >= 27  # every admin operation of contracts.admin's route table
    for path, method in operations:
        assert "admin" in admin[path][method].get("tags", []), (method, path)
    create_user = admin["/admin/v1/users"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert create_user["title"] == "UserCreate" and create_user["required"] == ["name"]


def test_the_chat_route_is_documented_with_openai_names() -> None:
    schema = create_app(GatewaySettings()).openapi()
    operation = schema["paths"]["/v1/chat/completions"]["post"]
    assert operation["operationId"] == "createChatCompletion"
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/CreateChatCompletionRequest"}
    components = schema["components"]["schemas"]
    request = components["CreateChatCompletionRequest"]
    assert {"model", "messages"} <= set(request["required"])
    assert {"stream", "max_tokens", "temperature", "conversation_id"} <= set(request["properties"])
    answers = operation["responses"]["200"]["content"]
    assert answers["application/json"]["schema"]["$ref"].endswith("/CreateChatCompletionResponse")
    assert answers["text/event-stream"]["schema"]["$ref"].endswith("/CreateChatCompletionStreamResponse")
    assert {"400", "401", "402", "404", "429", "503"} <= set(operation["responses"])
    # Every reference resolves within the document.
    refs = _refs(schema)
    assert refs and all(ref.removeprefix("#/components/schemas/") in components for ref in refs), refs
    assert "/v1/models" in schema["paths"]


def test_the_documented_chat_request_is_what_the_route_accepts() -> None:
    from jsonschema import Draft202012Validator

    schema = create_app(GatewaySettings()).openapi()
    request = {**schema["components"]["schemas"]["CreateChatCompletionRequest"], "$defs": {}}
    resolver_doc = {"components": schema["components"], **request}
    validator = Draft202012Validator(resolver_doc)
    ok = {"model": "agent_1", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    assert not list(validator.iter_errors(ok))
    assert list(validator.iter_errors({"model": "agent_1"}))  # messages missing


def _refs(node: object) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        for value in node.values():
            found |= _refs(value)
        return found
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node)) if node else set()
    return set()
