"""Rolling restarts in the chart: each pod's grace period covers its preStop wait and its drain, both
rendered from the same values; and a PodDisruptionBudget for every Deployment of more than one pod."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import pytest

from tests.unit.deploy.test_chart import (
    EXISTING,
    VALUES,
    Manifest,
    container,
    env_of,
    merge,
    of_kind,
    render,
    render_files,
)

pytestmark = pytest.mark.unit

#: What the pod needs past its preStop wait and its drain: the process closes its connections and
#: flushes its traces after the drain.
MARGIN_S = 10


def _pre_stop_seconds(deployment: Manifest) -> int:
    hook = container(deployment).get("lifecycle", {}).get("preStop")
    if hook is None:
        return 0
    command = hook["exec"]["command"]
    assert command[0] == "sleep"
    return int(command[1])


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {
            "services": {
                "gateway": {"drainSeconds": 90, "preStopSeconds": 12},
                "runner": {"drainSeconds": 600, "preStopSeconds": 3},
            }
        },
    ],
)
def test_grace_covers_the_pre_stop_wait_and_the_drain_the_process_is_given(overrides: dict[str, Any]) -> None:
    values = merge(VALUES, overrides)
    deployments = of_kind(render(EXISTING, overrides), "Deployment")
    for name in ("gateway", "runner"):
        svc, dep = values["services"][name], deployments[f"sb-{name}"]
        drain = float(env_of(dep)[svc["drainEnv"]]["value"])  # what the process reads
        pre_stop = _pre_stop_seconds(dep)
        assert (drain, pre_stop) == (svc["drainSeconds"], svc["preStopSeconds"])
        grace = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace >= pre_stop + drain + MARGIN_S, name


def test_the_gateway_leaves_the_endpoints_before_it_drains() -> None:
    gateway = of_kind(render(EXISTING), "Deployment")["sb-gateway"]
    # The preStop wait keeps it serving while the endpoints drop it; its own accept grace is for load
    # balancers outside Kubernetes, so it is not added on top.
    assert _pre_stop_seconds(gateway) >= 3
    assert "GATEWAY_ACCEPT_GRACE_S" not in env_of(gateway)
    assert container(gateway)["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_every_deployment_of_more_than_one_pod_has_a_budget_of_one() -> None:
    docs = render(EXISTING)
    deployments, budgets = of_kind(docs, "Deployment"), of_kind(docs, "PodDisruptionBudget")
    assert {"sb-gateway", "sb-runner"} <= set(budgets)
    for name, dep in deployments.items():
        if dep["spec"].get("replicas", 1) > 1:
            assert budgets[name]["spec"] == {"maxUnavailable": 1, "selector": dep["spec"]["selector"]}
        else:
            assert name not in budgets


def test_budgets_can_be_wider_or_off() -> None:
    wider = of_kind(render(EXISTING, {"podDisruptionBudget": {"maxUnavailable": 2}}), "PodDisruptionBudget")
    assert wider and all(pdb["spec"]["maxUnavailable"] == 2 for pdb in wider.values())
    assert of_kind(render(EXISTING, {"podDisruptionBudget": {"enabled": False}}), "PodDisruptionBudget") == {}


@pytest.mark.parametrize("max_unavailable", [0, "1", 1.5])
def test_a_budget_that_could_block_every_disruption_or_is_not_a_count_is_refused(max_unavailable: object) -> None:
    with pytest.raises(helm.HelmValuesError):
        render_files(EXISTING, {"podDisruptionBudget": {"maxUnavailable": max_unavailable}})
