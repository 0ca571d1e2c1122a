"""What the model reads of an MCP tool's result."""

from __future__ import annotations

import mcp_types
import pytest

from runner.tools.mcp import render_result

pytestmark = pytest.mark.unit


def result(*content: mcp_types.ContentBlock, structured: object = None) -> mcp_types.CallToolResult:
    return mcp_types.CallToolResult(content=list(content), structured_content=structured)


def text(t: str) -> mcp_types.TextContent:
    return mcp_types.TextContent(type="text", text=t)


def test_text_blocks_then_structured_content_as_json() -> None:
    got = render_result(result(text("first"), text("second"), structured={"rows": [1, 2]}), 1000)
    assert got == 'first\nsecond\n{"rows":[1,2]}'


@pytest.mark.parametrize(
    ("blocks", "structured"),
    [
        ([text('{\n  "sum": 5\n}')], {"sum": 5}),  # the same JSON, formatted otherwise
        ([text("hello")], {"result": "hello"}),  # the SDK's servers wrap a plain value
    ],
)
def test_structured_content_that_repeats_the_text_is_not_sent_twice(blocks: list, structured: object) -> None:  # type: ignore[type-arg]
    assert render_result(result(*blocks, structured=structured), 1000) == blocks[0].text


def test_structured_content_alone_is_the_result() -> None:
    assert render_result(result(structured={"ok": True}), 1000) == '{"ok":true}'


def test_other_content_is_named_not_sent() -> None:
    image = mcp_types.ImageContent(type="image", data="aGk=", mime_type="image/png")
    assert render_result(result(text("see"), image), 1000) == "see\n[image content omitted]"


def test_a_long_result_is_cut_and_says_so() -> None:
    got = render_result(result(text("x" * 5000)), 1000)
    assert got.startswith("x" * 1000) and got.endswith("[truncated: 4000 more characters]")
    assert len(got) < 1100
