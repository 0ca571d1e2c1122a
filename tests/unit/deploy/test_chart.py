"""The Helm chart, rendered by Helm's own library (the pinned ``helm-python-sdk``) under several value sets.

Rendering enforces ``values.schema.json`` and runs every template, so these tests see exactly the
manifests ``helm template`` would print.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "deploy" / "helm" / "switchboard"
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
CI_VALUES = yaml.safe_load((CHART / "ci" / "existing-secrets-values.yaml").read_text())
SERVICES = ("gateway", "runner", "billing", "catalog")
#: A token of the right shape for rendering tests only; it guards nothing.
TEST_TOKEN = "t" * 32
INLINE = {"secrets": {"adminToken": TEST_TOKEN}, "postgresql": {"url": "postgresql://u:pw-in-test@pg:5432/sb"}}
EXISTING = {"secrets": {"existingSecret": "sb-creds"}, "postgresql": {"existingSecret": "sb-pg"}}

Manifest = dict[str, Any]


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def render_files(*overrides: dict[str, Any], name: str = "sb") -> dict[str, str]:
    values: dict[str, Any] = {}
    for override in overrides:
        values = merge(values, override)
    with helm.Chart.load(str(CHART)) as chart:
        return chart.render(values, name=name, namespace="llm", is_install=True)


def render(*overrides: dict[str, Any]) -> list[Manifest]:
    docs: list[Manifest] = []
    for path, text in render_files(*overrides).items():
        if not path.endswith("NOTES.txt"):
            docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return docs


def of_kind(docs: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def container(deployment: Manifest) -> Manifest:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def env_of(deployment: Manifest) -> dict[str, Manifest]:
    entries = container(deployment)["env"]
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names)), f"duplicate env names: {names}"
    return {e["name"]: e for e in entries}


@pytest.fixture(scope="module")
def default_docs() -> list[Manifest]:
    return render(EXISTING)


# --- values and schema ---------------------------------------------------------------------------


def test_default_values_match_the_schema() -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    jsonschema.validate(VALUES, SCHEMA)
    jsonschema.validate(merge(VALUES, CI_VALUES), SCHEMA)


def _objects_without_closed_properties(node: Any, where: str = "") -> list[str]:
    found = []
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node and node.get("additionalProperties") is not False:
            found.append(where or "/")
        for key, child in node.items():
            found += _objects_without_closed_properties(child, f"{where}/{key}")
    elif isinstance(node, list):
        for i, child in enumerate(node):
            found += _objects_without_closed_properties(child, f"{where}/{i}")
    return found


def test_every_object_the_schema_defines_is_closed() -> None:
    assert _objects_without_closed_properties(SCHEMA) == []


@pytest.mark.parametrize(
    "path",
    [
        ("unknown",),
        ("services", "gateway", "replica"),
        ("services", "mystery"),
        ("services", "runner", "autoscaling", "enable"),
        ("services", "runner", "resources", "limit"),
        ("nats", "user"),
        ("postgresql", "password"),
        ("secrets", "openaiKey"),
        ("ingress", "hosts"),
    ],
)
def test_unknown_keys_are_rejected_at_render(path: tuple[str, ...]) -> None:
    override: dict[str, Any] = {}
    node = override
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = 1
    with pytest.raises(helm.HelmValuesError, match="additional propert"):
        render_files(EXISTING, override)


@pytest.mark.parametrize(
    "name",
    [
        "ADMIN_TOKEN",
        "OPENAI_API_KEY",
        "BILLING_DATABASE_URL",
        "DATABASE_URL",
        "NATS_PASSWORD",  # a credential, in plain text, that would also win over the Secret's
        "NATS_URL",
        "REDIS_URL",
        "NATS_STREAM_REPLICAS",  # one service apart would keep rewriting the streams' configuration
        "SWITCHBOARD_NAMESPACE",
    ],
)
def test_a_credential_or_a_shared_setting_in_plain_env_is_rejected(name: str) -> None:
    with pytest.raises(helm.HelmValuesError):
        render_files(EXISTING, {"services": {"runner": {"env": {name: "x"}}}})


def test_no_secret_values_in_the_defaults() -> None:
    assert all(not VALUES["secrets"][k] for k in ("existingSecret", "adminToken", "openaiApiKey", "anthropicApiKey"))
    assert not VALUES["postgresql"]["url"]
    for path in (CHART / "values.yaml", CHART / "ci" / "existing-secrets-values.yaml"):
        settings = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
        for line in settings:
            assert not re.search(r"sk-[A-Za-z0-9_-]{6,}", line), line
            assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", line), line  # a URL with a password


# --- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "needs PostgreSQL"),
        ({"postgresql": {"existingSecret": "pg"}}, "needs the admin token"),
        ({**EXISTING, "secrets": {"existingSecret": "x", "openaiApiKey": "k"}}, "not both"),
        ({**INLINE, "postgresql": {"url": "postgresql://a@b/c", "existingSecret": "pg"}}, "not both"),
        ({**INLINE, "secrets": {"adminToken": "short"}}, "at least 24"),
        (merge(EXISTING, {"services": {"runner": {"env": {"RUNNER_DRAIN_S": "99"}}}}), "drainSeconds"),
        (merge(EXISTING, {"services": {"gateway": {"env": {"GATEWAY_PORT": "9"}}}}), "port instead"),
    ],
)
def test_configurations_that_cannot_work_refuse_to_render(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmRenderError, match=message):
        render_files(values)


def test_without_catalog_billing_and_gateway_no_database_or_token_is_needed() -> None:
    off = {name: {"enabled": False} for name in ("gateway", "billing", "catalog")}
    docs = render({"services": off})
    assert set(of_kind(docs, "Deployment")) == {"sb-runner"}


# --- what every service gets ---------------------------------------------------------------------


def test_one_deployment_and_service_per_enabled_service(default_docs: list[Manifest]) -> None:
    expected = {f"sb-{name}" for name in SERVICES}
    assert set(of_kind(default_docs, "Deployment")) == expected
    assert set(of_kind(default_docs, "Service")) == expected
    with_fake = render(EXISTING, {"services": {"fakellm": {"enabled": True}}})
    assert "sb-fakellm" in of_kind(with_fake, "Deployment")


def test_recommended_labels_and_selectors(default_docs: list[Manifest]) -> None:
    for doc in default_docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "sb"
        assert labels["app.kubernetes.io/part-of"] == "switchboard"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert doc["metadata"]["namespace"] == "llm"
    for name, dep in of_kind(default_docs, "Deployment").items():
        short = name.removeprefix("sb-")
        selector = dep["spec"]["selector"]["matchLabels"]
        assert selector == {"app.kubernetes.io/name": short, "app.kubernetes.io/instance": "sb"}
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= pod_labels.items()
        assert pod_labels["app.kubernetes.io/component"] == short
        assert of_kind(default_docs, "Service")[name]["spec"]["selector"] == selector


def test_probes_on_each_services_own_port(default_docs: list[Manifest]) -> None:
    ports = {name: VALUES["services"][name]["port"] for name in SERVICES}
    assert ports == {"gateway": 8080, "catalog": 8081, "billing": 8082, "runner": 8083}
    for name in SERVICES:
        dep = of_kind(default_docs, "Deployment")[f"sb-{name}"]
        c = container(dep)
        assert c["ports"] == [{"name": "http", "containerPort": ports[name], "protocol": "TCP"}]
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
        # The process listens where the probes look.
        port_env = VALUES["services"][name]["portEnv"]
        assert env_of(dep)[port_env]["value"] == str(ports[name])


def test_a_moved_port_moves_probes_service_and_process_together() -> None:
    docs = render(EXISTING, {"services": {"runner": {"port": 9100}}})
    dep = of_kind(docs, "Deployment")["sb-runner"]
    assert container(dep)["ports"][0]["containerPort"] == 9100
    assert env_of(dep)["RUNNER_HEALTH_PORT"]["value"] == "9100"
    assert of_kind(docs, "Service")["sb-runner"]["spec"]["ports"][0]["port"] == 9100


def test_grace_period_outlives_the_drain(default_docs: list[Manifest]) -> None:
    for name in SERVICES:
        dep = of_kind(default_docs, "Deployment")[f"sb-{name}"]
        svc = VALUES["services"][name]
        grace = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace > svc["preStopSeconds"] + svc["drainSeconds"]
        if svc["drainEnv"]:
            assert env_of(dep)[svc["drainEnv"]]["value"] == str(svc["drainSeconds"])
    runner = of_kind(default_docs, "Deployment")["sb-runner"]
    assert env_of(runner)["RUNNER_DRAIN_S"]["value"] == "30"
    assert runner["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 45
    longer = of_kind(render(EXISTING, {"services": {"runner": {"drainSeconds": 120}}}), "Deployment")["sb-runner"]
    assert longer["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 135
    assert env_of(longer)["RUNNER_DRAIN_S"]["value"] == "120"


def test_gateway_waits_for_endpoints_to_drop_it_before_draining(default_docs: list[Manifest]) -> None:
    gateway = of_kind(default_docs, "Deployment")["sb-gateway"]
    assert container(gateway)["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    assert gateway["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 5 + 20 + 15


def test_pods_run_unprivileged(default_docs: list[Manifest]) -> None:
    for dep in of_kind(default_docs, "Deployment").values():
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        assert pod["automountServiceAccountToken"] is False
        sc = container(dep)["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert {"name": "tmp", "mountPath": "/tmp"} in container(dep)["volumeMounts"]


def test_images_default_to_prefix_name_and_app_version_and_can_be_overridden() -> None:
    docs = render(
        EXISTING,
        {
            "image": {"repository": "registry.example.com/sb", "tag": "1.2.3"},
            "services": {"runner": {"image": {"repository": "other/runner-gpu", "tag": "9"}}},
        },
    )
    deps = of_kind(docs, "Deployment")
    assert container(deps["sb-gateway"])["image"] == "registry.example.com/sb/gateway:1.2.3"
    assert container(deps["sb-runner"])["image"] == "other/runner-gpu:9"
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    plain = of_kind(render(EXISTING), "Deployment")
    assert container(plain["sb-billing"])["image"] == f"switchboard/billing:{app_version}"


def test_each_container_runs_its_module() -> None:
    deps = of_kind(render(EXISTING, {"services": {"fakellm": {"enabled": True}}}), "Deployment")
    for name in (*SERVICES, "fakellm"):
        assert container(deps[f"sb-{name}"])["command"] == ["python", "-m", name]
    assert container(deps["sb-fakellm"])["args"] == ["--host", "0.0.0.0", "--port", "8090"]
    assert container(deps["sb-fakellm"])["readinessProbe"]["httpGet"]["path"] == "/healthz"


# --- environment and secrets ---------------------------------------------------------------------


def test_shared_environment_and_connections(default_docs: list[Manifest]) -> None:
    docs = render(
        EXISTING,
        {
            "nats": {"external": {"url": "nats://nats.infra:4222"}, "namespace": "prod"},
            "redis": {"url": "redis://redis.infra:6379/0"},
            "telemetry": {"otlpEndpoint": "http://jaeger-collector:4318"},
        },
    )
    deps = of_kind(docs, "Deployment")
    for name in SERVICES:
        env = env_of(deps[f"sb-{name}"])
        assert env["NATS_URL"]["value"] == "nats://nats.infra:4222"
        assert env["SWITCHBOARD_NAMESPACE"]["value"] == "prod"
        assert env["SWITCHBOARD_ENV"]["value"] == "production"
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == "http://jaeger-collector:4318"
        assert ("REDIS_URL" in env) == (name in ("gateway", "catalog"))
        assert (f"{name.upper()}_DATABASE_URL" in env) == (name in ("catalog", "billing"))
    # No endpoint: no exporter variable at all (the services then export nothing).
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env_of(of_kind(default_docs, "Deployment")["sb-gateway"])


def test_existing_secrets_are_referenced(default_docs: list[Manifest]) -> None:
    deps = of_kind(default_docs, "Deployment")
    token = env_of(deps["sb-gateway"])["ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert token == {"name": "sb-creds", "key": "ADMIN_TOKEN", "optional": False}
    runner = env_of(deps["sb-runner"])
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        assert runner[key]["valueFrom"]["secretKeyRef"] == {"name": "sb-creds", "key": key, "optional": True}
    for name in ("catalog", "billing"):
        ref = env_of(deps[f"sb-{name}"])[f"{name.upper()}_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "sb-pg", "key": "DATABASE_URL"}
    # With every credential in the operator's Secrets, the chart writes only the NATS users' (their
    # generated passwords and the server's authorization block).
    assert set(of_kind(default_docs, "Secret")) == {"sb-nats-users", "sb-nats-auth"}
    # Credentials reach only the services that use them.
    assert "ADMIN_TOKEN" not in env_of(deps["sb-runner"]) and "OPENAI_API_KEY" not in env_of(deps["sb-gateway"])


def test_url_secrets_for_nats_and_redis() -> None:
    docs = render(
        EXISTING,
        {
            "nats": {"external": {"existingSecret": "nats-creds"}},
            "redis": {"existingSecret": "redis-creds", "existingSecretKey": "url"},
        },
    )
    env = env_of(of_kind(docs, "Deployment")["sb-gateway"])
    assert env["NATS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "nats-creds", "key": "NATS_URL"}
    assert "value" not in env["NATS_URL"]
    assert env["REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "redis-creds", "key": "url"}


def test_install_time_credentials_go_into_the_charts_secret_never_into_a_pod_spec() -> None:
    files = render_files(INLINE, {"secrets": {"openaiApiKey": "sk-test-only"}})
    docs = [d for path, text in files.items() if not path.endswith("NOTES.txt") for d in yaml.safe_load_all(text) if d]
    secret = of_kind(docs, "Secret")["sb-secrets"]
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded == {
        "ADMIN_TOKEN": TEST_TOKEN,
        "OPENAI_API_KEY": "sk-test-only",
        "DATABASE_URL": "postgresql://u:pw-in-test@pg:5432/sb",
    }
    workloads = "".join(text for path, text in files.items() if not path.endswith("secret.yaml"))
    for plain in (TEST_TOKEN, "sk-test-only", "pw-in-test"):
        assert plain not in workloads
    deps = of_kind(docs, "Deployment")
    assert env_of(deps["sb-gateway"])["ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "sb-secrets",
        "key": "ADMIN_TOKEN",
    }
    # A provider key not given is not referenced at all.
    assert "ANTHROPIC_API_KEY" not in env_of(deps["sb-runner"])


def test_pods_roll_when_the_charts_secret_changes() -> None:
    def checksum(token: str) -> str:
        dep = of_kind(render(merge(INLINE, {"secrets": {"adminToken": token}})), "Deployment")["sb-gateway"]
        return str(dep["spec"]["template"]["metadata"]["annotations"]["checksum/secret"])

    assert checksum("a" * 32) != checksum("b" * 32)


def test_fake_llm_becomes_the_runners_provider_unless_one_is_set() -> None:
    fake = {"services": {"fakellm": {"enabled": True}}}
    runner = env_of(of_kind(render(EXISTING, fake), "Deployment")["sb-runner"])
    assert runner["OPENAI_BASE_URL"]["value"] == "http://sb-fakellm:8090/v1"
    assert runner["ANTHROPIC_BASE_URL"]["value"] == "http://sb-fakellm:8090"
    own = merge(fake, {"services": {"runner": {"env": {"OPENAI_BASE_URL": "http://vllm:8000/v1"}}}})
    runner = env_of(of_kind(render(EXISTING, own), "Deployment")["sb-runner"])
    assert runner["OPENAI_BASE_URL"]["value"] == "http://vllm:8000/v1"
    assert "OPENAI_BASE_URL" not in env_of(of_kind(render(EXISTING), "Deployment")["sb-runner"])


def test_extra_env_volumes_and_mounts_pass_through() -> None:
    extra = {
        "extraEnv": [{"name": "VLLM_API_KEY", "valueFrom": {"secretKeyRef": {"name": "vllm", "key": "k"}}}],
        "extraVolumes": [{"name": "prices", "configMap": {"name": "prices"}}],
        "extraVolumeMounts": [{"name": "prices", "mountPath": "/etc/switchboard"}],
    }
    dep = of_kind(render(EXISTING, {"services": {"runner": extra}}), "Deployment")["sb-runner"]
    assert env_of(dep)["VLLM_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "vllm"
    assert {"name": "prices", "configMap": {"name": "prices"}} in dep["spec"]["template"]["spec"]["volumes"]
    assert {"name": "prices", "mountPath": "/etc/switchboard"} in container(dep)["volumeMounts"]


# --- scaling and disruption ----------------------------------------------------------------------


def test_hpa_off_by_default(default_docs: list[Manifest]) -> None:
    assert not any(svc["autoscaling"]["enabled"] for svc in VALUES["services"].values())
    assert of_kind(default_docs, "HorizontalPodAutoscaler") == {}
    assert all("replicas" in d["spec"] for d in of_kind(default_docs, "Deployment").values())


def test_hpa_when_enabled_owns_the_replica_count() -> None:
    docs = render(EXISTING, {"services": {"runner": {"autoscaling": {"enabled": True, "minReplicas": 3}}}})
    hpa = of_kind(docs, "HorizontalPodAutoscaler")["sb-runner"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "sb-runner"}
    assert hpa["spec"]["minReplicas"] == 3 and hpa["spec"]["maxReplicas"] == 20
    assert "replicas" not in of_kind(docs, "Deployment")["sb-runner"]["spec"]
    assert set(of_kind(docs, "HorizontalPodAutoscaler")) == {"sb-runner"}


@pytest.mark.parametrize(
    ("runner", "wants_pdb"),
    [
        ({"replicas": 2}, True),
        ({"replicas": 1}, False),
        ({"replicas": 1, "autoscaling": {"enabled": True, "minReplicas": 2}}, True),
        ({"replicas": 3, "autoscaling": {"enabled": True, "minReplicas": 1}}, False),
    ],
)
def test_pdb_only_when_more_than_one_pod(runner: dict[str, Any], wants_pdb: bool) -> None:
    pdbs = of_kind(render(EXISTING, {"services": {"runner": runner}}), "PodDisruptionBudget")
    assert ("sb-runner" in pdbs) is wants_pdb
    if wants_pdb:
        assert pdbs["sb-runner"]["spec"] == {
            "maxUnavailable": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/name": "runner", "app.kubernetes.io/instance": "sb"}},
        }


# --- reaching the gateway ------------------------------------------------------------------------


def test_ingress_off_by_default_and_routes_to_the_gateway(default_docs: list[Manifest]) -> None:
    assert of_kind(default_docs, "Ingress") == {}
    ingress = {"enabled": True, "host": "llm.example.com", "tlsSecretName": "llm-tls", "className": "nginx"}
    ing = of_kind(render(EXISTING, {"ingress": ingress}), "Ingress")["sb-gateway"]
    assert ing["spec"]["ingressClassName"] == "nginx"
    assert ing["spec"]["tls"] == [{"hosts": ["llm.example.com"], "secretName": "llm-tls"}]
    (rule,) = ing["spec"]["rules"]
    assert rule["host"] == "llm.example.com"
    assert rule["http"]["paths"][0]["backend"]["service"] == {"name": "sb-gateway", "port": {"name": "http"}}
    # The OpenAI and admin APIs only: probes, /metrics and the API docs stay inside the cluster.
    assert [(p["path"], p["pathType"]) for p in rule["http"]["paths"]] == [("/v1", "Prefix"), ("/admin", "Prefix")]


def test_notes_say_how_to_reach_the_gateway() -> None:
    notes = render_files(EXISTING)["switchboard/templates/NOTES.txt"]
    assert "kubectl port-forward -n llm service/sb-gateway 8080:8080" in notes
    assert "sb-creds" in notes and "/v1" in notes
    disabled = render_files({"services": {"gateway": {"enabled": False}}, "postgresql": {"existingSecret": "p"}})
    assert "gateway is disabled" in disabled["switchboard/templates/NOTES.txt"]


# --- the chart as a whole ------------------------------------------------------------------------


def test_helm_lint_is_clean_with_the_ci_values() -> None:
    report = helm.lint(str(CHART), CI_VALUES, strict=True)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_every_template_renders_yaml_with_kind_and_name() -> None:
    everything = {
        "services": {"fakellm": {"enabled": True}, "gateway": {"autoscaling": {"enabled": True}}},
        "ingress": {"enabled": True, "host": "llm.example.com"},
    }
    files = render_files(INLINE, everything)
    templates = {p.name for p in (CHART / "templates").iterdir() if not p.name.startswith("_")}
    assert {path.rsplit("/", 1)[1] for path in files} == templates
    kinds = set()
    for path, text in files.items():
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                assert doc["apiVersion"] and doc["metadata"]["name"]
                kinds.add(doc["kind"])
    assert kinds == {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Secret",
        "Ingress",
        "Job",
    }


def test_chart_script_renders_and_lints(capsys: pytest.CaptureFixture[str]) -> None:
    sys.path.insert(0, str(ROOT / "deploy" / "helm"))
    try:
        import chart as chart_script  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    run: Callable[[list[str]], int] = chart_script.main
    ci = str(CHART / "ci" / "existing-secrets-values.yaml")
    assert run(["lint", "-f", ci]) == 0
    assert "switchboard: ok" in capsys.readouterr().out
    assert run(["template", "-f", ci, "--set", "services.runner.replicas=5", "--name", "demo"]) == 0
    out = capsys.readouterr().out
    runner = of_kind([d for d in yaml.safe_load_all(out) if d], "Deployment")["demo-runner"]
    assert runner["spec"]["replicas"] == 5
    assert run(["template"]) == 1  # the defaults alone name no database and no admin token


def test_keda_scales_the_runner_on_the_run_queue_instead_of_cpu() -> None:
    keda = {"enabled": True, "natsMonitoringEndpoint": "nats.nats:8222", "account": "$G", "pendingRunsPerReplica": 32}
    runner = {"autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 40, "keda": keda}}
    docs = render(EXISTING, {"nats": {"namespace": "prod"}, "services": {"runner": runner}})
    scaled = of_kind(docs, "ScaledObject")["sb-runner"]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"]["name"] == "sb-runner"
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (2, 40)
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "nats-jetstream"
    assert trigger["metadata"] == {
        "natsServerMonitoringEndpoint": "nats.nats:8222",
        "account": "$G",
        "stream": "prod_RUNS",
        "consumer": "runners",
        "lagThreshold": "32",
    }
    assert of_kind(docs, "HorizontalPodAutoscaler") == {}  # KEDA makes its own
    assert "replicas" not in of_kind(docs, "Deployment")["sb-runner"]["spec"]
    assert of_kind(render(EXISTING), "ScaledObject") == {}  # off by default


def test_keda_finds_the_charts_own_nats_by_its_fully_qualified_name() -> None:
    """KEDA's scaler runs in KEDA's namespace: a short Service name would not resolve there."""
    runner = {"autoscaling": {"enabled": True, "keda": {"enabled": True}}}
    docs = render(EXISTING, {"nats": {"cluster": {"enabled": True}}, "services": {"runner": runner}})
    (trigger,) = of_kind(docs, "ScaledObject")["sb-runner"]["spec"]["triggers"]
    namespace = of_kind(docs, "Deployment")["sb-runner"]["metadata"]["namespace"]
    assert trigger["metadata"]["natsServerMonitoringEndpoint"] == f"sb-nats.{namespace}.svc:8222"


def test_keda_with_an_external_nats_must_be_told_where_its_monitoring_is() -> None:
    runner = {"autoscaling": {"enabled": True, "keda": {"enabled": True}}}
    with pytest.raises(Exception, match="natsMonitoringEndpoint: set it"):
        render(EXISTING, {"services": {"runner": runner}})


def test_mcp_servers_come_from_a_secret_mounted_into_the_runners_only() -> None:
    assert "RUNNER_MCP_SERVERS_FILE" not in env_of(of_kind(render(EXISTING), "Deployment")["sb-runner"])
    deployments = of_kind(render(EXISTING, {"mcp": {"existingSecret": "sb-mcp"}}), "Deployment")
    runner = deployments["sb-runner"]
    assert env_of(runner)["RUNNER_MCP_SERVERS_FILE"]["value"] == "/etc/switchboard/mcp/servers.json"
    assert {"name": "mcp-servers", "mountPath": "/etc/switchboard/mcp", "readOnly": True} in container(runner)[
        "volumeMounts"
    ]
    volume = {
        "name": "mcp-servers",
        "secret": {"secretName": "sb-mcp", "items": [{"key": "servers.json", "path": "servers.json"}]},
    }
    assert volume in runner["spec"]["template"]["spec"]["volumes"]
    for name in ("sb-gateway", "sb-catalog", "sb-billing"):
        assert "RUNNER_MCP_SERVERS_FILE" not in env_of(deployments[name])
        assert all(v["name"] != "mcp-servers" for v in deployments[name]["spec"]["template"]["spec"]["volumes"])
