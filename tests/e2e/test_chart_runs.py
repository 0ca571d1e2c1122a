"""The Helm chart proven without a cluster: what it renders runs, as Kubernetes would run it.

The chart is rendered by Helm's own library (as ``make helm-lint`` does) with values pointing at a NATS
server of the run's own (a namespace too) whose configuration includes the chart's rendered ``auth.conf``,
as an operator's NATS would (so every service connects as its own NATS user and the server refuses what
that user may not publish or subscribe), this machine's PostgreSQL (a fresh database, given as
``postgresql.url`` at install time) and Redis, the fake LLM enabled as the provider, and every port set
to a free local one through the values (``services.<name>.port``; the fake LLM's ``--port`` argument
too). Then, playing the kubelet for each rendered Job and Deployment:

- the image is the environment built exactly as that service's Dockerfile builds it
  (:mod:`tests.support.images`: its own pinned requirements, no development packages);
- the process is the container's ``command`` and ``args`` (the image's ``CMD`` where none), in the
  image's ``WORKDIR``, with the image's ``ENV`` and exactly the container's ``env`` and ``envFrom``,
  read from the rendered Secrets and ConfigMaps;
- every ``volumeMount`` is materialised in a directory of its own (an ``emptyDir`` empty, a Secret's or
  ConfigMap's keys as files), and a container path under a mount, in a variable or an argument, is
  rewritten to that directory (``/tmp``, an ``emptyDir``, becomes ``TMPDIR``);
- a rendered Service's DNS name in a variable (``http://sb-fakellm:…``) resolves to 127.0.0.1, where
  its pods listen on the same port.
- the objects an operator makes beside the release and names in the values (``OPERATOR_OBJECTS``: the
  MCP servers' Secret, a ConfigMap holding billing's price list) are read like the rendered ones, so
  a Secret and a ConfigMap mounted as files are run through too.

The migration hook Job runs first (its init containers in order, then its container) and must exit 0;
then every Deployment starts at once (Kubernetes orders nothing) and must become ready on the readiness
probe's path and port; a chat completion and a Responses request through the gateway succeed (the
openai SDK); every pod stopped at once, as the kubelet does (its ``preStop`` command, then SIGTERM),
ends with exit code 0 within its ``terminationGracePeriodSeconds``. Throughout, NATS refused nothing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_python as helm
import httpx
import openai
import pytest
import yaml

from devstack.embedded import nats_server_binary
from devstack.natsclean import clean_namespace
from devstack.procs import ManagedProcess, free_port, tail, tcp_accepts
from devstack.seed import AdminClient
from tests.support.images import IMAGES, ROOT, Image, env_pairs, stages
from tests.support.stack import _create_databases, _drop_databases, database_url

# Building the five environments is most of it (about a minute and a half on two idle cores); each
# wait inside has its own, shorter bound.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

CHART = ROOT / "deploy" / "helm" / "switchboard"
RELEASE = "sb"
JOB_TIMEOUT_S = 120.0
READY_TIMEOUT_S = 90.0
Manifest = dict[str, Any]
#: Objects an operator makes beside the release, which its values name: the MCP servers' Secret (no
#: server) and a price list of one's own, whose model prefix the test's agent uses.
PRICES_DIR = "/etc/switchboard/prices"
PRICED_MODEL_PREFIX = "chart-"
OPERATOR_OBJECTS: list[Manifest] = [
    {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "sb-mcp-servers"},
        "data": {"servers.json": base64.b64encode(b"{}").decode()},
    },
    {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "sb-prices"},
        "data": {"prices.yaml": f'models:\n  {PRICED_MODEL_PREFIX}: {{input: "3", output: "7"}}\n'},
    },
]


# --- rendering -----------------------------------------------------------------------------------
def chart_values(ports: dict[str, int], *, nats_url: str, namespace: str, db_url: str, redis_url: str) -> Manifest:
    """Install-time values for this machine: its servers as external URLs, the fake LLM as the provider,
    every service on a free port (only through the values: the manifests are run as rendered)."""
    services: dict[str, Any] = {name: {"port": port} for name, port in ports.items()}
    fake = services["fakellm"]
    fake.update(enabled=True, args=["--host", "127.0.0.1", "--port", str(ports["fakellm"])])
    # Config files and secrets the operator made (OPERATOR_OBJECTS), mounted where the chart says.
    services["billing"].update(
        env={"BILLING_PRICING_FILE": f"{PRICES_DIR}/prices.yaml"},
        extraVolumes=[{"name": "prices", "configMap": {"name": "sb-prices"}}],
        extraVolumeMounts=[{"name": "prices", "mountPath": PRICES_DIR, "readOnly": True}],
    )
    return {
        "mcp": {"existingSecret": "sb-mcp-servers"},
        "nats": {"external": {"url": nats_url}, "namespace": namespace, "streamReplicas": 1},  # one server here
        "postgresql": {"url": db_url},
        "redis": {"url": redis_url},
        "secrets": {"adminToken": secrets.token_hex(32)},
        "services": services,
    }


def render(values: Manifest) -> list[Manifest]:
    """The manifests ``helm install`` would apply (hooks included), as Helm's library renders them."""
    with helm.Chart.load(str(CHART)) as chart:
        files = chart.render(values, name=RELEASE, namespace="switchboard", is_install=True)
    return [
        doc
        for path, text in sorted(files.items())
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def of_kind(docs: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


# --- playing the kubelet -------------------------------------------------------------------------
class Objects:
    """The rendered Secrets and ConfigMaps, as a pod sees them: name → key → bytes."""

    def __init__(self, docs: list[Manifest]) -> None:
        self.secrets = {
            name: {
                **{k: base64.b64decode(v) for k, v in (d.get("data") or {}).items()},
                **{k: v.encode() for k, v in (d.get("stringData") or {}).items()},
            }
            for name, d in of_kind(docs, "Secret").items()
        }
        self.config_maps = {
            name: {k: v.encode() for k, v in (d.get("data") or {}).items()}
            for name, d in of_kind(docs, "ConfigMap").items()
        }

    def source(self, kind: str, name: str) -> dict[str, bytes] | None:
        return (self.secrets if kind == "secret" else self.config_maps).get(name)


@dataclass
class Container:
    """One container, ready to run as a process: its command, environment, working directory and, for a
    container with a readiness probe, the port and URL the probe checks."""

    name: str
    image: Image
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    port: int | None = None
    ready_url: str | None = None


class Kubelet:
    """Turns a rendered pod template into processes, on this machine, the way a kubelet runs pods."""

    def __init__(self, docs: list[Manifest], images: dict[str, Image]) -> None:
        self.objects = Objects(docs)
        self.images = images
        # A Service's DNS name, short or qualified, resolves to where its pods listen: this machine.
        names = "|".join(re.escape(n) for n in of_kind(docs, "Service"))
        self._service_host = re.compile(rf"//({names})(\.[\w.-]+)?:") if names else None

    def image_of(self, spec: Manifest) -> Image:
        """``<repository>/<name>:<tag>`` → the environment built from ``<name>``'s Dockerfile."""
        repository = spec["image"].rpartition(":")[0]
        name = repository.rpartition("/")[2]
        assert name in self.images, f"{spec['name']}: no Dockerfile builds {spec['image']}"
        return self.images[name]

    def env_var(self, owner: str, entry: Manifest) -> str | None:
        """One ``env`` entry's value: ``value``, or a Secret's / ConfigMap's key (``None``: optional, absent)."""
        if "value" in entry:
            return str(entry["value"])
        source = entry.get("valueFrom") or {}
        (kind_key, ref), *more = source.items()
        assert not more and kind_key in ("secretKeyRef", "configMapKeyRef"), f"{owner}: {entry}"
        data = self.objects.source("secret" if kind_key == "secretKeyRef" else "configmap", ref["name"])
        if data is None or ref["key"] not in data:
            assert ref.get("optional"), f"{owner}: {entry['name']} refers to {ref}, which the chart did not render"
            return None
        return data[ref["key"]].decode()

    def mounts(self, pod: Manifest, spec: Manifest, where: Path) -> dict[str, Path]:
        """Every ``volumeMount`` materialised under ``where``: container path → directory or file here."""
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        mapped: dict[str, Path] = {}
        for mount in spec.get("volumeMounts") or []:
            volume = volumes[mount["name"]]
            target = where / mount["name"]
            if not target.exists():
                target.mkdir(parents=True)
                for kind in ("secret", "configMap"):
                    if kind in volume:
                        self._write(volume[kind], kind.lower(), target, spec["name"])
                assert {"emptyDir", "secret", "configMap"} & set(volume), f"{spec['name']}: volume {volume}"
            mapped[mount["mountPath"]] = target / mount["subPath"] if mount.get("subPath") else target
        return mapped

    def _write(self, source: Manifest, kind: str, target: Path, owner: str) -> None:
        name = source["secretName"] if kind == "secret" else source["name"]
        data = self.objects.source(kind, name)
        assert data is not None or source.get("optional"), f"{owner}: the {kind} {name} was not rendered"
        items = source.get("items") or [{"key": k, "path": k} for k in data or {}]
        for item in items:
            path = target / item["path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes((data or {})[item["key"]])

    def container(self, pod: Manifest, spec: Manifest, where: Path) -> Container:
        """What one container of ``pod`` runs, as a process of this machine."""
        image = self.image_of(spec)
        _, runtime = stages(image.name)
        mapped = self.mounts(pod, spec, where)

        def host(value: str) -> str:
            # A container path under a mount → its directory here (the longest mount path wins).
            for path in sorted(mapped, key=len, reverse=True):
                if value == path or value.startswith(path.rstrip("/") + "/"):
                    return str(mapped[path]) + value[len(path) :]
            if self._service_host is not None:
                value = self._service_host.sub("//127.0.0.1:", value)
            return value

        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(image.path("/app")), "LANG": "C.UTF-8"}
        for kind, args in runtime:
            if kind == "ENV":
                env.update({k: image.to_host(v) for k, v in env_pairs(args, env).items()})
        for source in spec.get("envFrom") or []:
            (kind_key, ref), *_ = ((k, v) for k, v in source.items() if k != "prefix")
            data = self.objects.source("secret" if kind_key == "secretRef" else "configmap", ref["name"])
            assert data is not None or ref.get("optional"), f"{spec['name']}: envFrom {ref} was not rendered"
            env.update({source.get("prefix", "") + k: v.decode() for k, v in (data or {}).items()})
        for entry in spec.get("env") or []:
            value = self.env_var(spec["name"], entry)
            if value is not None:
                env[entry["name"]] = host(value)
        if "/tmp" in mapped:
            env["TMPDIR"] = str(mapped["/tmp"])
        (cmd,) = [json.loads(args) for kind, args in runtime if kind == "CMD"]
        # Kubernetes: `command` replaces the image's entry point (and drops its CMD); `args` its CMD.
        argv = [*(spec.get("command") or cmd[:1]), *(spec.get("args") or ([] if spec.get("command") else cmd[1:]))]
        argv = [host(a) for a in argv]
        executable = shutil.which(argv[0], path=env["PATH"])
        assert executable is not None and Path(executable).is_relative_to(image.venv), f"{argv[0]} → {executable}"
        workdir = image.path(spec.get("workingDir") or next(args for kind, args in runtime if kind == "WORKDIR"))
        workdir.mkdir(parents=True, exist_ok=True)
        out = Container(spec["name"], image, [executable, *argv[1:]], env, workdir)
        probe = (spec.get("readinessProbe") or {}).get("httpGet")
        if probe:
            ports = {p.get("name"): p["containerPort"] for p in spec.get("ports") or []}
            out.port = ports[probe["port"]] if isinstance(probe["port"], str) else probe["port"]
            out.ready_url = f"http://127.0.0.1:{out.port}{probe['path']}"
        return out


# --- the run -------------------------------------------------------------------------------------
@dataclass
class Run:
    """What happened, for the tests to assert."""

    docs: list[Manifest]
    problems: list[str] = field(default_factory=list)
    job_steps: list[tuple[str, int | None]] = field(default_factory=list)
    ready: dict[str, int] = field(default_factory=dict)
    chat: str = ""
    response: str = ""
    priced: bool = False
    stops: dict[str, tuple[int | None, float, int]] = field(default_factory=dict)
    #: NATS connection name → the user it authenticated as; what the server refused (its log lines).
    nats_users: dict[str, str] = field(default_factory=dict)
    nats_violations: list[str] = field(default_factory=list)


def run_job(kubelet: Kubelet, job: Manifest, where: Path, run: Run) -> bool:
    """A Job's pod: its init containers in order, then its container; each must exit 0."""
    pod = job["spec"]["template"]["spec"]
    for spec in [*(pod.get("initContainers") or []), *pod["containers"]]:
        c = kubelet.container(pod, spec, where)
        log = where / f"{c.name}.log"
        with log.open("wb") as out:
            try:
                done = subprocess.run(
                    c.argv,
                    env=c.env,
                    cwd=c.cwd,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=JOB_TIMEOUT_S,
                    check=False,
                )
                code: int | None = done.returncode
            except subprocess.TimeoutExpired:
                code = None
        run.job_steps.append((c.name, code))
        if code != 0:
            run.problems.append(f"job {job['metadata']['name']}, {c.name}: exit {code}\n{tail(log, 40)}")
            return False
    return True


@dataclass
class Pod:
    """A Deployment's pod, running: its container's process, its grace period and its ``preStop`` command."""

    process: ManagedProcess
    grace_s: int
    pre_stop: list[str] | None
    env: dict[str, str]


def start_deployments(kubelet: Kubelet, docs: list[Manifest], where: Path) -> dict[str, Pod]:
    """Every Deployment's (single) container as a process, all at once (Kubernetes orders nothing)."""
    started: dict[str, Pod] = {}
    for name, deployment in of_kind(docs, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        (spec,) = pod["containers"]
        c = kubelet.container(pod, spec, where / name)
        assert c.ready_url, f"{name}: no readiness probe"
        process = ManagedProcess(
            name, c.argv, log_path=where / name / "run.log", env=c.env, ready_url=c.ready_url, cwd=c.cwd
        )
        process.start()
        pre_stop = (((spec.get("lifecycle") or {}).get("preStop") or {}).get("exec") or {}).get("command")
        started[name] = Pod(process, int(pod["terminationGracePeriodSeconds"]), pre_stop, c.env)
    return started


def wait_ready(started: dict[str, Pod], run: Run) -> None:
    def wait(item: tuple[str, Pod]) -> None:
        name, pod = item
        try:
            pod.process.wait_ready(READY_TIMEOUT_S)
            run.ready[name] = httpx.get(pod.process.ready_url or "", timeout=5).status_code
        except Exception as exc:
            run.problems.append(f"{name} not ready on {pod.process.ready_url}: {str(exc)[:2000]}")

    with ThreadPoolExecutor(max_workers=len(started)) as pool:
        list(pool.map(wait, started.items()))


def converse(gateway_url: str, admin_token: str, run: Run) -> None:
    """A user, a key and an agent over the admin API; then a chat completion and a Responses request."""
    with AdminClient(gateway_url, admin_token) as admin:
        user = admin.create_user(f"chart-{secrets.token_hex(3)}")
        key = admin.create_api_key(user["id"], "chart")
        admin.add_credits(user["id"], 1_000_000_000)
        agent = admin.create_agent(
            name="chart agent",
            provider="openai",
            model=f"{PRICED_MODEL_PREFIX}{secrets.token_hex(3)}",
            instructions="You are a test agent.",
            tools=[],
            owner_id=user["id"],
        )
        # Billing read the price list from the file mounted from the operator's ConfigMap.
        run.priced = any(PRICED_MODEL_PREFIX in json.dumps(item) for item in admin.iterate("/pricing"))
    client = openai.OpenAI(base_url=f"{gateway_url}/v1", api_key=key["key"], max_retries=0, timeout=30)
    try:
        # Keyed: the gateway's idempotency store (a key-value bucket and an object store) is used too.
        chat = client.chat.completions.create(
            model=agent["id"],
            messages=[{"role": "user", "content": "Hello"}],
            extra_headers={"Idempotency-Key": f"chart-{secrets.token_hex(8)}"},
        )
        run.chat = chat.choices[0].message.content or ""
        response = client.responses.create(model=agent["id"], input="Hello")
        assert response.status == "completed", response.status
        run.response = response.output_text
    finally:
        client.close()


def stop_all(started: dict[str, Pod], run: Run) -> None:
    """Every pod deleted at once (an uninstall), as the kubelet ends a container: its ``preStop`` command
    first (the gateway's wait for endpoints to drop it), then SIGTERM; SIGKILL once the grace period,
    which counts from the start of ``preStop``, is over."""

    def stop(item: tuple[str, Pod]) -> None:
        name, pod = item
        begun = time.monotonic()
        if pod.pre_stop and pod.process.running:
            subprocess.run(pod.pre_stop, env=pod.env, timeout=pod.grace_s, check=False)
        left = max(0.0, pod.grace_s - (time.monotonic() - begun))
        code = pod.process.stop(left) if pod.process.running else pod.process.exit_code
        run.stops[name] = (code, time.monotonic() - begun, pod.grace_s)

    with ThreadPoolExecutor(max_workers=max(1, len(started))) as pool:
        list(pool.map(stop, started.items()))


@contextlib.contextmanager
def servers_of_its_own(nats_url: str, postgres_url: str) -> Iterator[tuple[str, str]]:
    """A NATS namespace and one fresh database (catalog and billing share it, as the chart's do)."""
    namespace = f"chart{secrets.token_hex(4)}"
    database = f"sbchart_{namespace}"
    asyncio.run(_create_databases(postgres_url, [database]))
    try:
        yield namespace, database_url(postgres_url, database)
    finally:
        asyncio.run(_drop_databases(postgres_url, [database]))
        asyncio.run(clean_namespace(nats_url, namespace))


@contextlib.contextmanager
def nats_with_the_charts_users(docs: list[Manifest], port: int, monitor_port: int, where: Path) -> Iterator[Path]:
    """A nats-server of the run's own, its configuration including the rendered ``auth.conf`` (the
    ``<release>-nats-auth`` Secret) as an operator's NATS includes it: every service connects as its chart
    user, and the server refuses (and logs) whatever that user may not publish or subscribe. Yields its log."""
    where.mkdir(parents=True, exist_ok=True)
    auth = of_kind(docs, "Secret")[f"{RELEASE}-nats-auth"]["data"]["auth.conf"]
    (where / "auth.conf").write_bytes(base64.b64decode(auth))
    (where / "nats.conf").write_text(
        f"listen: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor_port}\n"
        f"jetstream {{ store_dir: {json.dumps(str(where / 'store'))} }}\ninclude ./auth.conf\n"
    )
    log = where / "nats.log"
    process = ManagedProcess("nats", [nats_server_binary(), "-c", str(where / "nats.conf")], log_path=log)
    process.start()
    try:
        process.wait_until(lambda: tcp_accepts("127.0.0.1", port), 15.0, "accepting connections")
        yield log
    finally:
        process.stop()


def nats_users(monitor_port: int) -> dict[str, str]:
    """Every client connection's name → the user it authenticated as (the server's ``/connz``)."""
    connz = httpx.get(f"http://127.0.0.1:{monitor_port}/connz", params={"auth": "true"}, timeout=5).json()
    return {c.get("name", ""): c.get("authorized_user", "") for c in connz.get("connections") or []}


def install(images: dict[str, Image], base: Path, nats_url: str, postgres_url: str, redis_url: str) -> Run:
    """Render, start NATS with the chart's users, run the hook Job, start the Deployments, talk to the
    gateway, stop everything."""
    ports = {name: free_port() for name in IMAGES}
    nats_port, monitor_port = free_port(), free_port()
    with servers_of_its_own(nats_url, postgres_url) as (namespace, db_url):
        values = chart_values(
            ports, nats_url=f"nats://127.0.0.1:{nats_port}", namespace=namespace, db_url=db_url, redis_url=redis_url
        )
        run = Run(render(values))
        for name, image in images.items():
            if image.error:
                run.problems.append(f"{name}: the image does not build: {image.error}\n{tail(image.log, 30)}")
        if run.problems:
            return run
        with nats_with_the_charts_users(run.docs, nats_port, monitor_port, base / "nats") as nats_log:
            try:
                play(images, base, values, run, monitor_port)
            finally:
                run.nats_violations = [line for line in nats_log.read_text().splitlines() if "Violation" in line]
        return run


def play(images: dict[str, Image], base: Path, values: Manifest, run: Run, monitor_port: int) -> None:
    """The kubelet's part: the hook Job, then every Deployment; the requests; the stop."""
    kubelet = Kubelet([*run.docs, *OPERATOR_OBJECTS], images)
    jobs = of_kind(run.docs, "Job")
    if not all(run_job(kubelet, job, base / name, run) for name, job in jobs.items()):
        return
    started = start_deployments(kubelet, run.docs, base)
    try:
        wait_ready(started, run)
        if not run.problems:
            gateway = started[f"{RELEASE}-gateway"].process
            gateway_url = (gateway.ready_url or "").rpartition("/")[0]
            try:
                converse(gateway_url, values["secrets"]["adminToken"], run)
            except Exception as exc:
                run.problems.append(f"through the gateway: {exc!r}")
            run.nats_users = nats_users(monitor_port)
    finally:
        stop_all(started, run)
        for name, pod in started.items():
            code, took, grace = run.stops[name]
            if code != 0 or took >= grace:
                run.problems.append(
                    f"{name}: exit {code} {took:.1f}s after its stop began (grace {grace}s)\n"
                    f"{tail(pod.process.log_path, 40)}"
                )


@pytest.fixture(scope="module")
def run(built_images: dict[str, Image], nats_url: str, postgres_url: str, redis_url: str) -> Iterator[Run]:
    with tempfile.TemporaryDirectory(prefix="switchboard-chart-") as tmp:
        yield install(built_images, Path(tmp) / "pods", nats_url, postgres_url, redis_url)


def test_the_migration_job_runs_first_and_exits_zero(run: Run) -> None:
    assert not run.problems, "\n".join(run.problems)
    assert run.job_steps == [("billing-migrate", 0), ("catalog-migrate", 0)]


def test_every_deployment_becomes_ready_on_its_probe(run: Run) -> None:
    assert not run.problems, "\n".join(run.problems)
    expected = {f"{RELEASE}-{name}" for name in IMAGES}
    assert set(of_kind(run.docs, "Deployment")) == expected
    assert set(run.ready) == expected
    assert set(run.ready.values()) == {200}, run.ready


def test_chat_and_responses_through_the_gateway(run: Run) -> None:
    assert not run.problems, "\n".join(run.problems)
    assert run.chat.strip()
    assert run.response.strip()


def test_config_files_and_secrets_are_mounted_where_the_manifests_say(run: Run) -> None:
    assert not run.problems, "\n".join(run.problems)
    assert run.priced, "billing did not read the price list mounted from its ConfigMap"


def test_a_stop_ends_every_process_cleanly_within_its_grace_period(run: Run) -> None:
    assert not run.problems, "\n".join(run.problems)
    assert set(run.stops) == {f"{RELEASE}-{name}" for name in IMAGES}
    for name, (code, took, grace) in run.stops.items():
        assert code == 0 and took < grace, (name, code, took, grace)
    # The gateway's preStop wait (endpoints dropping it) ran before its SIGTERM, within the same grace.
    gateway = of_kind(run.docs, "Deployment")[f"{RELEASE}-gateway"]["spec"]["template"]["spec"]["containers"][0]
    assert gateway["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    assert run.stops[f"{RELEASE}-gateway"][1] >= float(gateway["lifecycle"]["preStop"]["exec"]["command"][1])


def test_every_service_talks_to_nats_as_its_own_user_and_nothing_is_refused(run: Run) -> None:
    """The NATS server enforced the chart's users: each service authenticated as its own (the name and the
    password the chart gave it), and what they all did — start, a chat, a response, a stop — needed
    nothing their allow-lists lack (the server logs every publish or subscribe it refuses)."""
    assert not run.problems, "\n".join(run.problems)
    users = {name.partition("-")[0]: user for name, user in run.nats_users.items() if name}
    for service in ("gateway", "runner", "billing", "catalog"):
        assert users.get(service) == f"{RELEASE}-{service}", run.nats_users
    assert run.nats_violations == []
