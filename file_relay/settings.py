"""The Function App's app settings: the one list of names, defaults and meanings, and their parsing.

docs/function-app.md's table is generated from `SETTINGS` (`python -m devstack.settings_docs`), and
tests check it, `local.settings.json.sample` and the deployment templates against `SETTINGS`, so a
setting is added here and nowhere else by hand.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from configuration.declared import Environment, Setting, boolean, choice, number, text, webhook_variable
from file_relay.delivery import RetryPolicy, WebhookEndpoint
from file_relay.errors import SettingsError

TRIGGER_SOURCES = ("LogsAndContainerScan", "EventGrid")
HOST_STORAGE = "AzureWebJobsStorage"
# What Azure leaves in an app setting whose Key Vault reference it could not resolve.
KEY_VAULT_REFERENCE = "@Microsoft.KeyVault("
COMPRESSIONS = ("zlib", "none")
GATEWAY_URL = "http://127.0.0.1:4280/hooks"


@dataclass(frozen=True)
class AppSetting(Setting):
    """One app setting. `default` None means required.

    `used_by`: "host" (the Functions host only), "bindings" (fixed when the host indexes
    function_app.py) or "functions" (the functions' code).
    """

    used_by: str = "functions"


def _webhook_settings(name: str, sender: str) -> tuple[AppSetting, ...]:
    return (
        AppSetting(
            webhook_variable(name, "URL"),
            None,
            f"The `{name}` webhook {sender} posts to (Prefect Cloud or the gateway).",
        ),
        AppSetting(webhook_variable(name, "TOKEN"), "", f"Optional bearer token for the `{name}` webhook."),
        AppSetting(
            webhook_variable(name, "SECRET"),
            "",
            f"Optional Standard Webhooks secret (`whsec_<base64>`); when set, `{name}` requests are signed.",
        ),
    )


def _storage_connection(environment: Environment, setting: str) -> str:
    """STORAGE_CONNECTION, refused when its identity settings are a form the bindings cannot read."""
    name = environment.text(setting)
    identity = sorted(key for key in environment.environ if key.startswith(f"{name}__"))
    if name == HOST_STORAGE or environment.environ.get(name, "").strip() or not identity:
        return name
    # The blob binding reads __serviceUri before __blobServiceUri, the queue bindings read it as
    # the queue endpoint, and __accountName is the host storage's alone: only the two URIs work.
    wrong = [key for key in identity if key.split("__", 1)[1] in ("accountName", "serviceUri")]
    missing = [key for key in (f"{name}__blobServiceUri", f"{name}__queueServiceUri") if key not in identity]
    if wrong or missing:
        raise SettingsError(
            f"STORAGE_CONNECTION is {name!r}, with identity settings {', '.join(identity)}: only "
            f"{HOST_STORAGE} may name its account with __accountName, and __serviceUri is ambiguous "
            f"for a connection that serves blobs and queues. Set {name}__blobServiceUri="
            f"https://<account>.blob.core.windows.net and {name}__queueServiceUri="
            f"https://<account>.queue.core.windows.net instead (optionally __credential and __clientId), "
            f"or set STORAGE_CONNECTION={HOST_STORAGE}."
        )
    return name


# The webhooks the Function App posts to, and the settings each has.
WEBHOOKS = ("azure-storage", "summary")
PARTS = ("URL", "TOKEN", "SECRET")

SETTINGS: tuple[AppSetting, ...] = (
    AppSetting(
        "FUNCTIONS_WORKER_RUNTIME", "python", "The language worker the Functions host starts.", "host"
    ),
    AppSetting(
        "AzureWebJobsStorage",
        None,
        "The host's storage (leases, blob receipts, poison queues) and the default storage connection. "
        "Locally `UseDevelopmentStorage=true` (Azurite); with a managed identity "
        "`AzureWebJobsStorage__accountName`.",
        "host",
    ),
    AppSetting(
        "STORAGE_CONNECTION",
        HOST_STORAGE,
        "Name of the app setting (or identity-setting prefix) for the account holding the incoming "
        "container, the emit queue and the records queue. With a managed identity, only "
        "`AzureWebJobsStorage` may name its account with `__accountName`; another name needs "
        "`<name>__blobServiceUri` and `<name>__queueServiceUri`.",
        "bindings",
        read=_storage_connection,
    ),
    AppSetting(
        "BLOB_TRIGGER_SOURCE",
        "LogsAndContainerScan",
        "How the blob trigger learns of new blobs: `LogsAndContainerScan` (polling; `func start` with "
        "Azurite) or `EventGrid` (Flex Consumption; needs an Event Grid subscription to the blobs "
        "extension).",
        "bindings",
        read=choice(*TRIGGER_SOURCES),
    ),
    AppSetting(
        "INCOMING_CONTAINER",
        "incoming",
        "The container files arrive in; the blob trigger watches it.",
        "bindings",
        read=text,
    ),
    AppSetting(
        "EMIT_QUEUE",
        "emit-work",
        "Queue of work items from the blob trigger to the emitter; failing items end in `<name>-poison`.",
        "bindings",
        read=text,
    ),
    AppSetting(
        "RECORDS_QUEUE",
        "records",
        "The queue the emitter sends record envelopes to (docs/records-queue.md).",
        read=text,
    ),
    AppSetting(
        "RECORDS_COMPRESSION",
        "zlib",
        "`zlib`: each records-queue message is base64 of the zlib-compressed envelope JSON, so one message "
        "carries several times more records; `none`: base64 of the JSON, for consumers that cannot inflate.",
        read=choice(*COMPRESSIONS),
    ),
    AppSetting(
        "TRACKING_ID_METADATA_KEY",
        "trackingId",
        "Blob metadata key holding the file's trackingId (any case).",
        read=text,
    ),
    AppSetting(
        "FIRST_LINE_IS_HEADER",
        "false",
        "`true` when each file's first line is a header, not a record.",
        read=boolean,
    ),
    *_webhook_settings("azure-storage", "the blob trigger"),
    *_webhook_settings("summary", "the emitter"),
    AppSetting(
        "WEBHOOK_TIMEOUT_SECONDS",
        "10",
        "Timeout of one webhook request (connect, write, read).",
        read=number(0.1),
    ),
    AppSetting(
        "WEBHOOK_ATTEMPTS",
        "5",
        "Attempts per webhook call before the function fails and the host retries it.",
        read=number(1, whole=True),
    ),
    AppSetting(
        "WEBHOOK_BACKOFF_SECONDS",
        "1",
        "Wait after the first failed attempt; doubles per attempt up to 30 s. A `Retry-After` up to 30 s is "
        "honoured; a longer one fails the call at once so the host retries it later.",
        read=number(0),
    ),
    AppSetting(
        "SEND_CONCURRENCY",
        "16",
        "Envelopes in flight to the records queue at once.",
        read=number(1, whole=True),
    ),
    AppSetting(
        "STORAGE_ACCOUNT_RESOURCE_ID",
        "",
        "The storage account's ARM id, sent as the Event Grid `topic`; empty: built from the account name.",
        read=text,
    ),
)


@dataclass(frozen=True)
class RelaySettings:
    """The settings file_relay reads, parsed. Webhook settings are checked only where they are used."""

    storage_connection: str
    blob_trigger_source: str
    incoming_container: str
    emit_queue: str
    records_queue: str
    records_compression: str
    tracking_id_metadata_key: str
    first_line_is_header: bool
    webhook_timeout_seconds: float
    webhook_attempts: int
    webhook_backoff_seconds: float
    send_concurrency: int
    storage_account_resource_id: str
    # The <PREFIX>_WEBHOOK_* values as given: a bad one fails only the function that posts to it.
    webhook_values: Mapping[str, str]

    @property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(attempts=self.webhook_attempts, backoff=self.webhook_backoff_seconds)

    def webhook(self, name: str) -> WebhookEndpoint:
        """The webhook `name`, or a SettingsError naming the setting that is missing or malformed."""
        webhook = webhook_from(self.webhook_values, name)
        if webhook is None:
            raise SettingsError(
                f"{webhook_variable(name, 'URL')} is not set: set it to the `{name}` webhook's URL "
                f"(`python -m webhooks provision` writes it to webhooks.env; the local gateway's is "
                f"{GATEWAY_URL}/{name})."
            )
        return webhook


def webhook_from(values: Mapping[str, str], name: str) -> WebhookEndpoint | None:
    """Webhook `name` from `<PREFIX>_WEBHOOK_URL`, `_TOKEN` and `_SECRET` in `values`; None without a URL."""
    url_setting, token_setting, secret_setting = (webhook_variable(name, part) for part in PARTS)
    for setting in (url_setting, token_setting, secret_setting):
        value = values.get(setting, "").strip()
        if value.startswith(KEY_VAULT_REFERENCE):
            raise SettingsError(
                f"{setting}: Key Vault reference not resolved. Azure passed the reference itself, "
                f"{value!r}: the app's identity could not read that secret (a new role assignment takes "
                f"minutes to apply) or the secret does not exist. Refresh the app's references "
                f"(docs/azure.md#key-vault-reference-not-resolved); the app restarts once they resolve."
            )
    url = values.get(url_setting, "").strip()
    if not url:
        return None
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
        raise SettingsError(f"{url_setting} is {url!r}; set it to an http(s) URL.")
    token = values.get(token_setting, "").strip()
    return WebhookEndpoint(name, url, token, _secret(secret_setting, values))


def _secret(name: str, values: Mapping[str, str]) -> bytes:
    value = values.get(name, "").strip()
    if not value:
        return b""
    try:
        key = base64.b64decode(value.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not key:
        raise SettingsError(
            f"{name} is not a Standard Webhooks secret; set it to `whsec_` + base64 of the key."
        )
    return key


def load_settings(environ: Mapping[str, str] | None = None) -> RelaySettings:
    """Parse the settings from `environ` (default: the process environment, where app settings live)."""
    environment = Environment(SETTINGS, os.environ if environ is None else environ)
    webhook_values = {name: environment.text(name) for name in environment.declared if "_WEBHOOK_" in name}
    return RelaySettings(**environment.values(), webhook_values=webhook_values)
