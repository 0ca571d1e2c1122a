"""The migrations as a Helm hook Job: before install and upgrade, one step per database service, and the
services themselves told not to migrate on start."""

from __future__ import annotations

import pytest

from tests.unit.deploy.test_chart import EXISTING, INLINE, Manifest, container, env_of, of_kind, render

pytestmark = pytest.mark.unit


def job(docs: list[Manifest]) -> Manifest:
    return of_kind(docs, "Job")["sb-migrations"]


def steps(job: Manifest) -> list[Manifest]:
    pod = job["spec"]["template"]["spec"]
    return [*pod.get("initContainers", []), *pod["containers"]]


def test_a_pre_install_pre_upgrade_hook_with_backoff_deadline_and_delete_policy() -> None:
    j = job(render(EXISTING))
    annotations = j["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    assert j["spec"]["backoffLimit"] == 3
    assert j["spec"]["activeDeadlineSeconds"] == 900
    assert j["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_each_database_service_migrates_in_turn_after_waiting_for_the_database() -> None:
    j = job(render(EXISTING, {"migrations": {"waitForDatabaseSeconds": 45}}))
    pod = j["spec"]["template"]["spec"]
    # Init containers run one after the other, then the last step: never two migrations at once.
    assert [c["name"] for c in pod["initContainers"]] == ["billing-migrate"]
    assert [c["name"] for c in pod["containers"]] == ["catalog-migrate"]
    for step in steps(j):
        service = step["name"].removesuffix("-migrate")
        assert step["command"] == ["python", "-m", service]
        assert step["args"] == ["migrate", "--wait-s", "45"]
        assert step["image"] == f"switchboard/{service}:0.1.0"
        url = {e["name"]: e for e in step["env"]}[f"{service.upper()}_DATABASE_URL"]
        assert url["valueFrom"]["secretKeyRef"] == {"name": "sb-pg", "key": "DATABASE_URL"}
        assert step["securityContext"]["readOnlyRootFilesystem"] is True


def test_an_install_time_url_reaches_the_job_through_a_hook_secret_made_before_it() -> None:
    docs = render(INLINE)
    secret = of_kind(docs, "Secret")["sb-migrations"]
    assert secret["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    # Lower weights run first: the Secret exists when the Job starts.
    assert int(secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        job(docs)["metadata"]["annotations"]["helm.sh/hook-weight"]
    )
    for step in steps(job(docs)):
        refs = [e["valueFrom"]["secretKeyRef"]["name"] for e in step["env"] if "valueFrom" in e]
        assert refs == ["sb-migrations"]


def test_services_wait_for_the_job_instead_of_migrating() -> None:
    deployments = of_kind(render(EXISTING), "Deployment")
    for name in ("catalog", "billing"):
        assert env_of(deployments[f"sb-{name}"])[f"{name.upper()}_MIGRATE_ON_START"]["value"] == "false"
    for name in ("gateway", "runner"):
        assert not any(e["name"].endswith("_MIGRATE_ON_START") for e in container(deployments[f"sb-{name}"])["env"])


def test_without_the_job_services_migrate_on_start() -> None:
    docs = render(EXISTING, {"migrations": {"enabled": False}})
    assert "sb-migrations" not in of_kind(docs, "Job")
    deployments = of_kind(docs, "Deployment")
    assert env_of(deployments["sb-catalog"])["CATALOG_MIGRATE_ON_START"]["value"] == "true"


def test_one_database_service_is_one_step() -> None:
    j = job(render(EXISTING, {"services": {"billing": {"enabled": False}}}))
    assert "initContainers" not in j["spec"]["template"]["spec"]
    assert [c["name"] for c in steps(j)] == ["catalog-migrate"]


def test_no_database_service_no_job() -> None:
    off = {name: {"enabled": False} for name in ("gateway", "billing", "catalog")}
    assert of_kind(render({"services": off}), "Job") == {}
