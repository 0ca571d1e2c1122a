"""The unscripted answer: an echo, or a deterministic round trip through ``calculator`` / ``current_time``.

For a model without a script, :func:`unscripted_turn` decides the turn, from the request alone:

* the last real user message contains an arithmetic expression (numbers joined by ``+ - * / // %
  **`` and parentheses, such as ``17*23`` or ``(2 + 3) * 4``) and the request offers a ``calculator``
  tool: the answer is a call ``calculator({"expression": "17*23"})``;
* otherwise, the user asks for the time or the date ("what time is it", "the current date" …) and a
  ``current_time`` tool is offered: the answer is a call ``current_time({})``;
* the conversation after the last user message holds the results of tool calls (an OpenAI ``tool``
  message, an Anthropic ``tool_result`` block): the answer is text built from them —
  ``17*23 = 391.``, ``The current time is 2025-01-01T12:00:00+00:00.``, or for any other tool (a
  client's function, called because ``tool_choice`` required it) ``The get_weather tool answered: …``;
* anything else: ``You said: <the last user message>`` (the echo many tests rely on).

So an agent with those tools shows the whole agent loop (model → tool call → runner executes it →
model answers with the result) without a real provider. Pure logic, no HTTP.
"""

from __future__ import annotations

import ast
import re
from typing import Any

import orjson

#: Runs of characters an arithmetic expression is made of, starting and ending with an operand.
_CANDIDATE = re.compile(r"(?:(?<![\w)])[-+])?[\d(.][\d\s.()+\-*/%]*[\d)]")
_TIME_QUESTION = re.compile(
    r"\b(?:what time|time is it|the time|current time|the date|today's date|current date|what day)\b", re.I
)
_ARITHMETIC_NODES = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.operator, ast.unaryop)

CALCULATOR = "calculator"
CURRENT_TIME = "current_time"


def find_expression(text: str) -> str | None:
    """The first arithmetic expression with at least one binary operator in ``text``, or ``None``."""
    for match in _CANDIDATE.finditer(text):
        candidate = match.group(0).strip()
        try:
            tree = ast.parse(candidate, mode="eval")
        except SyntaxError:
            continue
        nodes = list(ast.walk(tree))
        if not all(isinstance(n, _ARITHMETIC_NODES) for n in nodes):
            continue
        if any(isinstance(n, ast.Constant) and type(n.value) not in (int, float) for n in nodes):
            continue
        if any(isinstance(n, ast.BinOp) for n in nodes):
            return candidate
    return None


def asks_for_time(text: str) -> bool:
    return _TIME_QUESTION.search(text) is not None


def offered_tools(body: dict[str, Any]) -> set[str]:
    """The tool names a request offers (OpenAI ``function.name`` or Anthropic ``name``)."""
    names = set()
    for tool in body.get("tools") or []:
        if isinstance(tool, dict):
            name = tool.get("name") or (tool.get("function") or {}).get("name")
            if isinstance(name, str):
                names.add(name)
    return names


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            p["text"] if isinstance(p, dict) and isinstance(p.get("text"), str) else _text(p.get("content"))
            for p in content
            if isinstance(p, dict)
        )
    return ""


def tool_results(messages: list[dict[str, Any]], after: int, api: str) -> list[tuple[str, Any, str]]:
    """``(tool name, arguments, result text)`` of every tool result after message ``after``."""
    calls: dict[str, tuple[str, Any]] = {}
    results: list[tuple[str, Any, str]] = []
    for m in messages[after + 1 :]:
        if not isinstance(m, dict):
            continue
        content = m.get("content")
        if api == "openai":
            for call in m.get("tool_calls") or []:
                function = call.get("function") or {}
                try:
                    args = orjson.loads(function.get("arguments") or "{}")
                except orjson.JSONDecodeError:
                    args = {}
                calls[call.get("id", "")] = (function.get("name", ""), args)
            if m.get("role") == "tool":
                name, args = calls.get(m.get("tool_call_id", ""), ("", {}))
                results.append((name, args, _text(content)))
        elif isinstance(content, list):
            for block in content:
                if not isinstance(block, dict):
                    continue
                if block.get("type") == "tool_use":
                    calls[block.get("id", "")] = (block.get("name", ""), block.get("input") or {})
                elif block.get("type") == "tool_result":
                    name, args = calls.get(block.get("tool_use_id", ""), ("", {}))
                    results.append((name, args, _text(block.get("content"))))
    return results


def _sentence(name: str, args: Any, result: str) -> str:
    if name == CALCULATOR and isinstance(args, dict) and args.get("expression"):
        return f"{args['expression']} = {result}."
    if name == CURRENT_TIME:
        return f"The current time is {result}."
    return f"The {name or 'tool'} tool answered: {result}."


def unscripted_turn(body: dict[str, Any], api: str, last_user: int, user_text: str) -> dict[str, Any]:
    """The script turn for a request to a model without a script (see the module docstring).

    ``last_user`` is the index of the last real user message (-1: none), ``user_text`` its text.
    """
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    results = tool_results(messages, last_user, api)
    tools = offered_tools(body)
    if results:
        return {"text": " ".join(_sentence(*r) for r in results)}
    if not results and last_user >= 0:
        if CALCULATOR in tools and (expression := find_expression(user_text)) is not None:
            return {"tool_calls": [{"name": CALCULATOR, "arguments": {"expression": expression}}]}
        if CURRENT_TIME in tools and asks_for_time(user_text):
            return {"tool_calls": [{"name": CURRENT_TIME, "arguments": {}}]}
    return {"text": f"You said: {user_text}"}
