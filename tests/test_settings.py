"""The one list of app settings: parsed with clear errors; the sample file agrees with it."""

from __future__ import annotations

import json

import pytest

from configuration import REPO_ROOT as REPO
from configuration.declared import Environment
from devstack.functions_host import local_settings
from file_relay.settings import SETTINGS, SettingsError, load_settings

NAMES = [setting.name for setting in SETTINGS]
BOTH_WEBHOOKS = {
    "AZURE_STORAGE_WEBHOOK_URL": "http://127.0.0.1:1/a",
    "SUMMARY_WEBHOOK_URL": "http://127.0.0.1:1/s",
}


def test_the_committed_local_settings_sample_is_what_the_settings_list_generates():
    sample = json.loads((REPO / "local.settings.json.sample").read_text())

    assert sample == local_settings.local_settings()
    assert list(sample["Values"]) == NAMES
    assert sample["Values"]["AzureWebJobsStorage"] == "UseDevelopmentStorage=true"


def test_local_settings_take_the_function_apps_webhooks_from_webhooks_env(tmp_path):
    env_file = tmp_path / "webhooks.env"
    env_file.write_text(
        "# written by python -m webhooks provision\n"
        "MAINFRAME_WEBHOOK_URL=https://api.prefect.cloud/hooks/m\n"
        "SUMMARY_WEBHOOK_URL='https://api.prefect.cloud/hooks/s'\n"
        "SUMMARY_WEBHOOK_SECRET=whsec_c2VjcmV0\n"
    )
    output = tmp_path / "local.settings.json"

    assert local_settings.main(["--env-file", str(env_file), "--output", str(output)]) == 0

    values = json.loads(output.read_text())["Values"]
    assert values["SUMMARY_WEBHOOK_URL"] == "https://api.prefect.cloud/hooks/s"
    assert values["SUMMARY_WEBHOOK_SECRET"] == "whsec_c2VjcmV0"
    assert values["AZURE_STORAGE_WEBHOOK_URL"] == "http://127.0.0.1:4280/hooks/azure-storage"
    assert "MAINFRAME_WEBHOOK_URL" not in values
    assert local_settings.main(["--env-file", str(env_file), "--output", str(output)]) == 1


def test_every_setting_the_code_reads_is_in_the_list(monkeypatch):
    read: list[str] = []
    original = Environment.text
    monkeypatch.setattr(Environment, "text", lambda self, name: read.append(name) or original(self, name))

    load_settings(
        {"AZURE_STORAGE_WEBHOOK_URL": "http://127.0.0.1:1/a", "SUMMARY_WEBHOOK_URL": "http://127.0.0.1:1/s"}
    )

    host_only = {s.name for s in SETTINGS if s.used_by == "host"}
    assert set(read) == set(NAMES) - host_only


def test_defaults_apply_when_settings_are_absent_or_empty():
    settings = load_settings({"RECORDS_QUEUE": "  ", "FIRST_LINE_IS_HEADER": "TRUE"})

    assert (settings.incoming_container, settings.emit_queue, settings.records_queue) == (
        "incoming",
        "emit-work",
        "records",
    )
    assert settings.storage_connection == "AzureWebJobsStorage"
    assert settings.first_line_is_header is True
    assert (settings.retry.attempts, settings.retry.backoff, settings.send_concurrency) == (5, 1.0, 16)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("WEBHOOK_ATTEMPTS", "many", "WEBHOOK_ATTEMPTS is 'many'; set it to a whole number of at least 1"),
        ("SEND_CONCURRENCY", "0", "SEND_CONCURRENCY is '0'; set it to a whole number of at least 1"),
        ("FIRST_LINE_IS_HEADER", "maybe", "FIRST_LINE_IS_HEADER is 'maybe'; set it to true or false"),
        (
            "BLOB_TRIGGER_SOURCE",
            "Polling",
            "BLOB_TRIGGER_SOURCE is 'Polling'; set it to one of: LogsAndContainerScan, EventGrid",
        ),
    ],
)
def test_a_malformed_setting_is_named_with_what_to_set(name, value, message):
    with pytest.raises(SettingsError, match=message):
        load_settings({"SUMMARY_WEBHOOK_URL": "http://127.0.0.1:1/s", name: value})


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SUMMARY_WEBHOOK_URL", "ftp://x/y", r"SUMMARY_WEBHOOK_URL is 'ftp://x/y'; set it to an http\(s\)"),
        ("SUMMARY_WEBHOOK_SECRET", "whsec_x y", "SUMMARY_WEBHOOK_SECRET is not a Standard Webhooks secret"),
    ],
)
def test_a_malformed_webhook_setting_fails_only_the_webhook_that_uses_it(name, value, message):
    settings = load_settings({**BOTH_WEBHOOKS, name: value})

    assert settings.webhook("azure-storage").url == "http://127.0.0.1:1/a"
    with pytest.raises(SettingsError, match=message):
        settings.webhook("summary")


