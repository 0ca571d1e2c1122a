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
