"""The Function App's app settings: the one list of names, defaults and meanings, and their parsing.

Tests check the README table, `local.settings.json.sample` and the deployment templates against
`SETTINGS`, so a setting is added here and nowhere else by hand.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from file_relay.delivery import RetryPolicy, Webhook

TRIGGER_SOURCES = ("LogsAndContainerScan", "EventGrid")
HOST_STORAGE = "AzureWebJobsStorage"
# What Azure leaves in an app setting whose Key Vault reference it could not resolve.
KEY_VAULT_REFERENCE = "@Microsoft.KeyVault("
COMPRESSIONS = ("zlib", "none")
GATEWAY_URL = "http://127.0.0.1:4280/hooks"


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names it and says what to set."""


@dataclass(frozen=True)
class Setting:
    """One app setting. `default` None means required.

    `used_by`: "host" (the Functions host only), "bindings" (fixed when the host indexes
    function_app.py) or "functions" (the functions' code).
    """

    name: str
    default: str | None
    description: str
    used_by: str = "functions"


def _webhook_settings(name: str, prefix: str, sender: str) -> tuple[Setting, ...]:
    return (
        Setting(
            f"{prefix}_WEBHOOK_URL",
            None,
            f"The `{name}` webhook {sender} posts to (Prefect Cloud or the gateway).",
        ),
        Setting(f"{prefix}_WEBHOOK_TOKEN", "", f"Optional bearer token for the `{name}` webhook."),
        Setting(
            f"{prefix}_WEBHOOK_SECRET",
            "",
            f"Optional Standard Webhooks secret (`whsec_<base64>`); when set, `{name}` requests are signed.",
        ),
    )


WEBHOOKS = {"azure-storage": "AZURE_STORAGE", "summary": "SUMMARY"}

SETTINGS: tuple[Setting, ...] = (
    Setting("FUNCTIONS_WORKER_RUNTIME", "python", "The language worker the Functions host starts.", "host"),
    Setting(
        "AzureWebJobsStorage",
        None,
        "The host's storage (leases, blob receipts, poison queues) and the default storage connection. "
        "Locally `UseDevelopmentStorage=true` (Azurite); with a managed identity "
        "`AzureWebJobsStorage__accountName`.",
        "host",
    ),
    Setting(
        "STORAGE_CONNECTION",
        HOST_STORAGE,
        "Name of the app setting (or identity-setting prefix) for the account holding the incoming "
        "container, the emit queue and the records queue. With a managed identity, only "
        "`AzureWebJobsStorage` may name its account with `__accountName`; another name needs "
        "`<name>__blobServiceUri` and `<name>__queueServiceUri`.",
        "bindings",
    ),
    Setting(
        "BLOB_TRIGGER_SOURCE",
        "LogsAndContainerScan",
        "How the blob trigger learns of new blobs: `LogsAndContainerScan` (polling; `func start` with "
        "Azurite) or `EventGrid` (Flex Consumption; needs an Event Grid subscription to the blobs "
        "extension).",
        "bindings",
    ),
    Setting(
        "INCOMING_CONTAINER",
        "incoming",
        "The container files arrive in; the blob trigger watches it.",
        "bindings",
    ),
    Setting(
        "EMIT_QUEUE",
        "emit-work",
        "Queue of work items from the blob trigger to the emitter; failing items end in `<name>-poison`.",
        "bindings",
    ),
    Setting(
        "RECORDS_QUEUE", "records", "The queue the emitter sends record envelopes to (docs/records-queue.md)."
    ),
    Setting(
        "RECORDS_COMPRESSION",
        "zlib",
        "`zlib`: each records-queue message is base64 of the zlib-compressed envelope JSON, so one message "
        "carries several times more records; `none`: base64 of the JSON, for consumers that cannot inflate.",
    ),
    Setting(
        "TRACKING_ID_METADATA_KEY",
        "trackingId",
        "Blob metadata key holding the file's trackingId (any case).",
    ),
    Setting("FIRST_LINE_IS_HEADER", "false", "`true` when each file's first line is a header, not a record."),
    *_webhook_settings("azure-storage", "AZURE_STORAGE", "the blob trigger"),
    *_webhook_settings("summary", "SUMMARY", "the emitter"),
    Setting("WEBHOOK_TIMEOUT_SECONDS", "10", "Timeout of one webhook request (connect, write, read)."),
    Setting(
        "WEBHOOK_ATTEMPTS",
        "5",
        "Attempts per webhook call before the function fails and the host retries it.",
    ),
    Setting(
        "WEBHOOK_BACKOFF_SECONDS",
        "1",
        "Wait after the first failed attempt; doubles per attempt up to 30 s. A `Retry-After` up to 30 s is "
        "honoured; a longer one fails the call at once so the host retries it later.",
    ),
    Setting("SEND_CONCURRENCY", "16", "Envelopes in flight to the records queue at once."),
    Setting(
        "STORAGE_ACCOUNT_RESOURCE_ID",
        "",
        "The storage account's ARM id, sent as the Event Grid `topic`; empty: built from the account name.",
    ),
)

_BY_NAME = {setting.name: setting for setting in SETTINGS}


