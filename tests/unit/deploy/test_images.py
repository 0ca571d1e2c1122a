"""The Dockerfiles and the compose file, checked without a Docker engine.

Each image: built from the repository root, dependencies (every one pinned) installed before any
source is copied, an unprivileged user, the port the chart probes, and a ``python -m`` entry point that
exists. The compose file: only existing Dockerfiles, every variable one its service really reads,
health checks on each service's own port, and start-up ordered on health.
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from pydantic import AliasChoices

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
VALUES = yaml.safe_load((ROOT / "deploy/helm/switchboard/values.yaml").read_text())
COMPOSE = yaml.safe_load((ROOT / "deploy/compose/compose.yaml").read_text())
SERVICES = ("gateway", "runner", "billing", "catalog")
IMAGES = (*SERVICES, "fakellm")
REQUIREMENTS_SCRIPT = ROOT / "deploy/docker/requirements.py"


def package_dir(name: str) -> Path:
    return ROOT / ("libs" if name == "fakellm" else "services") / name


def dockerfile(name: str) -> str:
    return (package_dir(name) / "Dockerfile").read_text()


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [
        (parts[0].upper(), parts[1] if len(parts) > 1 else "")
        for line in joined.splitlines()
        if line.strip()
        for parts in [line.strip().split(None, 1)]
    ]


def pins() -> dict[str, str]:
    out = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            out[canonicalize_name(name)] = version
    return out


def workspace_closure(name: str) -> list[str]:
    """The package directories an image needs: the package and the workspace packages it depends on."""
    by_dist = {}
    for pyproject in [*ROOT.glob("libs/*/pyproject.toml"), *ROOT.glob("services/*/pyproject.toml")]:
        project = __import__("tomllib").loads(pyproject.read_text())["project"]
        by_dist[canonicalize_name(project["name"])] = (pyproject.parent, project.get("dependencies", []))
    wanted: list[str] = []

    def visit(directory: Path, deps: list[str]) -> None:
        for dep in deps:
            dist = canonicalize_name(Requirement(dep).name)
            if dist in by_dist and str(by_dist[dist][0].relative_to(ROOT)) not in wanted:
                visit(*by_dist[dist])
        wanted.append(str(directory.relative_to(ROOT)))

    visit(
        package_dir(name),
        __import__("tomllib").loads((package_dir(name) / "pyproject.toml").read_text())["project"]["dependencies"],
    )
    return wanted


def settings_env_names(service: str) -> set[str]:
    """Every variable the service's settings class reads."""
    module = importlib.import_module(f"{service}.settings")
    (cls,) = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type) and obj.__module__ == module.__name__ and hasattr(obj, "model_fields")
    ]
    prefix = cls.model_config.get("env_prefix", "")
    names = set()
    for field_name, field in cls.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {choice.upper() for choice in alias.choices if isinstance(choice, str)}
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(f"{prefix}{field_name}".upper())
    if service == "runner":  # the provider SDKs' standard variables, read by runner.connections
        names |= {"OPENAI_BASE_URL", "OPENAI_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY"}
    return names


