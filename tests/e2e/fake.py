"""Driving the fake LLM of a test stack over its control routes (``/_fake/...``), and small waits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx

T = TypeVar("T")


class FakeLLM:
    """Scripts, request records and waits of the fake LLM at ``url`` (without ``/v1``)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    async def script(self, model: str, turns: list[dict[str, Any]]) -> None:
        """Set what ``model`` answers: turn *i* is the answer to the *i*-th model call of a run."""
        async with httpx.AsyncClient(timeout=5) as http:
            r = await http.put(f"{self.url}/_fake/scripts/{model}", json={"turns": turns})
            r.raise_for_status()

    async def requests(self, model: str) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(timeout=5) as http:
            r = await http.get(f"{self.url}/_fake/requests", params={"model": model})
            r.raise_for_status()
            body = r.json()
            return body["data"] if isinstance(body, dict) and "data" in body else body  # type: ignore[no-any-return]

    async def wait(self, model: str, status: str, timeout: float = 5.0) -> dict[str, Any]:
        """Long-poll until a request to ``model`` reaches ``status`` (``disconnected``, ``completed`` …)."""
        async with httpx.AsyncClient(timeout=timeout + 5) as http:
            r = await http.get(
                f"{self.url}/_fake/wait", params={"model": model, "status": status, "timeout": str(timeout)}
            )
            assert r.status_code == 200, f"fake LLM never saw {model} {status}: {r.status_code} {r.text}"
            return r.json()  # type: ignore[no-any-return]


async def eventually(
    probe: Callable[[], Awaitable[T]], check: Callable[[T], bool], timeout: float = 10.0, interval: float = 0.1
) -> T:
    """Poll ``probe`` until ``check`` holds on its result; fail with the last result after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if check(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last value: {value!r}")
        await asyncio.sleep(interval)
