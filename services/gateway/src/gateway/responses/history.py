"""A finished response's output as chat messages: what a continuation (``previous_response_id``) sends
the model after the earlier turns and this response's input. Pure.

- a ``message`` item → an assistant message;
- an ``mcp_call`` item (an agent tool) → an assistant message calling it (with the text just before
  it) and a ``tool`` message with its result, under the call id the model gave;
- ``function_call`` items (client functions) → one assistant message's ``tool_calls``; their results
  come with the next request's input (``function_call_output``);
- ``reasoning`` items are not sent back.
"""

from __future__ import annotations

from typing import Any

from contracts import ChatMessage, FunctionCall, ToolCall

from .render import ResponseRenderer
from .store import StoredResponse


def _result_text(item: dict[str, Any]) -> str:
    if isinstance(item.get("output"), str):
        return str(item["output"])
    error = item.get("error") or {}
    content = error.get("content") if isinstance(error, dict) else None
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "The tool did not finish."


def output_messages(output: list[dict[str, Any]], call_ids: dict[int, str]) -> list[ChatMessage]:
    """The chat messages of a response's ``output`` (``call_ids``: output index → the model's call id)."""
    messages: list[ChatMessage] = []
    calls: list[ToolCall] = []
    results: list[ChatMessage] = []
    text: str | None = None

    def flush() -> None:
        nonlocal text, calls, results
        if text is not None or calls:
            messages.append(ChatMessage(role="assistant", content=text, tool_calls=list(calls) or None))
        messages.extend(results)
        text, calls, results = None, [], []

    for index, item in enumerate(output):
        kind = item.get("type")
        if kind == "message":
            flush()
            text = "".join(str(p.get("text", "")) for p in item.get("content") or [] if p.get("type") == "output_text")
        elif kind in ("mcp_call", "function_call"):
            call_id = str(item.get("call_id") or call_ids.get(index) or item.get("id"))
            calls.append(
                ToolCall(id=call_id, function=FunctionCall(name=str(item["name"]), arguments=item.get("arguments", "")))
            )
            if kind == "mcp_call":
                # Each agent tool call is its own round (call, then result): the output does not say
                # which calls one model step made, and one round per call is valid for every provider.
                results.append(ChatMessage(role="tool", content=_result_text(item), tool_call_id=call_id))
                flush()
    flush()
    return messages


def finished_record(record: StoredResponse, renderer: ResponseRenderer) -> StoredResponse:
    """The stored response once its run is over: the final ``Response`` and, appended to the
    conversation, what the model answered."""
    response = renderer.snapshot()
    conversation = list(record.conversation)
    if response.get("status") in ("completed", "incomplete"):
        conversation.extend(output_messages(renderer.output, renderer.call_ids))
    return record.model_copy(update={"response": response, "conversation": conversation})
