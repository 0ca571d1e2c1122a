"""A small synchronous client of the gateway's admin API (``/admin/v1``)."""

from __future__ import annotations

from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8080"
ADMIN_PREFIX = "/admin/v1"


class CliError(Exception):
    """Something the operator must see: an API error envelope's message, or an unreachable gateway."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class AdminClient:
    """Sends admin calls with ``Authorization: Bearer <admin token>``; answers the decoded JSON body."""

    def __init__(
        self, url: str, admin_token: str, *, transport: httpx.BaseTransport | None = None, timeout: float = 30.0
    ) -> None:
        self._http = httpx.Client(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {admin_token}", "User-Agent": "switchboard-cli"},
            transport=transport,
            timeout=timeout,
        )
        self.url = url

    def close(self) -> None:
        self._http.close()

    def call(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        """``method`` ``/admin/v1`` + ``path``; the JSON answer (``None`` for 204), :class:`CliError` on failure."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._http.request(method, ADMIN_PREFIX + path, json=json, params=query or None)
        except httpx.HTTPError as exc:
            # Never the request itself in the message: it carries the admin token's header.
            raise CliError(f"cannot reach the gateway at {self.url}: {type(exc).__name__}") from exc
        if response.status_code == 204 or not response.content:
            if response.is_error:
                raise CliError(f"HTTP {response.status_code}", response.status_code)
            return None
        try:
            body = response.json()
        except ValueError as exc:
            raise CliError(f"HTTP {response.status_code}: the answer is not JSON", response.status_code) from exc
        if response.is_error:
            raise CliError(_error_message(body, response.status_code), response.status_code)
        return body


def _error_message(body: Any, status: int) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        message = str(error["message"])
        if error.get("param"):
            message += f" (param: {error['param']})"
        return f"HTTP {status}: {message}"
    return f"HTTP {status}"