@pytest.mark.parametrize("name", ["SUMMARY_WEBHOOK_URL", "SUMMARY_WEBHOOK_TOKEN", "SUMMARY_WEBHOOK_SECRET"])
def test_an_unresolved_key_vault_reference_names_its_setting_where_it_is_used(name):
    reference = "@Microsoft.KeyVault(SecretUri=https://kv-x.vault.azure.net/secrets/SUMMARY/0123)"
    settings = load_settings({**BOTH_WEBHOOKS, name: reference})

    assert settings.webhook("azure-storage").url == "http://127.0.0.1:1/a"
    with pytest.raises(SettingsError, match=rf"^{name}: Key Vault reference not resolved\. .*kv-x\.vault"):
        settings.webhook("summary")


@pytest.mark.parametrize(
    "environ",
    [
        {"STORAGE_CONNECTION": "FILES", "FILES": "UseDevelopmentStorage=true"},
        {"STORAGE_CONNECTION": "AzureWebJobsStorage", "AzureWebJobsStorage__accountName": "stfiles"},
        {
            "STORAGE_CONNECTION": "FILES",
            "FILES__blobServiceUri": "https://stfiles.blob.core.windows.net",
            "FILES__queueServiceUri": "https://stfiles.queue.core.windows.net",
            "FILES__credential": "managedidentity",
        },
    ],
)
def test_storage_connections_the_bindings_can_read_are_accepted(environ):
    assert load_settings(environ).storage_connection == environ["STORAGE_CONNECTION"]


@pytest.mark.parametrize(
    "identity",
    [
        {"FILES__accountName": "stfiles"},
        {"FILES__serviceUri": "https://stfiles.blob.core.windows.net"},
        {"FILES__blobServiceUri": "https://stfiles.blob.core.windows.net"},
    ],
)
def test_a_storage_connection_the_blob_binding_cannot_read_is_refused_with_the_settings_that_work(identity):
    with pytest.raises(SettingsError) as refused:
        load_settings({"STORAGE_CONNECTION": "FILES", "FILES__credential": "managedidentity", **identity})

    message = str(refused.value)
    assert message.startswith("STORAGE_CONNECTION is 'FILES', with identity settings ")
    assert all(name in message for name in identity)
    assert "FILES__blobServiceUri=https://<account>.blob" in message
    assert "FILES__queueServiceUri=https://<account>.queue" in message


def test_a_missing_webhook_url_is_reported_only_where_it_is_needed():
    settings = load_settings({"AZURE_STORAGE_WEBHOOK_URL": "http://127.0.0.1:1/a"})

    assert settings.webhook("azure-storage").url == "http://127.0.0.1:1/a"
    with pytest.raises(
        SettingsError, match=r"SUMMARY_WEBHOOK_URL is not set: .*webhooks provision.*hooks/summary"
    ):
        settings.webhook("summary")
