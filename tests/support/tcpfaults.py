"""Network faults on loopback, for outage tests: a TCP proxy that forwards, or black-holes (connections
are accepted and every byte either way is dropped, so a client waits for answers that never come), and
a port nobody listens on (connections refused). Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from urllib.parse import urlparse


def closed_port() -> int:
    """A loopback port nobody listens on (bound once, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FaultyProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target`` (host, port) until :meth:`hang`; :meth:`forward` heals.
    With no target it is a black hole from the start."""

    def __init__(self, target: tuple[str, int] | None = None) -> None:
        self.target = target
        self.hanging = target is None
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def url(self, template: str = "redis://127.0.0.1/0") -> str:
        """``template`` (a Redis URL: scheme, database) pointed at this proxy."""
        return urlparse(template)._replace(netloc=f"127.0.0.1:{self.port}").geturl()

    def hang(self) -> None:
        """From now on every byte is dropped, on open connections too; new ones are still accepted."""
        self.hanging = True

    def forward(self) -> None:
        assert self.target is not None, "a black hole has nowhere to forward to"
        self.hanging = False

    async def start(self) -> FaultyProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            if self.target is not None:
                upstream = await asyncio.open_connection(*self.target)
                self._writers.add(upstream[1])
                pipes = [self._pipe(reader, upstream[1]), self._pipe(upstream[0], writer)]
            else:
                pipes = [self._pipe(reader, None)]
            tasks = [asyncio.create_task(p) for p in pipes]
            self._tasks.update(tasks)
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._tasks.difference_update(tasks)
        except OSError:
            pass
        finally:
            for w in (writer, upstream[1] if upstream else None):
                if w is not None:
                    self._writers.discard(w)
                    w.close()

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter | None) -> None:
        with contextlib.suppress(OSError):
            while data := await src.read(65536):
                if self.hanging or dst is None:
                    continue  # black-holed: the bytes are gone
                dst.write(data)
                await dst.drain()


@contextlib.asynccontextmanager
async def faulty_proxy(target_url: str | None = None) -> AsyncIterator[FaultyProxy]:
    """A :class:`FaultyProxy` to the host and port of ``target_url`` (a black hole when ``None``)."""
    target = None
    if target_url is not None:
        u = urlparse(target_url)
        target = (u.hostname or "127.0.0.1", u.port or 6379)
    proxy = await FaultyProxy(target).start()
    try:
        yield proxy
    finally:
        await proxy.close()
