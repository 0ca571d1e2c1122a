"""Every manifest the chart renders is valid Kubernetes, checked strictly against the OpenAPI schemas of a
current release (``kubernetes-validate``: unknown fields fail, as ``kubectl apply --validate=strict``
would refuse them), with the default values and with every optional feature turned on."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest

from tests.unit.deploy.test_chart import EXISTING, INLINE, TEST_TOKEN, Manifest, merge, render

pytestmark = pytest.mark.unit

#: The newest Kubernetes release whose schemas the pinned package carries.
KUBERNETES_VERSION = kubernetes_validate.latest_version()
#: Custom resources: no Kubernetes schema exists for them (KEDA's ScaledObject is KEDA's CRD, the
#: ServiceMonitor the Prometheus Operator's).
CUSTOM_KINDS = {("keda.sh/v1alpha1", "ScaledObject"), ("monitoring.coreos.com/v1", "ServiceMonitor")}

EVERYTHING = merge(
    {
        "secrets": {"adminToken": TEST_TOKEN, "openaiApiKey": "sk-test-only", "anthropicApiKey": "a-test-only"},
        "postgresql": {"url": "postgresql://u:pw-in-test@pg:5432/sb"},
        "nats": {"external": {"existingSecret": "sb-nats"}, "namespace": "prod"},
        "redis": {"existingSecret": "sb-redis"},
        "mcp": {"existingSecret": "sb-mcp"},
        "telemetry": {"otlpEndpoint": "http://jaeger-collector:4318"},
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "Switchboard"}},
        "imagePullSecrets": [{"name": "regcred"}],
        "ingress": {
            "enabled": True,
            "className": "nginx",
            "annotations": {"nginx.ingress.kubernetes.io/proxy-buffering": "off"},
            "host": "llm.example.com",
            "tlsSecretName": "llm-tls",
        },
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "llm", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {"matchLabels": {"app.kubernetes.io/part-of": "switchboard"}},
                        },
                    }
                ]
            }
        },
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app.kubernetes.io/part-of": "switchboard"}},
            }
        ],
    },
    {
        "services": {
            "fakellm": {"enabled": True},
            "gateway": {
                "autoscaling": {"enabled": True},
                "service": {"type": "LoadBalancer", "annotations": {"example.com/lb": "internal"}},
                "podAnnotations": {"example.com/team": "llm"},
            },
            "runner": {
                "autoscaling": {
                    "enabled": True,
                    "keda": {"enabled": True, "natsMonitoringEndpoint": "nats.nats.svc:8222"},
                },
                "extraEnv": [{"name": "VLLM_API_KEY", "valueFrom": {"secretKeyRef": {"name": "vllm", "key": "k"}}}],
            },
            "billing": {
                "env": {"BILLING_PRICING_FILE": "/etc/switchboard/prices.yaml"},
                "extraVolumes": [{"name": "prices", "configMap": {"name": "switchboard-prices"}}],
                "extraVolumeMounts": [{"name": "prices", "mountPath": "/etc/switchboard", "readOnly": True}],
            },
            "catalog": {"replicas": 3},
        }
    },
)

CASES = {
    "defaults (existing Secrets)": (EXISTING,),
    "defaults (install-time values)": (INLINE,),
    "every optional feature": (EVERYTHING,),
    "migrations on start": (EXISTING, {"migrations": {"enabled": False}}),
    "in-chart NATS cluster": (EXISTING, {"nats": {"cluster": {"enabled": True, "storage": {"storageClassName": "a"}}}}),
    "in-chart NATS, the operator's NATS passwords": (
        EXISTING,
        {"nats": {"cluster": {"enabled": True}, "auth": {"existingSecret": "sb-nats-passwords"}}},
    ),
}


def problems(docs: list[Manifest]) -> list[str]:
    """Every schema violation of ``docs``, as ``Kind/name: message`` lines."""
    found = []
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            found.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}")
    return found


@pytest.mark.parametrize("case", list(CASES))
def test_rendered_manifests_are_valid_kubernetes_strictly(case: str) -> None:
    docs = render(*CASES[case])
    assert docs
    assert problems(docs) == []


def test_every_optional_feature_is_really_rendered() -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in render(EVERYTHING)}
    for expected in [
        ("Ingress", "sb-gateway"),
        ("HorizontalPodAutoscaler", "sb-gateway"),
        ("ScaledObject", "sb-runner"),
        ("PodDisruptionBudget", "sb-catalog"),
        ("Deployment", "sb-fakellm"),
        ("Job", "sb-migrations"),
        ("Secret", "sb-migrations"),
        ("Secret", "sb-secrets"),
        ("ServiceMonitor", "sb-gateway"),
        ("ConfigMap", "sb-grafana-dashboard"),
    ]:
        assert expected in kinds


def test_the_only_unchecked_kinds_are_custom_resources() -> None:
    unchecked = []
    for doc in render(EVERYTHING):
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            unchecked.append((doc["apiVersion"], doc["kind"]))
    assert set(unchecked) == CUSTOM_KINDS


@pytest.mark.parametrize(
    ("where", "field"),
    [
        (("spec", "template", "spec"), "terminationGracePeriod"),
        (("spec", "template", "spec", "containers", 0), "readinesProbe"),
        (("spec",), "replica"),
    ],
)
def test_the_validation_is_strict_an_unknown_field_fails(where: tuple[Any, ...], field: str) -> None:
    deployment = copy.deepcopy(next(d for d in render(EXISTING) if d["kind"] == "Deployment"))
    node: Any = deployment
    for key in where:
        node = node[key]
    node[field] = 1
    assert len(problems([deployment])) == 1
