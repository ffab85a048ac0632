"""`python -m webhooks provision`: the requests it sends Prefect Cloud, and the env file it writes.

Prefect Cloud cannot be reached from here: the CLI runs for real against a local HTTP double
of Cloud's webhooks API (tests/prefect_cloud_double.py), which records every request.
"""

import os
import subprocess
import sys

import pytest

from configuration import REPO_ROOT
from tests.prefect_cloud_double import PrefectCloudDouble
from webhooks.catalog import load_catalog

WEBHOOKS = load_catalog()


@pytest.fixture
def cloud():
    with PrefectCloudDouble() as double:
        yield double


def provision(tmp_path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """Run the provision command as a user would, with only the given Prefect settings."""
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith(("PREFECT_", "SUMMARY_"))
    }
    environment |= {"PREFECT_HOME": str(tmp_path / "prefect-home"), **env}
    return subprocess.run(
        [sys.executable, "-m", "webhooks", "provision", "--env-file", str(tmp_path / "webhooks.env"), *args],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def against(cloud: PrefectCloudDouble) -> dict[str, str]:
    return {"PREFECT_API_URL": cloud.api_url, "PREFECT_API_KEY": cloud.api_key}


def provision_double(
    tmp_path, cloud: PrefectCloudDouble, *args: str, **env: str
) -> subprocess.CompletedProcess:
    """Provision against the double: plain http on loopback, so the command must be told it is wanted."""
    return provision(tmp_path, "--allow-any-host", *args, **against(cloud), **env)


def env_file(tmp_path) -> dict[str, str]:
    lines = (tmp_path / "webhooks.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def test_provision_creates_the_four_webhooks_from_the_repo_templates_and_writes_their_urls(tmp_path, cloud):
    result = provision_double(tmp_path, cloud)
    assert result.returncode == 0, result.stderr
    prefix = f"/api/accounts/{cloud.account}/workspaces/{cloud.workspace}/webhooks"
    assert [(r.method, r.path) for r in cloud.requests] == [("POST", f"{prefix}/filter")] + [
        ("POST", f"{prefix}/")
    ] * 4
    assert {r.authorization for r in cloud.requests} == {f"Bearer {cloud.api_key}"}
    assert [r.body for r in cloud.requests[1:]] == [
        {
            "name": w.name,
            "description": w.description,
            "template": w.template_path.read_text(),
            "enabled": True,
        }
        for w in WEBHOOKS
    ]
    slugs = {webhook["name"]: webhook["slug"] for webhook in cloud.webhooks.values()}
    assert env_file(tmp_path) == {
        w.url_variable: f"http://127.0.0.1:{cloud.port}/hooks/{slugs[w.name]}" for w in WEBHOOKS
    }
    assert "mainframe" in result.stdout and "created" in result.stdout
    assert (tmp_path / "webhooks.env").stat().st_mode & 0o777 == 0o600


def test_provisioning_twice_changes_nothing(tmp_path, cloud):
    assert provision_double(tmp_path, cloud).returncode == 0
    first_file, first_state = env_file(tmp_path), [dict(webhook) for webhook in cloud.webhooks.values()]
    cloud.requests.clear()
    result = provision_double(tmp_path, cloud)
    assert result.returncode == 0, result.stderr
    assert [request.method + " " + request.path.rsplit("/", 1)[-1] for request in cloud.requests] == [
        "POST filter"
    ]
    assert [dict(webhook) for webhook in cloud.webhooks.values()] == first_state
    assert env_file(tmp_path) == first_file
    assert result.stdout.count("unchanged") == 4


def test_a_changed_template_is_updated_keeping_the_operators_choices(tmp_path, cloud):
    service_account = "7c1f3a8e-0000-4000-8000-000000000001"
    old = cloud.add(
        name="summary", description="old", template="{}", enabled=False, service_account_id=service_account
    )
    result = provision_double(tmp_path, cloud)
    assert result.returncode == 0, result.stderr
    (put,) = [request for request in cloud.requests if request.method == "PUT"]
    summary = next(w for w in WEBHOOKS if w.name == "summary")
    assert put.path.endswith(f"/webhooks/{old['id']}")
    assert put.body == {
        "name": "summary",
        "description": summary.description,
        "template": summary.template,
        "enabled": False,
        "service_account_id": service_account,
    }
    assert [request.body["name"] for request in cloud.requests if request.path.endswith("/webhooks/")] == [
        "mainframe",
        "azure-storage",
        "reconciliation",
    ]
    assert env_file(tmp_path)["SUMMARY_WEBHOOK_URL"] == f"http://127.0.0.1:{cloud.port}/hooks/{old['slug']}"


def test_the_env_file_keeps_its_other_lines_and_gains_tokens_from_the_environment(tmp_path, cloud):
    (tmp_path / "webhooks.env").write_text(
        "# mine\nAZURE_STORAGE_CONNECTION_STRING=UseDevelopmentStorage=true\nSUMMARY_WEBHOOK_URL=old\n"
    )
    result = provision_double(tmp_path, cloud, SUMMARY_WEBHOOK_TOKEN="pnu_service_account")
    assert result.returncode == 0, result.stderr
    lines = (tmp_path / "webhooks.env").read_text().splitlines()
    assert lines[:2] == ["# mine", "AZURE_STORAGE_CONNECTION_STRING=UseDevelopmentStorage=true"]
    values = env_file(tmp_path)
    assert values["SUMMARY_WEBHOOK_URL"].startswith(f"http://127.0.0.1:{cloud.port}/hooks/")
    assert values["SUMMARY_WEBHOOK_TOKEN"] == "pnu_service_account"
    assert "MAINFRAME_WEBHOOK_TOKEN" not in values


def test_local_writes_the_gateways_urls_without_any_network_call(tmp_path, cloud):
    result = provision(tmp_path, "--local", "--port", "5280", **against(cloud))
    assert result.returncode == 0, result.stderr
    assert cloud.requests == []
    assert env_file(tmp_path) == {w.url_variable: f"http://127.0.0.1:5280/hooks/{w.slug}" for w in WEBHOOKS}


def test_a_rejected_api_key_says_how_to_log_in(tmp_path, cloud):
    result = provision(
        tmp_path, "--allow-any-host", PREFECT_API_URL=cloud.api_url, PREFECT_API_KEY="pnu_wrong"
    )
    assert result.returncode == 1
    assert "401 (is PREFECT_API_KEY valid? `prefect cloud login` sets it)" in result.stderr
    assert not (tmp_path / "webhooks.env").exists()


def test_a_url_that_is_not_a_cloud_workspace_points_to_login_or_local(tmp_path):
    result = provision(tmp_path, PREFECT_API_URL="http://127.0.0.1:4200/api", PREFECT_API_KEY="pnu_x")
    assert result.returncode == 1
    assert "is not a Prefect Cloud workspace" in result.stderr and "--local" in result.stderr


def test_two_webhooks_with_one_name_are_reported_not_guessed(tmp_path, cloud):
    first, second = cloud.add(name="mainframe", template="{}"), cloud.add(name="mainframe", template="{}")
    result = provision_double(tmp_path, cloud)
    assert result.returncode == 1
    assert (
        f"2 webhooks are named 'mainframe' in this workspace ({first['id']}, {second['id']})" in result.stderr
    )
    assert [request.method for request in cloud.requests] == ["POST"]


def test_a_workspace_url_on_another_host_never_gets_the_api_key(tmp_path, cloud):
    for host in (f"http://127.0.0.1:{cloud.port}", "http://api.prefect.cloud", "https://attacker.example"):
        result = provision(
            tmp_path,
            PREFECT_API_URL=cloud.api_url.replace(f"http://127.0.0.1:{cloud.port}", host),
            PREFECT_API_KEY="pnu_x",
        )
        assert result.returncode == 1
        assert "is not on https://api.prefect.cloud" in result.stderr and "--allow-any-host" in result.stderr
    assert cloud.requests == []


def test_a_value_with_a_line_break_is_refused_and_nothing_is_written(tmp_path, cloud):
    result = provision_double(
        tmp_path, cloud, SUMMARY_WEBHOOK_TOKEN="pnu_x\nPREFECT_API_URL=http://attacker.example"
    )
    assert result.returncode == 1
    assert "SUMMARY_WEBHOOK_TOKEN would span lines" in result.stderr
    assert not (tmp_path / "webhooks.env").exists()


def test_a_planted_symlink_is_replaced_not_followed(tmp_path, cloud):
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    for planted in ("webhooks.env", "webhooks.env.tmp"):
        (tmp_path / planted).symlink_to(victim)
    result = provision_double(tmp_path, cloud, "--local")
    assert result.returncode == 0, result.stderr
    assert victim.read_text() == "untouched\n"
    assert not (tmp_path / "webhooks.env").is_symlink()
    assert (tmp_path / "webhooks.env").stat().st_mode & 0o777 == 0o600
