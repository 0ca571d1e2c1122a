from __future__ import annotations

import pytest

from contracts import AgentSnapshot, Caller, ChatMessage, RunOptions, RunRequest
from contracts.runs import FunctionCall, ToolCall
from runner.agent import call_parameters, initial_conversation, max_steps_of
from runner.connections import PLACEHOLDER_KEY, load_connections
from runner.errors import ConfigError
from runner.providers.anthropic_provider import to_anthropic, to_anthropic_params
from runner.providers.base import CallSpec, ToolCallChunk, ToolSpec
from runner.providers.openai_provider import chunks_of, reasoning_of, to_openai_messages, to_openai_tools

pytestmark = pytest.mark.unit

CONVERSATION = [
    ChatMessage(role="system", content="Be brief."),
    ChatMessage(role="developer", content="Use tools."),
    ChatMessage(role="user", content=[{"type": "text", "text": "6*7?"}]),
    ChatMessage(
        role="assistant",
        content=None,
        tool_calls=[ToolCall(id="c1", function=FunctionCall(name="calculator", arguments='{"expression":"6*7"}'))],
    ),
    ChatMessage(role="tool", tool_call_id="c1", content="42"),
]


def _request(**kw: object) -> RunRequest:
    agent = AgentSnapshot(
        id="a",
        name="A",
        provider="openai",
        model="m",
        instructions="Hi.",
        model_parameters=kw.pop(
            "params", {"temperature": 0.5, "max_steps": 3, "disableStreaming": True, "stream": False}
        ),
    )
    return RunRequest(
        run_id="r",
        caller=Caller(user_id="u"),
        agent=agent,
        messages=[ChatMessage(role="user", content="q")],
        deadline="2100-01-01T00:00:00Z",
        **kw,
    )  # type: ignore[arg-type]


def test_openai_messages_keep_the_chat_shape() -> None:
    call = CallSpec(model="m", messages=CONVERSATION, tools=[ToolSpec("calculator", "d", {"type": "object"})])
    msgs = to_openai_messages(call)
    assert msgs[0] == {"role": "system", "content": "Be brief."}
    assert msgs[3]["tool_calls"][0] == {
        "id": "c1",
        "type": "function",
        "function": {"name": "calculator", "arguments": '{"expression":"6*7"}'},
    }
    assert msgs[4] == {"role": "tool", "tool_call_id": "c1", "content": "42"}
    assert to_openai_tools(call)[0]["function"]["name"] == "calculator"


def test_anthropic_mapping() -> None:
    system, msgs = to_anthropic(CONVERSATION)
    assert system == "Be brief.\n\nUse tools."
    assert msgs == [
        {"role": "user", "content": [{"type": "text", "text": "6*7?"}]},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "c1", "name": "calculator", "input": {"expression": "6*7"}}],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c1", "content": "42"}]},
    ]


def test_anthropic_params() -> None:
    assert to_anthropic_params({"temperature": 0.2, "stop": "END"}) == (
        4096,
        {"temperature": 0.2, "stop_sequences": ["END"]},
    )
    assert to_anthropic_params({"max_tokens": 100})[0] == 100


def test_reasoning_fields() -> None:
    from openai.types.chat.chat_completion_chunk import ChoiceDelta

    assert reasoning_of(ChoiceDelta.model_validate({"reasoning_content": "a"})) == "a"
    assert reasoning_of(ChoiceDelta.model_validate({"reasoning": "b"})) == "b"
    assert reasoning_of(ChoiceDelta.model_validate({"content": "c"})) is None


def test_parameters_pass_through_without_switchboard_keys() -> None:
    req = _request(options=RunOptions(temperature=0.9, max_tokens=50))
    assert call_parameters(req) == {"temperature": 0.9, "max_tokens": 50}
    assert max_steps_of(req, 10) == 3
    assert max_steps_of(_request(options=RunOptions(max_steps=2)), 10) == 2
    assert max_steps_of(_request(params={}), 10) == 10
    assert initial_conversation(req)[0] == ChatMessage(role="system", content="Hi.")


def test_connections() -> None:
    conns = load_connections(
        '{"local": {"kind": "openai", "base_url": "http://x/v1", "api_key_env": "LOCAL_KEY"}}',
        {"OPENAI_BASE_URL": "http://o/v1", "LOCAL_KEY": "secret-key-123"},
    )
    assert conns["openai"].base_url == "http://o/v1" and conns["openai"].api_key == PLACEHOLDER_KEY
    assert conns["local"].api_key == "secret-key-123" and "secret" not in repr(conns["local"])
    with pytest.raises(ConfigError):
        load_connections('{"bad": {"kind": "other"}}', {})


def test_openai_developer_is_system_and_responses_parts_are_text_parts() -> None:
    call = CallSpec(
        model="m",
        messages=[
            ChatMessage(role="developer", content="Use tools."),
            ChatMessage(
                role="user",
                content=[
                    {"type": "input_text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": "data:x"}},
                ],
            ),
        ],
    )
    msgs = to_openai_messages(call)
    assert msgs[0] == {"role": "system", "content": "Use tools."}
    assert msgs[1]["content"] == [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "data:x"}},
    ]


def test_anthropic_extras_lead_their_assistant_message() -> None:
    block = {"type": "thinking", "thinking": "t", "signature": "s"}
    _, msgs = to_anthropic(CONVERSATION, {3: [block]})
    assert msgs[1]["content"][0] == block and msgs[1]["content"][1]["type"] == "tool_use"
    _, plain = to_anthropic(CONVERSATION, {2: [block]})  # not an assistant message: ignored
    assert all(b["type"] != "thinking" for m in plain for b in m["content"])


def test_the_proxy_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from runner.providers.openai_provider import proxy_for

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    assert proxy_for("https://api.example.com/v1/chat/completions") == "http://proxy.internal:3128"
    assert proxy_for("http://127.0.0.1:8000/v1/chat/completions") is None
    monkeypatch.delenv("HTTPS_PROXY")
    assert proxy_for("https://api.example.com/v1/chat/completions") is None


def test_tool_call_chunks_as_servers_other_than_openai_send_them() -> None:
    """No index, or one that is not a number (``None``: :func:`runner.agent.call_of` decides); an
    object for arguments (its JSON); empty id and name (absent); ``extra_content`` kept as sent."""

    def calls(tc: dict[str, object]) -> list[object]:
        return chunks_of({"choices": [{"index": 0, "delta": {"tool_calls": [tc]}}]})

    signed = {"google": {"thought_signature": "c2ln"}}
    assert calls({"id": "f1", "function": {"name": "calc", "arguments": {"x": 1}}, "extra_content": signed}) == [
        ToolCallChunk(index=None, arguments='{"x":1}', id="f1", name="calc", extra_content=signed)
    ]
    assert calls({"index": "0", "id": "", "function": {"name": "", "arguments": "{}"}}) == [
        ToolCallChunk(index=None, arguments="{}")
    ]
    assert calls({"index": 2, "function": {"arguments": "1}"}}) == [ToolCallChunk(index=2, arguments="1}")]
