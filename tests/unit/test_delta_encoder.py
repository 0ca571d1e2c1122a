"""The per-token events' fast encoding is the models' own, for every string a provider can send."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts import RUN_EVENT, DeltaEncoder, ReasoningDelta, TextDelta, ToolCallArgumentsDelta

WORST = [
    "",
    "plain",
    'quote " backslash \\ slash /',
    "\n\r\t\b\f controls \x00\x01\x1f\x7f",
    "unicode: é 漢字 🙂 \u2028 \u2029",
    "x" * 100_000,
    '"}, "seq": 999, "type": "completed"',
]


def _without_identity(encoded: bytes) -> dict[str, object]:
    data = json.loads(encoded)
    del data["id"], data["ts"]
    return data


@pytest.mark.parametrize("delta", WORST)
@pytest.mark.parametrize("kind", [TextDelta, ReasoningDelta])
def test_equal_to_the_model(kind: type[TextDelta] | type[ReasoningDelta], delta: str) -> None:
    fast = DeltaEncoder("chatcmpl-1").encode(kind, 7, delta)
    model = kind(run_id="chatcmpl-1", seq=7, delta=delta)
    assert _without_identity(fast) == _without_identity(model.model_dump_json().encode())
    assert RUN_EVENT.validate_json(fast).model_dump(exclude={"id", "ts"}) == model.model_dump(exclude={"id", "ts"})


def test_tool_arguments_carry_their_index() -> None:
    fast = DeltaEncoder("r").encode(ToolCallArgumentsDelta, 3, '{"a": 1}', index=2)
    model = ToolCallArgumentsDelta(run_id="r", seq=3, index=2, delta='{"a": 1}')
    assert _without_identity(fast) == _without_identity(model.model_dump_json().encode())


def test_a_run_id_is_escaped_too() -> None:
    event = RUN_EVENT.validate_json(DeltaEncoder('run "odd" \\ id').encode(TextDelta, 0, "x"))
    assert event.run_id == 'run "odd" \\ id'


def test_each_event_has_its_own_id_and_the_time_now() -> None:
    encoder = DeltaEncoder("r")
    a, b = (RUN_EVENT.validate_json(encoder.encode(TextDelta, i, "x")) for i in range(2))
    assert a.id != b.id
    assert abs(a.ts - datetime.now(UTC)) < timedelta(seconds=5)
    assert a.ts.tzinfo is not None


@given(st.text(), st.integers(min_value=0, max_value=2**40))
def test_any_text_round_trips(delta: str, seq: int) -> None:
    event = RUN_EVENT.validate_json(DeltaEncoder("r").encode(TextDelta, seq, delta))
    assert isinstance(event, TextDelta)
    assert (event.delta, event.seq) == (delta, seq)
