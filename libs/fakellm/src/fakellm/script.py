"""Scripts: what the fake model answers, turn by turn, and how its tokens are cut and counted.

Pure logic, no HTTP: :func:`select_turn` picks the turn for a request, :func:`plan` turns it into the
token chunks and usage numbers that both wire formats render.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson

TOKEN = re.compile(r"\s*\S+\s*|\s+")
ARG_CHUNK = 8


def tokenize(text: str) -> list[str]:
    """A word and its trailing whitespace is one token; leading whitespace joins the first token."""
    if not text:
        return []
    tokens = re.findall(r"\S+\s*", text)
    lead = len(text) - len(text.lstrip())
    if not tokens:
        return [text]
    if lead:
        tokens[0] = text[:lead] + tokens[0]
    return tokens


def words(text: str) -> int:
    return len(text.split())


@dataclass
class ToolCallPlan:
    id: str
    name: str
    arguments: str
    chunks: list[str]
    input: Any
    extra_content: dict[str, Any] | None = None


@dataclass
class Plan:
    """Everything a response needs: the chunks in order, the usage, the pacing and the faults."""

    reasoning: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    tool_calls: list[ToolCallPlan] = field(default_factory=list)
    prompt_tokens: int = 1
    cache_read: int = 0
    cache_write: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    finish_reason: str = "stop"
    reasoning_field: str = "reasoning_content"
    error: dict[str, Any] | None = None
    fail_after: int | None = None
    omit_usage: bool = False
    ttft_ms: float = 0.0
    tokens_per_s: float = 0.0
    pause_after: int | None = None
    pause_ms: float = 0.0
    #: How the calls are numbered on the OpenAI wire: ``None`` as OpenAI does (by index, the arguments in
    #: pieces); ``"omit"`` (no ``index``) or ``"zero"`` (every call at 0) each call whole in one chunk,
    #: as Gemini's OpenAI-compatible endpoint sends them.
    tool_call_index: str | None = None

    @property
    def uncached_input(self) -> int:
        return max(0, self.prompt_tokens - self.cache_read - self.cache_write)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for p in content:
            if isinstance(p, dict):
                if isinstance(p.get("text"), str):
                    parts.append(p["text"])
                elif p.get("type") == "tool_result":
                    parts.append(_content_text(p.get("content")))
                elif p.get("type") == "tool_use":
                    parts.append(orjson.dumps(p.get("input", {})).decode())
        return " ".join(parts)
    return ""


def _is_real_user(message: dict[str, Any], api: str) -> bool:
    if message.get("role") != "user":
        return False
    if api == "anthropic":
        content = message.get("content")
        if (
            isinstance(content, list)
            and content
            and all(isinstance(p, dict) and p.get("type") == "tool_result" for p in content)
        ):
            return False
    return True


def last_user_index(messages: list[dict[str, Any]], api: str) -> int:
    """The index of the last real user message (not an Anthropic tool result), -1 when there is none."""
    last_user = -1
    for i, m in enumerate(messages):
        if _is_real_user(m, api):
            last_user = i
    return last_user


def select_turn(messages: list[dict[str, Any]], api: str) -> tuple[int, str]:
    """The turn index (assistant messages after the last real user message) and that user's text."""
    last_user = last_user_index(messages, api)
    turn = sum(1 for m in messages[last_user + 1 :] if m.get("role") == "assistant")
    user_text = _content_text(messages[last_user].get("content")) if last_user >= 0 else ""
    return turn, user_text


def prompt_words(body: dict[str, Any]) -> int:
    """Default prompt size: the words of every message, the system prompt and the tool names."""
    n = sum(words(_content_text(m.get("content"))) for m in body.get("messages", []) if isinstance(m, dict))
    system = body.get("system")
    if system:
        n += words(_content_text(system))
    for tool in body.get("tools") or []:
        name = tool.get("name") or (tool.get("function") or {}).get("name")
        if name:
            n += 1
    return max(1, n)


def _offered(body: dict[str, Any]) -> list[str]:
    names = []
    for tool in body.get("tools") or []:
        if isinstance(tool, dict):
            name = tool.get("name") or (tool.get("function") or {}).get("name")
            if isinstance(name, str):
                names.append(name)
    return names


def tool_choice_of(body: dict[str, Any]) -> str | tuple[str, str] | None:
    """The request's tool choice, either API's: ``"none"``, ``"required"``, ``("named", name)``, or
    ``None`` (the model decides; scripts may call tools that were not offered, to test that case)."""
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind == "tool":  # Anthropic
            return ("named", str(choice.get("name")))
        if kind == "function":  # OpenAI
            return ("named", str((choice.get("function") or {}).get("name")))
        choice = kind
    if choice == "any":
        return "required"
    return choice if choice in ("none", "required") else None


