"""How many prompt tokens a model call can cost at most: the number admission reserves for.

Admission reserves a run's worst case before any model is called, and the runner extends the
reservation with the same bound before each further call. The bound has to be an *upper* bound for
every script and every kind of content, or concurrent requests can overdraw a balance by the
difference (a "characters ÷ 4" estimate under-counts Chinese, Japanese, Korean, emoji, and images).

- **Text: one token per UTF-8 byte at most.** Every tokenizer in use (OpenAI's and Anthropic's
  byte-level BPE, SentencePiece with byte fallback as in Llama and Qwen) makes no token of less than
  one byte, so a text's UTF-8 length bounds its token count whatever the script. English costs about
  a quarter of that, which only means a larger hold while the run lasts: settlement releases what
  was not spent.
- **Per message:** :data:`MESSAGE_OVERHEAD` tokens for the role and framing tokens providers add,
  and :data:`REQUEST_OVERHEAD` once for the reply's priming.
- **Images:** the provider's worst case per image whatever its size or ``detail`` (an image of
  unknown size is assumed to be the largest the provider accepts): :func:`image_tokens` looks the
  model up in :data:`IMAGE_TOKENS`; a model it does not know gets the caller's default.
- **Audio** (``input_audio``): the bytes of its base64 data, far above what any provider bills for
  the seconds it holds.
- **Tool schemas** the client never sees (the agent's own tools): the caller passes their text when
  it has it (the runner), or :data:`TOOL_ALLOWANCE` tokens a tool (the gateway, which knows only names).

Pure functions: no I/O, nothing framework-specific.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .runs import ChatMessage

MESSAGE_OVERHEAD = 8
REQUEST_OVERHEAD = 16
#: Tokens allowed for one server-side tool's name, description and JSON schema when only its name is known.
TOOL_ALLOWANCE = 1024
#: Images of a model not in :data:`IMAGE_TOKENS`: large enough for the open vision models that tile
#: high-resolution images (Qwen2-VL's default maximum is 16,384 tokens an image).
DEFAULT_IMAGE_TOKENS = 16_384

#: Worst-case tokens of one image, by model name prefix (the longest matching prefix wins). OpenAI's
#: tiled models: an image is fitted within 2048×2048, then its short side to 768, so at most 8 tiles
#: of 512 px (gpt-4o: 85 + 8 × 170; gpt-4o-mini: 2,833 + 8 × 5,667). Patch-based models: at most
#: 1,536 patches of 32 px, times the model's multiplier. Anthropic: about width × height / 750 for
#: images up to its maximum size, so a conservative 4,800.
IMAGE_TOKENS: Mapping[str, int] = {
    "gpt-4o-mini": 2_833 + 8 * 5_667,
    "gpt-4o": 85 + 8 * 170,
    "chatgpt-4o": 85 + 8 * 170,
    "gpt-4-turbo": 85 + 8 * 170,
    "gpt-4.5": 85 + 8 * 170,
    "gpt-4.1": 85 + 8 * 170,
    "gpt-4.1-mini": 2_489,  # 1,536 × 1.62
    "gpt-4.1-nano": 3_779,  # 1,536 × 2.46
    "gpt-5": 85 + 8 * 170,
    "gpt-5-mini": 2_489,
    "gpt-5-nano": 3_779,
    "o1": 85 + 8 * 170,
    "o3": 85 + 8 * 170,
    "o4-mini": 2_642,  # 1,536 × 1.72
    "claude": 4_800,
}

_TEXT_PARTS = frozenset({"text", "input_text", "output_text", "refusal"})
_IMAGE_PARTS = frozenset({"image_url", "input_image"})


def text_tokens(text: str) -> int:
    """At most one token per UTF-8 byte (see the module docstring)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def image_tokens(model: str, default: int = DEFAULT_IMAGE_TOKENS) -> int:
    """The worst case of one image for ``model`` (a ``vendor/`` prefix, as routers spell models, is ignored)."""
    name = model.rsplit("/", 1)[-1].lower()
    best = ""
    for prefix in IMAGE_TOKENS:
        if name.startswith(prefix) and len(prefix) > len(best):
            best = prefix
    return IMAGE_TOKENS[best] if best else default


def _part_tokens(part: Mapping[str, Any], per_image: int) -> int:
    kind = part.get("type")
    if kind in _TEXT_PARTS:
        value = part.get("text", part.get("refusal", ""))
        return text_tokens(value if isinstance(value, str) else str(value))
    if kind in _IMAGE_PARTS:
        return per_image
    # input_audio and anything else: every byte of what is sent, base64 data included.
    return text_tokens(repr(part))


def message_tokens(message: ChatMessage, per_image: int) -> int:
    """The bound of one message: its content, its tool calls, and the framing."""
    n = MESSAGE_OVERHEAD
    content = message.content
    if isinstance(content, str):
        n += text_tokens(content)
    elif content:
        n += sum(_part_tokens(p, per_image) for p in content)
    if message.name:
        n += text_tokens(message.name)
    for call in message.tool_calls or ():
        n += MESSAGE_OVERHEAD + text_tokens(call.id) + text_tokens(call.function.name)
        n += text_tokens(call.function.arguments)
    if message.tool_call_id:
        n += text_tokens(message.tool_call_id)
    return n


def prompt_tokens_bound(
    messages: Iterable[ChatMessage],
    *,
    model: str,
    instructions: str | None = None,
    tools: int | Iterable[str] = 0,
    image_default: int = DEFAULT_IMAGE_TOKENS,
) -> int:
    """At most how many prompt tokens one model call on ``messages`` can cost.

    ``tools`` is either the texts of the tool schemas sent with the call, or a count of tools whose
    schemas are unknown here (each allowed :data:`TOOL_ALLOWANCE`).
    """
    per_image = image_tokens(model, image_default)
    n = REQUEST_OVERHEAD + sum(message_tokens(m, per_image) for m in messages)
    if instructions:
        n += MESSAGE_OVERHEAD + text_tokens(instructions)
    if isinstance(tools, int):
        n += tools * TOOL_ALLOWANCE
    else:
        n += sum(text_tokens(t) for t in tools)
    return n
