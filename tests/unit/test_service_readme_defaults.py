"""Each service README's settings table states the defaults the code has (a row ``| `PREFIX_NAME` |
`default` | … |`` naming one setting; rows naming several, or a default in words, are not checked)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {
    "runner": ("runner.settings", "RunnerSettings", "RUNNER_"),
    "gateway": ("gateway.settings", "GatewaySettings", "GATEWAY_"),
    "catalog": ("catalog.settings", "CatalogSettings", "CATALOG_"),
}
ROW = re.compile(r"^\| `([A-Z0-9_]+)` \| `([^`]*)` \|")


def _same(documented: str, default: Any) -> bool:
    if isinstance(default, bool) or not isinstance(default, int | float):
        return documented.lower() == str(default).lower()
    return re.fullmatch(r"[0-9._]+", documented) is not None and float(documented.replace("_", "")) == default


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_the_readme_states_the_codes_defaults(service: str) -> None:
    module, name, prefix = SERVICES[service]
    settings = getattr(importlib.import_module(module), name)
    checked, wrong = 0, []
    for line in (ROOT / "services" / service / "README.md").read_text(encoding="utf-8").splitlines():
        match = ROW.match(line)
        if match is None or not match.group(1).startswith(prefix):
            continue
        variable, documented = match.groups()
        field = settings.model_fields.get(variable[len(prefix) :].lower())
        assert field is not None, f"{variable} is documented but no setting reads it"
        default = field.get_default(call_default_factory=True)
        checked += 1
        if not _same(documented, default):
            wrong.append(f"{variable}: README says {documented!r}, the code {default!r}")
    assert checked >= 5, f"the {service} README's settings table was not found"
    assert wrong == []
