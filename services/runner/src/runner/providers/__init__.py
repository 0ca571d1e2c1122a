"""Provider adapters (OpenAI-compatible, Anthropic) behind one neutral interface."""

from __future__ import annotations

from typing import Any

from ..connections import Connection
from .base import (
    PAUSE,
    CallSpec,
    Chunk,
    FinishChunk,
    ForcedTool,
    OpaqueBlock,
    Pause,
    Provider,
    ReasoningChunk,
    ResponseInfo,
    TextChunk,
    ToolCallChunk,
    ToolChoice,
    ToolSpec,
    UsageChunk,
)


def response_format_problem(kind: str, response_format: dict[str, Any] | None) -> str | None:
    """Why a connection of ``kind`` cannot honour ``response_format`` (checked before the run starts,
    so the client gets a 400 rather than a broken answer); ``None`` when it can."""
    if kind == "anthropic":
        from .anthropic_provider import response_format_problem as anthropic_problem

        return anthropic_problem(response_format)
    return None  # OpenAI-compatible servers take it as it was sent


def build_provider(conn: Connection, timeout_s: float) -> Provider:
    """One SDK client per connection, so its HTTP connection pool is shared by every run."""
    if conn.kind == "anthropic":
        from .anthropic_provider import AnthropicProvider

        return AnthropicProvider(conn, timeout_s)
    from .openai_provider import OpenAIProvider

    return OpenAIProvider(conn, timeout_s)


__all__ = [
    "PAUSE",
    "CallSpec",
    "Chunk",
    "FinishChunk",
    "ForcedTool",
    "OpaqueBlock",
    "Pause",
    "Provider",
    "ReasoningChunk",
    "ResponseInfo",
    "TextChunk",
    "ToolCallChunk",
    "ToolChoice",
    "ToolSpec",
    "UsageChunk",
    "build_provider",
    "response_format_problem",
]
