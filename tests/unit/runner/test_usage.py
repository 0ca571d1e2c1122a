from __future__ import annotations

import pytest

from contracts import ChatMessage, TokenUsage
from runner.usage import (
    estimate,
    estimate_prompt_tokens,
    from_anthropic_delta,
    from_anthropic_start,
    from_openai,
    merge,
    prompt_chars,
)

pytestmark = pytest.mark.unit


def test_openai_prompt_tokens_include_the_cache() -> None:
    u = from_openai(
        {
            "prompt_tokens": 100,
            "completion_tokens": 20,
            "prompt_tokens_details": {"cached_tokens": 60, "cache_write_tokens": 10},
            "completion_tokens_details": {"reasoning_tokens": 5},
        }
    )
    assert u == TokenUsage(
        input_tokens=30, cache_read_tokens=60, cache_write_tokens=10, output_tokens=20, reasoning_tokens=5
    )
    assert u.prompt_tokens == 100


def test_openai_without_details() -> None:
    assert from_openai({"prompt_tokens": 7, "completion_tokens": 3}) == TokenUsage(input_tokens=7, output_tokens=3)


def test_openai_sdk_object() -> None:
    from openai.types import CompletionUsage

    sdk = CompletionUsage.model_validate(
        {
            "prompt_tokens": 50,
            "completion_tokens": 4,
            "total_tokens": 54,
            "prompt_tokens_details": {"cached_tokens": 20, "cache_write_tokens": 5},
        }
    )
    assert from_openai(sdk) == TokenUsage(input_tokens=25, cache_read_tokens=20, cache_write_tokens=5, output_tokens=4)


def test_anthropic_input_excludes_the_cache() -> None:
    start = from_anthropic_start(
        {"input_tokens": 10, "cache_creation_input_tokens": 30, "cache_read_input_tokens": 60, "output_tokens": 1}
    )
    assert start == TokenUsage(input_tokens=10, cache_write_tokens=30, cache_read_tokens=60)
    final = merge(start, from_anthropic_delta({"output_tokens": 7}))
    assert final == TokenUsage(input_tokens=10, cache_write_tokens=30, cache_read_tokens=60, output_tokens=7)
    assert final.prompt_tokens == 100


def test_estimates() -> None:
    msgs = [ChatMessage(role="user", content="x" * 41)]
    assert prompt_chars(msgs, ["abc"]) == 44
    assert estimate_prompt_tokens(0) == 1
    assert estimate(44, 5) == TokenUsage(input_tokens=11, output_tokens=5)
