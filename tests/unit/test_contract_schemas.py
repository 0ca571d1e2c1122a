"""The wire is a contract: every model's JSON schema must equal its committed copy (`make contracts`)."""

import pytest

from contracts.snapshot import SCHEMA_DIR, render, wire_models

pytestmark = pytest.mark.unit
MODELS = wire_models()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_schema_matches_committed_copy(name: str) -> None:
    path = SCHEMA_DIR / f"{name}.json"
    assert path.exists(), f"{name} has no committed schema: run `make contracts` and review the diff"
    assert path.read_text() == render(MODELS[name]), f"{name} changed on the wire: run `make contracts` and review"


def test_no_stale_committed_schemas() -> None:
    stale = {p.stem for p in SCHEMA_DIR.glob("*.json")} - set(MODELS)
    assert not stale, f"committed schemas without a model: {sorted(stale)}"


def test_run_event_round_trip() -> None:
    from contracts import RUN_EVENT, TextDelta

    event = TextDelta(run_id="run_1", seq=3, delta="hé")
    assert RUN_EVENT.validate_json(event.model_dump_json()) == event
