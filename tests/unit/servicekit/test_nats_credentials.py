"""``NATS_USER`` / ``NATS_PASSWORD``: a service's own NATS user, given to the client, never shown."""

from __future__ import annotations

import pytest

from billing.settings import BillingSettings
from catalog.settings import CatalogSettings
from gateway.settings import GatewaySettings
from runner.settings import RunnerSettings

pytestmark = pytest.mark.unit

SETTINGS = [GatewaySettings, RunnerSettings, BillingSettings, CatalogSettings]


@pytest.mark.parametrize("settings_type", SETTINGS)
def test_user_and_password_reach_the_client(monkeypatch: pytest.MonkeyPatch, settings_type: type) -> None:
    monkeypatch.setenv("NATS_USER", "sb-gateway")
    monkeypatch.setenv("NATS_PASSWORD", "pw-in-test-only")
    monkeypatch.setenv("SWITCHBOARD_NAMESPACE", "prod")
    settings = settings_type()
    service = settings_type.__name__.removesuffix("Settings").lower()
    assert settings.nats_credentials() == {
        "user": "sb-gateway",
        "password": "pw-in-test-only",
        # Replies arrive where only this service's user may read them.
        "inbox_prefix": f"_INBOX_prod_{service}",
    }
    # Neither the settings' repr (logged on a crash) nor their dump shows the password.
    assert "pw-in-test-only" not in repr(settings)
    assert "pw-in-test-only" not in str(settings.model_dump())


@pytest.mark.parametrize("settings_type", SETTINGS)
def test_no_user_no_credentials(monkeypatch: pytest.MonkeyPatch, settings_type: type) -> None:
    monkeypatch.delenv("NATS_USER", raising=False)
    monkeypatch.setenv("NATS_PASSWORD", "pw-in-test-only")
    # Without a user nothing is sent: a URL's own credentials (nats://u:p@host) still apply.
    assert settings_type().nats_credentials() == {}


def test_a_urls_credentials_give_way_to_the_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NATS_URL", "nats://a:b@n1:4222, nats://n2:4222")
    monkeypatch.delenv("NATS_USER", raising=False)
    assert CatalogSettings().nats_servers() == ["nats://a:b@n1:4222", "nats://n2:4222"]
    monkeypatch.setenv("NATS_USER", "sb-catalog")
    monkeypatch.setenv("NATS_PASSWORD", "pw-in-test-only")
    assert CatalogSettings().nats_servers() == ["nats://n1:4222", "nats://n2:4222"]
