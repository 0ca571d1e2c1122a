"""Token usage: normalising each provider's numbers, and estimating when the provider sent none.

Normalised (:class:`contracts.TokenUsage`): ``input_tokens`` excludes cache reads and writes;
``reasoning_tokens`` is part of ``output_tokens``. OpenAI's ``prompt_tokens`` INCLUDE the cached
tokens, Anthropic's ``input_tokens`` do NOT: getting this wrong bills cached tokens twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from contracts import ChatMessage, TokenUsage


def _get(obj: Any, name: str) -> Any:
    """A field of an SDK object or a plain dict (``None`` when absent)."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    value = getattr(obj, name, None)
    if value is None:
        extra = getattr(obj, "model_extra", None) or {}
        value = extra.get(name)
    return value


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and value > 0 else 0


def from_openai(usage: Any) -> TokenUsage:
    """OpenAI ``usage``: input = prompt - cached - cache_write; cache_read = cached."""
    prompt = _int(_get(usage, "prompt_tokens"))
    details = _get(usage, "prompt_tokens_details")
    cached = _int(_get(details, "cached_tokens"))
    cache_write = _int(_get(details, "cache_write_tokens"))
    output = _int(_get(usage, "completion_tokens"))
    reasoning = _int(_get(_get(usage, "completion_tokens_details"), "reasoning_tokens"))
    return TokenUsage(
        input_tokens=max(0, prompt - cached - cache_write),
        cache_read_tokens=cached,
        cache_write_tokens=cache_write,
        output_tokens=output,
        reasoning_tokens=min(reasoning, output),
    )


def from_anthropic_start(usage: Any) -> TokenUsage:
    """Anthropic ``message_start`` usage: the input side (``input_tokens`` excludes the cache)."""
    return TokenUsage(
        input_tokens=_int(_get(usage, "input_tokens")),
        cache_write_tokens=_int(_get(usage, "cache_creation_input_tokens")),
        cache_read_tokens=_int(_get(usage, "cache_read_input_tokens")),
    )


def from_anthropic_delta(usage: Any) -> TokenUsage:
    """Anthropic ``message_delta`` usage: the output (cumulative). Input fields, when a
    server repeats them here, are the same cumulative numbers as in ``message_start``; thinking
    tokens (``output_tokens_details.thinking_tokens``) are part of the output, like OpenAI's reasoning."""
    output = _int(_get(usage, "output_tokens"))
    return TokenUsage(
        input_tokens=_int(_get(usage, "input_tokens")),
        cache_write_tokens=_int(_get(usage, "cache_creation_input_tokens")),
        cache_read_tokens=_int(_get(usage, "cache_read_input_tokens")),
        output_tokens=output,
        reasoning_tokens=min(_int(_get(_get(usage, "output_tokens_details"), "thinking_tokens")), output),
    )


def merge(current: TokenUsage | None, update: TokenUsage) -> TokenUsage:
    """Combine partial reports of one call: each field is cumulative, so the larger value wins."""
    if current is None:
        return update
    return TokenUsage(
        input_tokens=max(current.input_tokens, update.input_tokens),
        cache_write_tokens=max(current.cache_write_tokens, update.cache_write_tokens),
        cache_read_tokens=max(current.cache_read_tokens, update.cache_read_tokens),
        output_tokens=max(current.output_tokens, update.output_tokens),
        reasoning_tokens=max(current.reasoning_tokens, update.reasoning_tokens),
    )


def prompt_chars(messages: Iterable[ChatMessage], extra: Iterable[str] = ()) -> int:
    """Characters of everything sent: message text, tool-call arguments, tool schemas …"""
    n = 0
    for m in messages:
        n += len(m.text())
        for call in m.tool_calls or ():
            n += len(call.function.name) + len(call.function.arguments)
    return n + sum(len(s) for s in extra)


def estimate_prompt_tokens(chars: int) -> int:
    """≈ 4 characters per token, at least 1: a likely count, for billing a call whose provider never
    reported its usage (the bound that admission reserves is :mod:`contracts.estimate`'s)."""
    return max(1, chars // 4)


def estimate(prompt_chars_sent: int, deltas_received: int) -> TokenUsage:
    """The usage of a call whose provider never reported it: prompt ≈ chars/4, output = deltas received."""
    return TokenUsage(input_tokens=estimate_prompt_tokens(prompt_chars_sent), output_tokens=deltas_received)


def total(usages: Iterable[TokenUsage]) -> TokenUsage:
    result = TokenUsage()
    for u in usages:
        result = result + u
    return result
