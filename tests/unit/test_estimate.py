"""Admission's prompt bound: never below what a provider can bill, for any script or content."""

from __future__ import annotations

import pytest

from contracts import ChatMessage, FunctionCall, ToolCall
from contracts.estimate import (
    DEFAULT_IMAGE_TOKENS,
    MESSAGE_OVERHEAD,
    REQUEST_OVERHEAD,
    TOOL_ALLOWANCE,
    image_tokens,
    prompt_tokens_bound,
    text_tokens,
)

pytestmark = pytest.mark.unit


def user(content: object) -> ChatMessage:
    return ChatMessage(role="user", content=content)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "at_least"),
    [
        ("hello world", 11),
        ("你好世界" * 250, 3000),  # CJK: up to a token per character and more; 3 bytes each
        ("こんにちは", 15),
        ("한국어", 9),
        ("😀" * 10, 40),  # an emoji is 4 bytes, and byte-level tokenizers can spend a token on each
        ("ä" * 5, 10),
    ],
)
def test_text_is_bounded_by_its_utf8_bytes(text: str, at_least: int) -> None:
    assert text_tokens(text) == len(text.encode()) >= at_least


def test_characters_over_four_would_have_undercounted_cjk() -> None:
    text = "汉字" * 500
    assert prompt_tokens_bound([user(text)], model="m") >= 3 * len(text) > len(text) // 4


def test_images_at_the_providers_worst_case() -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}}
    parts = [{"type": "text", "text": "what is this?"}, *[image] * 100]
    bound = prompt_tokens_bound([user(parts)], model="gpt-4o-mini")
    assert bound >= 100 * (2_833 + 8 * 5_667)
    # 25,000 tokens reported for 100 images (250 each) is far inside the bound of any known model
    for model in ("gpt-4o", "gpt-4.1-mini", "claude-sonnet-4", "llava-local", "openai/gpt-4o-mini"):
        assert prompt_tokens_bound([user(parts)], model=model) >= 25_000


@pytest.mark.parametrize(
    ("model", "tokens"),
    [
        ("gpt-4o-mini", 48_169),
        ("gpt-4o-mini-2024-07-18", 48_169),
        ("openrouter/openai/gpt-4o-mini", 48_169),
        ("gpt-4o", 1_445),
        ("gpt-4.1-nano", 3_779),
        ("GPT-4.1-MINI", 2_489),
        ("claude-3-5-sonnet-latest", 4_800),
        ("qwen2-vl-7b", DEFAULT_IMAGE_TOKENS),
    ],
)
def test_image_tokens_by_longest_model_prefix(model: str, tokens: int) -> None:
    assert image_tokens(model) == tokens
    assert image_tokens("unknown", default=7) == 7


def test_every_part_of_a_message_counts() -> None:
    call = ToolCall(id="call_1", function=FunctionCall(name="lookup", arguments='{"q": "' + "x" * 100 + '"}'))
    messages = [
        ChatMessage(role="assistant", content=None, tool_calls=[call]),
        ChatMessage(role="tool", tool_call_id="call_1", content="r" * 50),
        user([{"type": "input_audio", "input_audio": {"data": "A" * 4000, "format": "wav"}}]),
    ]
    bound = prompt_tokens_bound(messages, model="m", instructions="be brief", tools=2)
    assert bound >= REQUEST_OVERHEAD + 3 * MESSAGE_OVERHEAD + 100 + 50 + 4000 + len("be brief") + 2 * TOOL_ALLOWANCE
    # Tool schemas given as text count by their bytes instead of the allowance
    with_schemas = prompt_tokens_bound(messages, model="m", instructions="be brief", tools=["s" * 10])
    assert with_schemas == bound - 2 * TOOL_ALLOWANCE + 10
