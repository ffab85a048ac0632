"""Where the simulators find the pipeline: webhook URLs in the env file, storage as the Function App does."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path

from configuration import REPO_ROOT
from configuration.declared import webhook_variable
from devstack.functions_host.local_settings import read_env_file
from file_relay.delivery import WebhookEndpoint
from file_relay.settings import RelaySettings, SettingsError, webhook_from

# Written by `python -m webhooks provision` (Prefect Cloud) or `... provision --local` (the gateway).
DEFAULT_ENV_FILE = REPO_ROOT / "webhooks.env"
# Azurite on its default ports, what a laptop runs.
LOCAL_STORAGE = "UseDevelopmentStorage=true"


def add_location_arguments(parser: argparse.ArgumentParser, storage: str) -> None:
    """--env-file and --connection-string, as every simulator takes them."""
    parser.add_argument(
        "--env-file", type=Path, default=DEFAULT_ENV_FILE, help="webhook URLs (default: %(default)s)"
    )
    parser.add_argument(
        "--connection-string", help=f"{storage} storage (default: $AzureWebJobsStorage, else Azurite)"
    )


def read_webhook(env_file: Path, name: str) -> WebhookEndpoint:
    """Webhook `name` (`mainframe`, `reconciliation`) with its URL, token and secret from `env_file`."""
    if not env_file.exists():
        raise SettingsError(
            f"{env_file} not found: it holds the webhook URLs. Write it with "
            f"`.venv/bin/python -m webhooks provision --local` (the local gateway) or "
            f"`.venv/bin/python -m webhooks provision` (Prefect Cloud); `make demo` writes it too."
        )
    try:
        webhook = webhook_from(read_env_file(env_file), name)
    except ValueError as error:  # a line that is not NAME=value, or a malformed URL or secret
        raise SettingsError(f"{env_file}: {error}") from None
    if webhook is None:
        raise SettingsError(
            f"{env_file} has no {webhook_variable(name, 'URL')}: run "
            f"`.venv/bin/python -m webhooks provision` (add --local for the gateway) to write it."
        )
    return webhook


def storage_connection_string(
    explicit: str | None, settings: RelaySettings, environ: Mapping[str, str] = os.environ
) -> str:
    """`explicit`, else the setting STORAGE_CONNECTION names (AzureWebJobsStorage), else local Azurite."""
    return explicit or environ.get(settings.storage_connection, "").strip() or LOCAL_STORAGE
