"""A deterministic OpenAI- and Anthropic-compatible LLM server."""
