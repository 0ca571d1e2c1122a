"""Provider adapters (OpenAI-compatible, Anthropic) behind one neutral interface."""

from __future__ import annotations

from ..connections import Connection
from .base import (
    CallSpec,
    Chunk,
    FinishChunk,
    OpaqueBlock,
    Provider,
    ReasoningChunk,
    TextChunk,
    ToolCallChunk,
    ToolSpec,
    UsageChunk,
)


def build_provider(conn: Connection, timeout_s: float) -> Provider:
    """One SDK client per connection, so its HTTP connection pool is shared by every run."""
    if conn.kind == "anthropic":
        from .anthropic_provider import AnthropicProvider

        return AnthropicProvider(conn, timeout_s)
    from .openai_provider import OpenAIProvider

    return OpenAIProvider(conn, timeout_s)


__all__ = [
    "CallSpec",
    "Chunk",
    "FinishChunk",
    "OpaqueBlock",
    "Provider",
    "ReasoningChunk",
    "TextChunk",
    "ToolCallChunk",
    "ToolSpec",
    "UsageChunk",
    "build_provider",
]
