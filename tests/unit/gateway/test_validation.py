"""Request validation: every bad body is a 400 envelope naming the parameter; never 422."""

from __future__ import annotations

import json

import pytest

from contracts import AgentSnapshot
from gateway.errors import GatewayError, param_from_loc
from gateway.orchestration import max_output_tokens
from gateway.routes.chat import parse_chat_request
from gateway.settings import GatewaySettings
from tests.support.openapi_schema import validate

pytestmark = pytest.mark.unit


def _body(**fields: object) -> bytes:
    """A chat body that is valid but for ``fields`` (json.dumps sends a NUL as the escape \\u0000)."""
    body: dict[str, object] = {"model": "a", "messages": [{"role": "user", "content": "x"}], **fields}
    return json.dumps(body).encode()


def bad(raw: bytes) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        parse_chat_request(raw)
    err = caught.value
    assert err.status == 400 and err.info.type == "invalid_request_error"
    validate("ErrorResponse", err.info.envelope())
    return err


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (b"", None),
        (b"{", None),
        (b'"a string"', None),
        (b'{"model": "a"}', "messages"),
        (b'{"model": "a", "messages": []}', "messages"),
        (b'{"model": "a", "messages": "hi"}', "messages"),
        (b'{"model": 3, "messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": "a", "messages": [{"role": "robot", "content": "x"}]}', "messages[0].role"),
        (b'{"model": "a", "messages": [{"content": "x"}]}', "messages[0].role"),
        (b'{"model": "a", "messages": [{"role": "user", "content": 5}]}', "messages[0].content"),
        (b'{"model": "a", "messages": [{"role": "tool", "content": "x"}]}', "messages[0].tool_call_id"),
        (b'{"model": "a", "messages": [{"role": "assistant", "content": null}]}', "messages[0].content"),
        (b'{"model": "a", "messages": [{"role": "user", "content": "x"}], "stream": "true"}', "stream"),
        (b'{"model": "a", "messages": [{"role": "user", "content": "x"}], "stream": 1}', "stream"),
        (b'{"model": "a", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}', "max_tokens"),
        (b'{"model": "a", "messages": [{"role": "user", "content": "x"}], "stop": [1]}', "stop"),
        (
            b'{"model": "a", "messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": "y"}}',
            "stream_options.include_usage",
        ),
        # Bounded at the edge: what storage, NATS and arithmetic cannot take never gets past here.
        (_body(conversation_id="c" * 201), "conversation_id"),
        (_body(conversation_id="a\u0000b"), "conversation_id"),
        (_body(parent_message_id="p" * 201), "parent_message_id"),
        (_body(max_tokens=9223372036854775808), "max_tokens"),
        (_body(max_tokens=2**31), "max_tokens"),
        (_body(max_completion_tokens=9223372036854775808), "max_completion_tokens"),
        (_body(user="u" * 257), "user"),
        (_body(model="m" * 257), "model"),
        (_body(stop=["s" * 257]), "stop"),
        (_body(n=2), "n"),
        (_body(stream_options={"include_usage": True}), "stream_options"),
        (_body(stream=False, stream_options={"include_usage": False}), "stream_options"),
        (_body(messages=[{"role": "user", "content": "nul \u0000 inside"}]), "messages[0].content"),
        (_body(messages=[{"role": "user", "name": "n\u0000", "content": "x"}]), "messages[0].name"),
        (_body(messages=[{"role": "user", "content": [{"type": "file", "file": {"file_id": "f"}}]}]), "messages[0]"),
        (_body(messages=[{"role": "user", "content": [{"type": "text"}]}]), "messages[0].content"),
        (_body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]), "messages[0]"),
    ],
)
def test_bad_bodies(raw: bytes, param: str | None) -> None:
    err = bad(raw)
    if param is None:
        assert err.info.param is None
    else:
        assert err.info.param is not None and err.info.param.startswith(param)