# --- Dockerfiles ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", IMAGES)
def test_dockerfile_shape(name: str) -> None:
    steps = instructions(dockerfile(name))
    kinds = [kind for kind, _ in steps]
    assert ("ARG", "PYTHON_IMAGE=python:3.11-slim") in steps
    froms = [args for kind, args in steps if kind == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"], "two stages on python:3.11-slim"
    runtime = steps[kinds.index("FROM", kinds.index("FROM") + 1) :]
    env = " ".join(args for kind, args in runtime if kind == "ENV")
    assert "PYTHONUNBUFFERED=1" in env
    (user,) = [args for kind, args in runtime if kind == "USER"]
    assert user.split(":")[0].isdigit() and int(user.split(":")[0]) >= 1000, "a numeric, unprivileged user"
    assert ("COPY", "--from=build /opt/venv /opt/venv") in runtime
    (expose,) = [args for kind, args in runtime if kind == "EXPOSE"]
    assert int(expose) == VALUES["services"][name]["port"]
    # Nothing secret is baked in.
    for kind, args in steps:
        if kind in ("ENV", "ARG"):
            assert not re.search(r"(TOKEN|API_KEY|PASSWORD|DATABASE_URL)", args), args


@pytest.mark.parametrize("name", IMAGES)
def test_dependencies_are_installed_pinned_before_any_source_is_copied(name: str) -> None:
    steps = instructions(dockerfile(name))
    install = next(i for i, (kind, args) in enumerate(steps) if kind == "RUN" and "-c constraints.txt" in args)
    assert "requirements.py" in steps[install][1] and "-r requirements.txt" in steps[install][1]
    before = [args for kind, args in steps[:install] if kind == "COPY"]
    for args in before:
        for source in args.split()[:-1]:
            assert source in ("constraints.txt", "deploy/docker/requirements.py") or source.endswith("/pyproject.toml")
    # Then the workspace packages, installed without touching the dependencies.
    after = [args for kind, args in steps[install:] if kind == "COPY" and not args.startswith("--from")]
    copied = [args.split()[0] for args in after]
    assert copied == workspace_closure(name)
    assert any(kind == "RUN" and "--no-deps" in args for kind, args in steps[install:])


@pytest.mark.parametrize("name", IMAGES)
def test_every_copied_path_exists_and_is_not_ignored(name: str) -> None:
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for kind, args in instructions(dockerfile(name)):
        if kind != "COPY" or args.startswith("--from"):
            continue
        for source in args.split()[:-1]:
            assert (ROOT / source).exists(), source
            for pattern in ignored:
                assert not fnmatch.fnmatch(source, pattern) and not source.startswith(pattern + "/"), (source, pattern)


@pytest.mark.parametrize("name", IMAGES)
def test_cmd_runs_an_existing_entry_point(name: str) -> None:
    (cmd,) = [args for kind, args in instructions(dockerfile(name)) if kind == "CMD"]
    argv = json.loads(cmd)
    assert argv[:2] == ["python", "-m"]
    module = argv[2]
    assert module == name == VALUES["services"][name]["module"]
    assert (package_dir(name) / "src" / module / "__main__.py").exists()


def test_the_fake_llm_listens_on_the_port_the_chart_expects() -> None:
    (cmd,) = [args for kind, args in instructions(dockerfile("fakellm")) if kind == "CMD"]
    assert json.loads(cmd)[3:] == VALUES["services"]["fakellm"]["args"]
    assert VALUES["services"]["fakellm"]["args"][-1] == str(VALUES["services"]["fakellm"]["port"])


def test_gateway_image_listens_on_all_interfaces() -> None:
    assert "GATEWAY_HOST=0.0.0.0" in dockerfile("gateway")


@pytest.mark.parametrize("name", IMAGES)
def test_requirements_script_lists_third_party_dependencies_all_pinned(name: str) -> None:
    dirs = workspace_closure(name)
    out = subprocess.run(
        [sys.executable, str(REQUIREMENTS_SCRIPT), *dirs], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out, "no requirements at all?"
    assert not any(line.lower().startswith("switchboard-") for line in out)
    pinned = pins()
    # Every dependency the image installs, transitively, has a pin (read from the installed metadata).
    seen: set[str] = set()
    todo = [Requirement(line) for line in out]
    while todo:
        req = todo.pop()
        dist = canonicalize_name(req.name)
        assert dist in pinned, f"{name}: {req.name} is not pinned in constraints.txt"
        key = f"{dist}{sorted(req.extras)}"
        if key in seen:
            continue
        seen.add(key)
        for child in importlib.metadata.requires(req.name) or []:
            sub = Requirement(child)
            envs = [{"extra": extra} for extra in (req.extras or {""})] or [{"extra": ""}]
            if sub.marker is None or any(sub.marker.evaluate(env) for env in envs):
                todo.append(sub)


def test_requirements_script_refuses_no_arguments() -> None:
    done = subprocess.run([sys.executable, str(REQUIREMENTS_SCRIPT)], capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "usage" in done.stderr


def test_dockerignore_keeps_the_context_small_but_not_what_images_need() -> None:
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    for must in (".git", ".venv", "tests", "**/__pycache__", "**/*.db"):
        assert must in ignored
    for needed in ("constraints.txt", "libs", "services", "deploy/docker", "deploy"):
        assert needed not in ignored


# --- the chart's variables -----------------------------------------------------------------------


def test_every_variable_the_chart_sets_is_read_by_its_service() -> None:
    for name in SERVICES:
        svc = VALUES["services"][name]
        known = settings_env_names(name)
        set_by_chart = {*svc["env"], svc["portEnv"]} | ({svc["drainEnv"]} if svc["drainEnv"] else set())
        set_by_chart |= {"NATS_URL", "SWITCHBOARD_NAMESPACE", "SWITCHBOARD_ENV", "LOG_LEVEL"}
        set_by_chart |= {"OTEL_EXPORTER_OTLP_ENDPOINT"}
        if svc["redis"]:
            set_by_chart.add("REDIS_URL")
        if svc["database"]:
            set_by_chart.add(f"{name.upper()}_DATABASE_URL")
        keys = {"adminToken": "ADMIN_TOKEN", "openaiApiKey": "OPENAI_API_KEY", "anthropicApiKey": "ANTHROPIC_API_KEY"}
        set_by_chart |= {keys[s] for s in svc["secrets"]}
        assert set_by_chart <= known, f"{name}: {sorted(set_by_chart - known)} are read by nothing"


# --- compose -------------------------------------------------------------------------------------


def compose_env(name: str) -> dict[str, Any]:
    return COMPOSE["services"][name].get("environment") or {}


def test_compose_builds_every_image_from_its_dockerfile() -> None:
    built = {name: svc["build"] for name, svc in COMPOSE["services"].items() if "build" in svc}
    assert set(built) == set(IMAGES)
    compose_dir = ROOT / "deploy/compose"
    for name, build in built.items():
        context = (compose_dir / build["context"]).resolve()
        assert context == ROOT, "the build context is the repository root"
        assert (context / build["dockerfile"]) == package_dir(name) / "Dockerfile"


def test_compose_infrastructure() -> None:
    services = COMPOSE["services"]
    assert "-js" in services["nats"]["command"]
    jaeger_ports = {p.split(":")[-1] for p in services["jaeger"]["ports"]}
    assert {"16686", "4318"} <= jaeger_ports
    for name in ("nats", "postgres", "redis"):
        assert services[name]["healthcheck"]["test"]


@pytest.mark.parametrize("name", SERVICES)
def test_compose_variables_are_read_by_their_service(name: str) -> None:
    env = compose_env(name)
    unknown = set(env) - settings_env_names(name)
    assert not unknown, f"{name}: {sorted(unknown)} are read by nothing"
    assert env["NATS_URL"] == "nats://nats:4222"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"
    assert env["SWITCHBOARD_ENV"] == "production"


@pytest.mark.parametrize("name", IMAGES)
def test_compose_health_checks_use_each_services_own_port(name: str) -> None:
    svc = VALUES["services"][name]
    port = svc["port"]
    check = " ".join(COMPOSE["services"][name]["healthcheck"]["test"])
    assert f"127.0.0.1:{port}{svc['readinessPath']}" in check
    if svc["portEnv"]:
        assert compose_env(name)[svc["portEnv"]] == str(port)


def test_compose_wiring() -> None:
    services = COMPOSE["services"]
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            assert cond["condition"] in ("service_started", "service_healthy", "service_completed_successfully")
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}'s health, which has no check"
    gateway = services["gateway"]
    assert {"catalog", "billing", "runner"} <= set(gateway["depends_on"])
    assert gateway["depends_on"]["catalog"]["condition"] == "service_healthy"
    assert "127.0.0.1:8080:8080" in gateway["ports"]
    # The admin token has no default: compose refuses to start without one.
    assert gateway["environment"]["ADMIN_TOKEN"].startswith("${ADMIN_TOKEN:?")
    for name in ("catalog", "billing"):
        url = compose_env(name)[f"{name.upper()}_DATABASE_URL"]
        assert url.startswith("postgresql://") and "@postgres:5432/" in url
    assert compose_env("runner")["OPENAI_BASE_URL"].endswith("http://fakellm:8090/v1}")
    # Stop grace longer than the runner's drain.
    assert int(services["runner"]["stop_grace_period"].rstrip("s")) > int(compose_env("runner")["RUNNER_DRAIN_S"])


# --- compose and the chart -----------------------------------------------------------------------
#: Where compose and the chart differ on purpose: compose passes the MCP servers' JSON as a variable,
#: the chart mounts it from a Secret as a file (RUNNER_MCP_SERVERS_FILE, only when `mcp` is set).
COMPOSE_ONLY = {"runner": {"RUNNER_MCP_SERVERS"}}
#: The chart gives each service a NATS user of its own (nats.auth); compose's NATS has no users.
CHART_ONLY = {"NATS_USER", "NATS_PASSWORD"}


@pytest.mark.parametrize("name", SERVICES)
def test_compose_and_the_chart_give_each_service_the_same_variables(name: str) -> None:

    values = {
        "secrets": {"existingSecret": "s"},
        "postgresql": {"existingSecret": "pg"},
        "redis": {"url": "redis://redis:6379/0"},
        "telemetry": {"otlpEndpoint": "http://jaeger:4318"},
        "services": {"fakellm": {"enabled": True}},
    }
    with helm.Chart.load(str(ROOT / "deploy/helm/switchboard")) as chart:
        files = chart.render(values, name="sb", namespace="default", is_install=True)
    docs = [d for path, text in files.items() if path.endswith(".yaml") for d in yaml.safe_load_all(text) if d]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == f"sb-{name}"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    from_chart = {e["name"] for e in container["env"]}
    assert from_chart >= CHART_ONLY
    assert from_chart - CHART_ONLY == set(compose_env(name)) - COMPOSE_ONLY.get(name, set())
    # The migrations: compose's single replica migrates on start, the chart's pods leave it to its Job.
    if f"{name.upper()}_DATABASE_URL" in from_chart:
        assert compose_env(name)[f"{name.upper()}_MIGRATE_ON_START"] == "true"
        migrate = next(e for e in container["env"] if e["name"] == f"{name.upper()}_MIGRATE_ON_START")
        assert migrate["value"] == "false"
