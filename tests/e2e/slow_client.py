"""A client that stops reading: a raw socket with a small receive buffer, so that what the gateway sends
while it reads nothing piles up in the gateway, not in the client's kernel."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

#: The client's receive buffer (the kernel doubles it): a few KiB, so the gateway soon cannot send more.
RECEIVE_BUFFER = 4096


@dataclass
class Answer:
    status: int
    body: bytes
    #: Whether the body arrived whole (the last chunk of the chunked encoding was read).
    complete: bool


class StalledClient:
    """A POST whose answer is read only when the test says so (:meth:`read_all`)."""

    def __init__(self, base_url: str, path: str, body: dict[str, object], headers: dict[str, str]) -> None:
        url = urlsplit(base_url)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        self.sock.connect((url.hostname or "127.0.0.1", url.port or 80))
        data = json.dumps(body).encode()
        lines = [
            f"POST {path} HTTP/1.1",
            f"Host: {url.netloc}",
            "Content-Type: application/json",
            f"Content-Length: {len(data)}",
            "Connection: close",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
        self.server_port = self.sock.getpeername()[1]
        self.client_port = self.sock.getsockname()[1]

    def read_all(self, timeout_s: float) -> Answer:
        """Read until the gateway closes the connection (or ``timeout_s`` passes), then parse the answer."""
        self.sock.settimeout(1.0)
        deadline = time.monotonic() + timeout_s
        raw = bytearray()
        while time.monotonic() < deadline:
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                break
            if not chunk:
                break
            raw += chunk
        self.sock.close()
        return parse(bytes(raw))

    def close(self) -> None:
        self.sock.close()


def parse(raw: bytes) -> Answer:
    """An HTTP/1.1 response with a chunked body: its status, the body, and whether it ended properly."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" not in head.lower():
        return Answer(status, rest, True)
    body = bytearray()
    while True:
        size_line, sep, rest = rest.partition(b"\r\n")
        if not sep:
            return Answer(status, bytes(body), False)
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return Answer(status, bytes(body), True)
        if len(rest) < size + 2:
            body += rest[:size]
            return Answer(status, bytes(body), False)
        body += rest[:size]
        rest = rest[size + 2 :]


def sse_data(body: bytes) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order."""
    out = []
    for frame in body.split(b"\n\n"):
        for line in frame.split(b"\n"):
            if line.startswith(b"data: "):
                out.append(line[6:].decode())
    return out


def chat_text(body: bytes) -> str:
    """The text a chat stream carried."""
    text = []
    for data in sse_data(body):
        if data == "[DONE]":
            continue
        chunk = json.loads(data)
        for choice in chunk.get("choices") or []:
            text.append((choice.get("delta") or {}).get("content") or "")
    return "".join(text)


def rss_bytes(pid: int) -> int:
    """A process' resident memory."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def kernel_send_queue(server_port: int, client_port: int) -> int:
    """Bytes the kernel holds unsent on the server's side of a loopback connection (``/proc/net/tcp``)."""
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, remote = fields[1], fields[2]
            if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == client_port:
                return int(fields[4].split(":")[0], 16)
    raise AssertionError(f"no connection {server_port} -> {client_port} in /proc/net/tcp")