def test_good_body_with_extensions_and_unknown_fields() -> None:
    body = parse_chat_request(
        b'{"model": "agent_1", "messages": ['
        b'{"role": "system", "content": "be brief"},'
        b'{"role": "user", "content": [{"type": "text", "text": "hi"},'
        b' {"type": "image_url", "image_url": {"url": "u"}}]},'
        b'{"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",'
        b' "function": {"name": "f", "arguments": "{}"}}]},'
        b'{"role": "tool", "tool_call_id": "c1", "content": "ok"}],'
        b' "stream": true, "stream_options": {"include_usage": true}, "max_completion_tokens": 9, "stop": "END",'
        b' "temperature": 1, "top_p": 0.5, "conversation_id": "conv", "parent_message_id": "p", "logit_bias": {}}'
    )
    assert body.include_usage and body.requested_max_tokens == 9 and body.stop_list == ["END"]
    messages = [m.to_contract() for m in body.messages]
    assert messages[1].text() == "hi" and messages[1].content[1]["image_url"] == {"url": "u"}  # type: ignore[index]
    assert messages[2].tool_calls and messages[2].tool_calls[0].function.name == "f"
    assert body.conversation_id == "conv"


def test_param_names() -> None:
    assert param_from_loc(("body", "messages", 0, "role")) == "messages[0].role"
    assert param_from_loc(("stream",)) == "stream"
    assert param_from_loc(()) is None


def test_max_output_tokens_precedence() -> None:
    agent = AgentSnapshot(id="a", name="a", provider="openai", model="m", model_parameters={"max_tokens": 300})
    bare = AgentSnapshot(id="a", name="a", provider="openai", model="m")
    with_limit = parse_chat_request(b'{"model": "a", "messages": [{"role": "user", "content": "x"}], "max_tokens": 5}')
    without = parse_chat_request(b'{"model": "a", "messages": [{"role": "user", "content": "x"}]}')
    assert max_output_tokens(with_limit.requested_max_tokens, agent, 4096) == 5
    assert max_output_tokens(without.requested_max_tokens, agent, 4096) == 300
    assert max_output_tokens(without.requested_max_tokens, bare, 4096) == 4096


def test_production_refuses_weak_admin_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_ENV", "production")
    for token in (None, "short", "changeme"):
        if token is None:
            monkeypatch.delenv("ADMIN_TOKEN", raising=False)
        else:
            monkeypatch.setenv("ADMIN_TOKEN", token)
        with pytest.raises(ValueError, match="ADMIN_TOKEN"):
            GatewaySettings()
    monkeypatch.setenv("ADMIN_TOKEN", "x" * 40)
    assert GatewaySettings().admin_token == "x" * 40
    monkeypatch.setenv("GATEWAY_PORT", "9999")
    assert GatewaySettings().port == 9999


def _part(part: dict[str, object]) -> bytes:
    return _body(messages=[{"role": "user", "content": [part]}])


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        # A content part: the one problem, where it is (not "content: Input should be a valid string" from
        # the string the content could also have been, nor the part's tag twice in the path).
        (
            _part({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "ogg"}}),
            "Invalid value for 'messages[0].content[0].input_audio.format': Input should be 'wav' or 'mp3'.",
        ),
        (_part({"type": "text"}), "Missing required parameter: 'messages[0].content[0].text'."),
        (
            _part({"type": "image_url", "image_url": {"url": "u", "detail": "ultra"}}),
            "Invalid value for 'messages[0].content[0].image_url.detail': Input should be 'auto', 'low' or 'high'.",
        ),
        (_body(temperature="hot"), "Invalid value for 'temperature': Input should be a valid number."),
        (_body(temperature=True), "Invalid value for 'temperature': Input should be a valid number."),
        (_body(model=""), "Invalid value for 'model': String should have at least 1 character."),
    ],
)
def test_a_bad_value_is_named_once_where_it_is(raw: bytes, message: str) -> None:
    err = bad(raw)
    assert err.info.message == message
    assert err.info.param == message.split("'")[1]


def test_a_union_tag_is_not_a_parameter() -> None:
    tagged = "list[tagged-union[TextPart,ImagePart]]"
    assert param_from_loc(("messages", 0, "content", tagged, 0, "image_url", "image_url", "url")) == (
        "messages[0].content[0].image_url.url"
    )
    # a tag of another name than the field after it
    assert param_from_loc(("input", tagged, 1, "message", "content")) == "input[1].content"
    # a discriminated union straight on a field: its tag, named as OpenAI names parts, once
    assert param_from_loc(("tool_choice", "function", "function", "name")) == "tool_choice.function.name"
