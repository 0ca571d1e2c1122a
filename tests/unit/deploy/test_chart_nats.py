"""The chart's NATS: an external URL or a cluster of its own, and a user per service whose publish and
subscribe lists are exactly :mod:`contracts.permissions` (the one place that says them)."""

from __future__ import annotations

import base64
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from helm_python.errors import HelmError

from contracts import Subjects
from contracts.permissions import SERVICES, chart_file, permissions
from devstack.embedded import nats_server_binary
from tests.unit.deploy.test_chart import CHART, EXISTING, Manifest, env_of, of_kind, render

pytestmark = pytest.mark.unit

CLUSTER = {"nats": {"cluster": {"enabled": True}}}


def auth_conf(docs: list[Manifest]) -> str:
    return base64.b64decode(of_kind(docs, "Secret")["sb-nats-auth"]["data"]["auth.conf"]).decode()


def parse_users(conf: str) -> dict[str, dict[str, Any]]:
    """user → {publish|subscribe: {allow|deny: [subjects]}, allow_responses: true} from the rendered
    authorization block (the chart writes each list on one line, its subjects quoted as JSON strings)."""
    users: dict[str, dict[str, Any]] = {}
    user = section = ""
    for line in conf.splitlines():
        line = line.strip()
        if m := re.fullmatch(r'user: "([^"]+)"', line):
            user = m.group(1)
            users[user] = {}
        elif m := re.fullmatch(r"(publish|subscribe): \{", line):
            section = m.group(1)
            users[user][section] = {}
        elif m := re.fullmatch(r"(allow|deny): (\[.*\])", line):
            users[user][section][m.group(1)] = json.loads(m.group(2))
        elif line == "allow_responses: true":
            users[user]["allow_responses"] = True
    return users


def test_the_charts_copy_is_the_contracts_lists() -> None:
    """files/nats-permissions.yaml is what `python -m contracts.permissions` writes: run it after a change."""
    assert (CHART / "files" / "nats-permissions.yaml").read_text() == chart_file()


@pytest.mark.parametrize("namespace", ["", "prod"])
def test_each_users_rendered_lists_equal_the_contract(namespace: str) -> None:
    users = parse_users(auth_conf(render(EXISTING, {"nats": {"namespace": namespace}})))
    expected = {f"sb-{name}": p.as_config() for name, p in permissions(Subjects(namespace)).items()}
    assert users == expected
    if namespace:
        runner = users["sb-runner"]["publish"]["allow"]
        assert "prod.usage.call.recorded.v1" in runner and "$JS.API.STREAM.INFO.prod_USAGE" in runner


def test_least_privilege_in_the_contract() -> None:
    p = permissions(Subjects("ns"))
    s = Subjects("ns")
    assert s.billing_admin not in p["runner"].publish and s.catalog_admin not in p["runner"].publish
    assert s.usage_recorded not in p["gateway"].publish and s.usage_run_closed in p["gateway"].publish
    assert s.run_request not in p["billing"].publish and s.run_request not in p["catalog"].publish
    assert s.run_offer not in p["billing"].publish and s.run_offer not in p["catalog"].publish
    assert [name for name in SERVICES if s.run_offer in p[name].subscribe] == ["runner"]
    assert not [x for x in p["catalog"].publish if x.startswith("$JS")]
    # Each reads only its own replies; only those that answer requests may publish to a reply subject.
    for name in SERVICES:
        inboxes = [x for x in (*p[name].publish, *p[name].subscribe) if "INBOX" in x]
        assert set(inboxes) == {f"_INBOX_ns_{name}.>"}, name
    # (the runner answers the runs offered to it, taken or declined)
    assert {name for name in SERVICES if p[name].allow_responses} == {"billing", "catalog", "runner"}
    # Only the gateway touches its own stores; nobody may delete or purge the money stream.
    assert not [x for name in ("runner", "billing") for x in p[name].publish if "RESPONSES" in x or "IDEMPOTENCY" in x]
    for name in ("gateway", "runner", "billing"):
        assert f"$JS.API.STREAM.PURGE.{s.usage_stream}" in p[name].publish_deny
        assert f"$JS.API.STREAM.DELETE.{s.usage_stream}" in p[name].publish_deny