def obey_tool_choice(turn: dict[str, Any], body: dict[str, Any], api: str) -> dict[str, Any]:
    """``turn`` as a model bound by the request's tool choice would answer it: without tool calls when
    none may be made (``"No tool is used."`` when the turn had no text), with the named function (its
    arguments from the turn's call of it, else ``forced_arguments``, else a value for each required
    parameter: :func:`_forced_arguments`), or with a call of the first tool offered when one is
    required and the turn has none."""
    choice = tool_choice_of(body)
    calls = turn.get("tool_calls") or []
    if choice == "none":
        if not calls:
            return turn
        return {**{k: v for k, v in turn.items() if k != "tool_calls"}, "text": turn.get("text") or "No tool is used."}
    if isinstance(choice, tuple):
        name = choice[1]
        mine = [c for c in calls if c.get("name") == name][:1]
        forced = mine or [{"name": name, "arguments": _forced_arguments(turn, body, name)}]
        return {**turn, "tool_calls": forced}
    if choice == "required" and not calls and (offered := _offered(body)):
        return {**turn, "tool_calls": [{"name": offered[0], "arguments": _forced_arguments(turn, body, offered[0])}]}
    return turn


#: A value of each JSON Schema type, for a required parameter of a forced call with no script.
_EXAMPLE = {"string": "example", "integer": 1, "number": 1, "boolean": True, "array": [], "object": {}}


def _forced_arguments(turn: dict[str, Any], body: dict[str, Any], name: str) -> Any:
    """The turn's ``forced_arguments``; else a value for each required parameter of the offered tool's
    schema (an ``enum``'s first, else one of its type), so that a client validating its function's
    arguments (a LangChain ``@tool``) can run the call."""
    if "forced_arguments" in turn:
        return turn["forced_arguments"]
    schema: Any = None
    for tool in body.get("tools") or []:
        if isinstance(tool, dict):
            fn: dict[str, Any] = tool["function"] if isinstance(tool.get("function"), dict) else tool
            if fn.get("name") == name:
                schema = fn.get("parameters") or fn.get("input_schema")
    if not isinstance(schema, dict) or not isinstance(schema.get("properties"), dict):
        return {}
    args: dict[str, Any] = {}
    for prop in schema.get("required") or []:
        spec = schema["properties"].get(prop)
        if not isinstance(spec, dict):
            continue
        enum = spec.get("enum")
        kind: Any = spec.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), None)
        args[prop] = enum[0] if isinstance(enum, list) and enum else _EXAMPLE.get(str(kind), "example")
    return args


def plan(turn: dict[str, Any], body: dict[str, Any], api: str, defaults: tuple[float, float]) -> Plan:
    """Cut a script turn into chunks and fill in the usage it did not state."""
    p = Plan(ttft_ms=float(turn.get("ttft_ms", defaults[0])), tokens_per_s=float(turn.get("tokens_per_s", defaults[1])))
    p.reasoning = tokenize(turn.get("reasoning") or "")
    p.text = tokenize(turn.get("text") or "")
    for i, call in enumerate(turn.get("tool_calls") or []):
        args = call.get("arguments", {})
        arg_str = args if isinstance(args, str) else orjson.dumps(args).decode()
        try:
            parsed = orjson.loads(arg_str) if arg_str else {}
        except orjson.JSONDecodeError:
            parsed = {}
        prefix = "toolu_" if api == "anthropic" else "call_"
        chunks = [arg_str[j : j + ARG_CHUNK] for j in range(0, len(arg_str), ARG_CHUNK)] or [""]
        p.tool_calls.append(
            ToolCallPlan(
                id=call.get("id") or f"{prefix}{i + 1}",
                name=call["name"],
                arguments=arg_str,
                chunks=chunks,
                input=parsed,
                extra_content=call.get("extra_content"),
            )
        )
    emitted = len(p.reasoning) + len(p.text) + sum(len(c.chunks) for c in p.tool_calls)
    usage = turn.get("usage") or {}
    p.prompt_tokens = int(usage.get("prompt_tokens", prompt_words(body)))
    p.cache_read = int(usage.get("cache_read_tokens", 0))
    p.cache_write = int(usage.get("cache_write_tokens", 0))
    p.output_tokens = int(usage.get("output_tokens", max(1, emitted)))
    p.reasoning_tokens = int(usage.get("reasoning_tokens", len(p.reasoning)))
    p.finish_reason = turn.get("finish_reason") or ("tool_calls" if p.tool_calls else "stop")
    p.reasoning_field = turn.get("reasoning_field") or "reasoning_content"
    p.error = turn.get("error")
    p.fail_after = turn.get("fail_after")
    p.omit_usage = bool(turn.get("omit_usage", False))
    p.pause_after = turn.get("pause_after")
    p.pause_ms = float(turn.get("pause_ms", 0))
    p.tool_call_index = turn.get("tool_call_index")
    return p
