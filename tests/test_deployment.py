"""The deployment's settings: defaults that work, and a clear error naming a bad setting."""

import os
import subprocess
import sys

import pytest

from configuration import REPO_ROOT
from devstack.supervision.processes import free_port
from prefect_flows.deployment import FlowSettings, SettingsError, kickoff_trigger


def test_unset_settings_serve_coroutines_with_a_fast_poll_and_batch_deadlines():
    settings = FlowSettings.from_env({})
    assert (settings.serving, settings.poll_seconds, settings.run_limit) == ("coroutine", 0.5, 5000)
    assert settings.unannounced_grace_seconds == 600
    assert settings.deadlines == {
        "transfer_deadline_seconds": 3600,
        "blob_created_deadline_seconds": 5400,
        "summary_deadline_seconds": 7200,
        "reconciliation_deadline_seconds": 10800,
    }


def test_process_serving_defaults_to_a_laptop_limit():
    assert FlowSettings.from_env({"FLOW_SERVING": "process"}).run_limit == 20


def test_each_setting_is_read_from_its_one_variable():
    settings = FlowSettings.from_env(
        {
            "FLOW_SERVING": "process",
            "FLOW_POLL_SECONDS": "0.25",
            "FLOW_RUN_LIMIT": "50",
            "FLOW_UNANNOUNCED_GRACE_SECONDS": "30",
            "FLOW_SUMMARY_DEADLINE_SECONDS": "90",
        }
    )
    assert (settings.serving, settings.poll_seconds, settings.run_limit) == ("process", 0.25, 50)
    assert settings.unannounced_grace_seconds == 30
    assert settings.deadlines["summary_deadline_seconds"] == 90
    assert settings.deadlines["transfer_deadline_seconds"] == 3600


def test_a_process_run_limit_a_sqlite_server_cannot_carry_is_warned_about():
    assert FlowSettings.from_env({"FLOW_SERVING": "process", "FLOW_RUN_LIMIT": "25"}).warnings() == []
    [warning] = FlowSettings.from_env({"FLOW_SERVING": "process", "FLOW_RUN_LIMIT": "50"}).warnings()
    assert warning.startswith("FLOW_RUN_LIMIT=50: a Prefect server on SQLite stops answering")
    assert "coroutines" in warning and "PostgreSQL" in warning
    assert FlowSettings.from_env({"FLOW_RUN_LIMIT": "5000"}).warnings() == []


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FLOW_RUN_LIMIT", "2.5"),
        ("FLOW_RUN_LIMIT", "0"),
        ("FLOW_POLL_SECONDS", "fast"),
        ("FLOW_RECONCILIATION_DEADLINE_SECONDS", "-1"),
        ("FLOW_TRANSFER_DEADLINE_SECONDS", "nan"),
        ("FLOW_UNANNOUNCED_GRACE_SECONDS", "inf"),
    ],
)
def test_a_bad_setting_is_named_with_its_value_and_what_to_set(name, value):
    with pytest.raises(
        SettingsError, match=rf"^{name} is '{value}'; set it to a (whole )?number of at least"
    ):
        FlowSettings.from_env({name: value})


def test_an_unknown_serving_mode_is_named_with_the_ones_there_are():
    with pytest.raises(
        SettingsError, match=r"^FLOW_SERVING is 'threads'; set it to one of: coroutine, process\.$"
    ):
        FlowSettings.from_env({"FLOW_SERVING": "threads"})


def test_the_kickoff_trigger_is_the_original_one_plus_the_kickoff_id_and_time():
    trigger = kickoff_trigger()
    assert trigger.name == "Kickoff"
    assert trigger.match.model_dump() == {
        "prefect.resource.id": "prefect.webhook.mainframe",
        "stage": "on-prem",
    }
    assert trigger.parameters == {
        "file_name": "{{ event.resource.file_name }}",
        "tracking_id": "{{ event.resource.trackingId }}",
        "kickoff_event_id": "{{ event.id|string }}",
        "kicked_off_at": "{{ event.occurred|string }}",
    }


SERVE_COMMANDS = {"script": ["prefect_flows/serve.py"], "module": ["-m", "prefect_flows.serve"]}


def serve(tmp_path, command: str = "script", **env: str) -> subprocess.CompletedProcess[str]:
    """Run serve.py with `env` over a Prefect home of its own (no profile to fall back on)."""
    environ = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    return subprocess.run(
        [sys.executable, *SERVE_COMMANDS[command]],
        cwd=REPO_ROOT,
        env={**environ, "PREFECT_HOME": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("command", SERVE_COMMANDS)
def test_serve_py_as_a_script_or_a_module_refuses_a_bad_setting_before_touching_prefect(tmp_path, command):
    url = f"http://127.0.0.1:{free_port()}/api"
    result = serve(tmp_path, command, FLOW_RUN_LIMIT="many", PREFECT_API_URL=url)
    assert result.returncode == 1
    assert "serve.py: FLOW_RUN_LIMIT is 'many'; set it to a whole number of at least 1." in result.stderr


def test_serve_py_without_an_api_url_says_what_to_set_instead_of_serving_a_throwaway_server(tmp_path):
    result = serve(tmp_path)
    assert result.returncode == 1
    assert "serve.py: PREFECT_API_URL is not set: point it at your Prefect server" in result.stderr


def test_serve_py_names_an_api_it_cannot_reach(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/api"
    result = serve(tmp_path, PREFECT_API_URL=url)
    assert result.returncode == 1
    assert f"serve.py: cannot reach the Prefect API at {url}" in result.stderr
