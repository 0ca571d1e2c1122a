"""The gateway's HTTP routes: OpenAI (``/v1``) and health."""