@dataclass(frozen=True)
class RelaySettings:
    """The settings file_relay reads, parsed. Webhook settings are checked only where they are used."""

    storage_connection: str
    blob_trigger_source: str
    incoming_container: str
    emit_queue: str
    records_queue: str
    records_compression: str
    tracking_id_key: str
    first_line_is_header: bool
    send_concurrency: int
    webhook_timeout: float
    retry: RetryPolicy
    storage_account_resource_id: str
    # The <PREFIX>_WEBHOOK_* values as given: a bad one fails only the function that posts to it.
    webhook_values: Mapping[str, str]

    def webhook(self, name: str) -> Webhook:
        """The webhook `name`, or a SettingsError naming the setting that is missing or malformed."""
        webhook = webhook_from(self.webhook_values, name, WEBHOOKS[name])
        if webhook is None:
            raise SettingsError(
                f"{WEBHOOKS[name]}_WEBHOOK_URL is not set: set it to the `{name}` webhook's URL "
                f"(`python -m webhooks provision` writes it to webhooks.env; the local gateway's is "
                f"{GATEWAY_URL}/{name})."
            )
        return webhook


class _Environment:
    """Reads settings from the list above: every name read must be in it; empty means the default."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def text(self, name: str) -> str:
        value = self.environ.get(name, "").strip()
        return value or (_BY_NAME[name].default or "")

    def choice(self, name: str, options: tuple[str, ...]) -> str:
        value = self.text(name)
        if value not in options:
            raise SettingsError(f"{name} is {value!r}; set it to one of: {', '.join(options)}.")
        return value

    def flag(self, name: str) -> bool:
        value = self.text(name).lower()
        if value not in ("true", "false", "1", "0", "yes", "no"):
            raise SettingsError(f"{name} is {value!r}; set it to true or false.")
        return value in ("true", "1", "yes")

    def number(self, name: str, minimum: float, whole: bool = False) -> float:
        value = self.text(name)
        try:
            number = int(value) if whole else float(value)
        except ValueError:
            number = None
        if number is None or number < minimum:
            kind = "a whole number" if whole else "a number"
            raise SettingsError(f"{name} is {value!r}; set it to {kind} of at least {minimum:g}.")
        return number

    def webhook_values(self) -> dict[str, str]:
        return {name: self.text(name) for name in _BY_NAME if "_WEBHOOK_" in name}

    def storage_connection(self) -> str:
        """STORAGE_CONNECTION, refused when its identity settings are a form the bindings cannot read."""
        name = self.text("STORAGE_CONNECTION")
        identity = sorted(key for key in self.environ if key.startswith(f"{name}__"))
        if name == HOST_STORAGE or self.environ.get(name, "").strip() or not identity:
            return name
        # The blob binding reads __serviceUri before __blobServiceUri, the queue bindings read it as
        # the queue endpoint, and __accountName is the host storage's alone: only the two URIs work.
        wrong = [key for key in identity if key.split("__", 1)[1] in ("accountName", "serviceUri")]
        missing = [
            key for key in (f"{name}__blobServiceUri", f"{name}__queueServiceUri") if key not in identity
        ]
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


def webhook_from(values: Mapping[str, str], name: str, prefix: str) -> Webhook | None:
    """Webhook `name` from `<prefix>_WEBHOOK_URL`, `_TOKEN` and `_SECRET` in `values`; None without a URL."""
    for setting in (f"{prefix}_WEBHOOK_URL", f"{prefix}_WEBHOOK_TOKEN", f"{prefix}_WEBHOOK_SECRET"):
        value = values.get(setting, "").strip()
        if value.startswith(KEY_VAULT_REFERENCE):
            raise SettingsError(
                f"{setting}: Key Vault reference not resolved. Azure passed the reference itself, "
                f"{value!r}: the app's identity could not read that secret (a new role assignment takes "
                f"minutes to apply) or the secret does not exist. Refresh the app's references "
                f"(docs/azure.md#key-vault-reference-not-resolved); the app restarts once they resolve."
            )
    url = values.get(f"{prefix}_WEBHOOK_URL", "").strip()
    if not url:
        return None
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
        raise SettingsError(f"{prefix}_WEBHOOK_URL is {url!r}; set it to an http(s) URL.")
    token = values.get(f"{prefix}_WEBHOOK_TOKEN", "").strip()
    return Webhook(name, prefix, url, token, _secret(f"{prefix}_WEBHOOK_SECRET", values))


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
    env = _Environment(os.environ if environ is None else environ)
    return RelaySettings(
        storage_connection=env.storage_connection(),
        blob_trigger_source=env.choice("BLOB_TRIGGER_SOURCE", TRIGGER_SOURCES),
        incoming_container=env.text("INCOMING_CONTAINER"),
        emit_queue=env.text("EMIT_QUEUE"),
        records_queue=env.text("RECORDS_QUEUE"),
        records_compression=env.choice("RECORDS_COMPRESSION", COMPRESSIONS),
        tracking_id_key=env.text("TRACKING_ID_METADATA_KEY"),
        first_line_is_header=env.flag("FIRST_LINE_IS_HEADER"),
        send_concurrency=int(env.number("SEND_CONCURRENCY", 1, whole=True)),
        webhook_timeout=env.number("WEBHOOK_TIMEOUT_SECONDS", 0.1),
        retry=RetryPolicy(
            attempts=int(env.number("WEBHOOK_ATTEMPTS", 1, whole=True)),
            backoff=env.number("WEBHOOK_BACKOFF_SECONDS", 0),
        ),
        storage_account_resource_id=env.text("STORAGE_ACCOUNT_RESOURCE_ID"),
        webhook_values=env.webhook_values(),
    )