def test_each_service_connects_as_its_user_with_the_password_from_a_secret() -> None:
    docs = render(EXISTING)
    users = of_kind(docs, "Secret")["sb-nats-users"]["data"]
    assert set(users) == set(SERVICES)
    for name in SERVICES:
        env = env_of(of_kind(docs, "Deployment")[f"sb-{name}"])
        assert env["NATS_USER"]["value"] == f"sb-{name}"
        assert env["NATS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "sb-nats-users", "key": name}
        assert env["NATS_URL"]["value"] == "nats://nats:4222"
    # The passwords are in the authorization block, each its own and long.
    conf = auth_conf(docs)
    passwords = {base64.b64decode(v).decode() for v in users.values()}
    assert len(passwords) == len(SERVICES) and all(len(p) >= 32 and f'"{p}"' in conf for p in passwords)
    # Neither the fake LLM nor the migration Job connects to NATS.
    with_fake = render(EXISTING, {"services": {"fakellm": {"enabled": True}}})
    fake = of_kind(with_fake, "Deployment")["sb-fakellm"]["spec"]["template"]["spec"]["containers"][0]
    assert not [e for e in fake.get("env") or [] if "NATS" in e["name"]]
    job = of_kind(docs, "Job")["sb-migrations"]["spec"]["template"]["spec"]
    steps = [*(job.get("initContainers") or []), *job["containers"]]
    assert not [e for step in steps for e in step["env"] if "NATS" in e["name"]]


def test_a_disabled_service_has_no_user() -> None:
    users = parse_users(auth_conf(render(EXISTING, {"services": {"catalog": {"enabled": False}}})))
    assert set(users) == {"sb-gateway", "sb-runner", "sb-billing"}


def test_the_operators_passwords_are_variables_the_server_reads() -> None:
    docs = render(EXISTING, {"nats": {"auth": {"existingSecret": "nats-passwords"}}})
    assert "sb-nats-users" not in of_kind(docs, "Secret")
    env = env_of(of_kind(docs, "Deployment")["sb-runner"])
    assert env["NATS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "nats-passwords", "key": "runner"}
    conf = auth_conf(docs)
    assert "password: $SWITCHBOARD_RUNNER_NATS_PASSWORD" in conf
    # The in-chart servers get those variables from the same Secret.
    docs = render(EXISTING, CLUSTER, {"nats": {"auth": {"existingSecret": "nats-passwords"}}})
    (nats,) = of_kind(docs, "StatefulSet").values()
    server_env = {e["name"]: e for e in nats["spec"]["template"]["spec"]["containers"][0]["env"]}
    for name in SERVICES:
        ref = server_env[f"SWITCHBOARD_{name.upper()}_NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "nats-passwords", "key": name}


def test_without_auth_no_users_and_no_secrets() -> None:
    docs = render(EXISTING, {"nats": {"auth": {"enabled": False}}})
    assert of_kind(docs, "Secret") == {}
    assert "NATS_USER" not in env_of(of_kind(docs, "Deployment")["sb-gateway"])


def test_the_in_chart_cluster() -> None:
    docs = render(EXISTING, CLUSTER, {"nats": {"external": {"url": "nats://ignored:4222"}}})
    nats = of_kind(docs, "StatefulSet")["sb-nats"]
    spec = nats["spec"]
    assert spec["replicas"] == 3 and spec["podManagementPolicy"] == "Parallel"
    assert spec["serviceName"] == "sb-nats-headless"
    assert of_kind(docs, "Service")["sb-nats-headless"]["spec"]["clusterIP"] == "None"
    assert spec["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "10Gi"
    (container,) = spec["template"]["spec"]["containers"]
    assert container["image"] == "nats:2.15.1-alpine"
    assert of_kind(docs, "PodDisruptionBudget")["sb-nats"]["spec"]["maxUnavailable"] == 1
    conf = of_kind(docs, "ConfigMap")["sb-nats-config"]["data"]["nats.conf"]
    for i in range(3):
        assert f"nats://sb-nats-{i}.sb-nats-headless.llm.svc:6222" in conf
    assert "jetstream" in conf and "include ./auth.conf" in conf
    # The services use it, not the external URL.
    for name in SERVICES:
        assert env_of(of_kind(docs, "Deployment")[f"sb-{name}"])["NATS_URL"]["value"] == "nats://sb-nats:4222"


def test_a_single_server_cluster_has_no_routes_and_streams_need_enough_servers() -> None:
    docs = render(EXISTING, CLUSTER, {"nats": {"cluster": {"replicas": 1}, "streamReplicas": 1}})
    assert "cluster {" not in of_kind(docs, "ConfigMap")["sb-nats-config"]["data"]["nats.conf"]
    assert "sb-nats" not in of_kind(docs, "PodDisruptionBudget")
    with pytest.raises(HelmError, match="streamReplicas"):
        render(EXISTING, CLUSTER, {"nats": {"cluster": {"replicas": 1}, "streamReplicas": 3}})


def test_no_nats_at_all_refuses_to_render() -> None:
    with pytest.raises(HelmError, match=r"nats\.external\.url"):
        render(EXISTING, {"nats": {"external": {"url": ""}}})


def test_the_in_chart_servers_configuration_is_valid_for_nats_server(tmp_path: Path) -> None:
    """nats.conf and the auth.conf it includes, laid out as the pod's projected volume lays them out,
    accepted by nats-server's own configuration check."""
    docs = render(EXISTING, CLUSTER, {"nats": {"namespace": "prod"}})
    (tmp_path / "nats.conf").write_text(of_kind(docs, "ConfigMap")["sb-nats-config"]["data"]["nats.conf"])
    (tmp_path / "auth.conf").write_text(auth_conf(docs))
    checked = subprocess.run(
        [nats_server_binary(), "-c", str(tmp_path / "nats.conf"), "-t"],
        env={"POD_NAME": "sb-nats-0"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "is valid" in checked.stdout + checked.stderr


def test_the_notes_say_where_nats_is_and_how_to_include_the_users() -> None:
    from tests.unit.deploy.test_chart import render_files

    def notes(*overrides: dict[str, object]) -> str:
        return render_files(EXISTING, *overrides)["switchboard/templates/NOTES.txt"]

    assert "sb-nats-auth" in notes() and "auth\\.conf" in notes()
    assert "StatefulSet sb-nats" in notes(CLUSTER)
    assert "sb-nats-auth" not in notes({"nats": {"auth": {"enabled": False}}})
