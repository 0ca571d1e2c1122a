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


def test_every_error_answer_is_documented_as_the_openai_envelope() -> None:
    """The fuzz test (tests/e2e/test_fuzz.py) holds the gateway to its document: FastAPI's routes answered
    400s, 401s and 404s they did not document, and documented a 422 that is never sent."""
    schema = create_app(GatewaySettings()).openapi()
    components = schema["components"]
    assert "HTTPValidationError" not in components["schemas"]
    assert set(components["securitySchemes"]) == {"bearerAuth", "adminToken"}
    api = {path: ops for path, ops in schema["paths"].items() if path.startswith(("/v1/", "/admin/v1/"))}
    for path, operations in api.items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert {"400", "401", "503"} <= set(responses), (method, path)
            for status, response in responses.items():
                if int(status) >= 400:
                    body = response["content"]["application/json"]["schema"]
                    assert body == {"$ref": "#/components/schemas/ErrorResponse"}, (method, path, status)
            expected = "adminToken" if path.startswith("/admin/") else "bearerAuth"
            assert operation["security"] == [{expected: []}], (method, path)
    models = api["/v1/models/{model}"]["get"]["responses"]
    assert "422" not in models and "404" in models
    assert "409" in api["/admin/v1/groups"]["post"]["responses"]  # a name already taken
    assert "409" not in api["/admin/v1/groups"]["get"]["responses"]


def test_optional_money_fields_are_documented_as_nullable() -> None:
    """``PUT /admin/v1/pricing/{model_key}`` takes ``"cache_read": null`` (the input price then applies)."""
    schema = create_app(GatewaySettings()).openapi()
    body = schema["paths"]["/admin/v1/pricing/{model_key}"]["put"]["requestBody"]["content"]["application/json"]
    properties = body["schema"]["properties"]
    assert {"type": "null"} in properties["cache_read"]["anyOf"]
    assert {"type": "null"} not in properties["input"]["anyOf"]  # required, never null


def test_request_headers_are_documented_as_the_gateway_reads_them() -> None:
    schema = create_app(GatewaySettings()).openapi()
    parameters = {p["name"]: p["schema"] for p in schema["paths"]["/v1/chat/completions"]["post"]["parameters"]}
    assert "maxLength" not in parameters["X-Request-ID"]  # any value is taken; a bad one is replaced
    assert parameters["Idempotency-Key"]["pattern"] == "^[ -~]+$"  # printable ASCII, else a 400
