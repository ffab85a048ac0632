"""Create or update the webhooks in Prefect Cloud, and write their URLs where the senders read them.

Prefect Cloud's webhooks API, per workspace (`PREFECT_API_URL` =
`https://api.prefect.cloud/api/accounts/<account>/workspaces/<workspace>`):
`POST webhooks/filter` lists, `POST webhooks/` creates (201, with the generated `slug`),
`PUT webhooks/<id>` replaces name, description, template, enabled and service account.
A webhook's URL is `https://api.prefect.cloud/hooks/<slug>`.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from webhooks.catalog import Webhook
from webhooks.errors import ProvisioningError

_WORKSPACE_PATH = re.compile(r"/api/accounts/[0-9a-fA-F-]{36}/workspaces/[0-9a-fA-F-]{36}/?$")
# Where Prefect Cloud's API answers: the API key goes nowhere else unless told.
CLOUD_API_HOST = "api.prefect.cloud"
_HINTS = {
    401: " (is PREFECT_API_KEY valid? `prefect cloud login` sets it)",
    403: " (may this key manage webhooks?)",
}


@dataclass(frozen=True)
class Provisioned:
    """What provisioning did to one webhook, and where it now answers."""

    webhook: Webhook
    action: str  # "created", "updated", "unchanged" or "local"
    url: str


class CloudWebhooks:
    """Prefect Cloud's webhooks API for one workspace."""

    def __init__(self, api_url: str | None, api_key: str | None, allow_any_host: bool = False) -> None:
        if not api_url or not _WORKSPACE_PATH.search(urlsplit(api_url).path):
            raise ProvisioningError(
                f"PREFECT_API_URL ({api_url or 'not set'}) is not a Prefect Cloud workspace "
                "(.../api/accounts/<account>/workspaces/<workspace>): run `prefect cloud login`, "
                "or pass --local to point the senders at the gateway instead"
            )
        parts = urlsplit(api_url)
        if (parts.scheme, parts.hostname) != ("https", CLOUD_API_HOST) and not allow_any_host:
            raise ProvisioningError(
                f"PREFECT_API_URL ({api_url}) is not on https://{CLOUD_API_HOST}, and it would receive "
                f"the API key: run `prefect cloud login`, or pass --allow-any-host if that server is yours"
            )
        if not api_key:
            raise ProvisioningError("PREFECT_API_KEY is not set: run `prefect cloud login` or set it")
        self.hooks_root = f"{parts.scheme}://{parts.netloc}/hooks/"
        self._client = httpx.Client(
            base_url=api_url.rstrip("/") + "/", headers={"Authorization": f"Bearer {api_key}"}, timeout=30
        )

    def list(self) -> list[dict[str, Any]]:
        return self._request("POST", "webhooks/filter").json()

    def create(self, fields: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", "webhooks/", fields).json()

    def update(self, webhook_id: str, fields: dict[str, Any]) -> None:
        self._request("PUT", f"webhooks/{webhook_id}", fields)

    def close(self) -> None:
        self._client.close()

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        url = f"{self._client.base_url}{path}"
        try:
            response = self._client.request(method, path, json=body)
        except httpx.TransportError as error:
            raise ProvisioningError(f"cannot reach Prefect Cloud at {url}: {error!r}") from None
        if response.is_error:
            hint = _HINTS.get(response.status_code, "")
            raise ProvisioningError(
                f"Prefect Cloud answered {response.status_code}{hint} to {method} {url}: "
                f"{response.text[:300]}"
            )
        return response


def provision_cloud(webhooks: list[Webhook], cloud: CloudWebhooks) -> list[Provisioned]:
    """Create the missing webhooks and update the changed ones; leave the rest untouched."""
    existing: dict[str, list[dict[str, Any]]] = {}
    for remote in cloud.list():
        existing.setdefault(remote["name"], []).append(remote)
    results = []
    for webhook in webhooks:
        matches = existing.get(webhook.name, [])
        if len(matches) > 1:
            ids = ", ".join(remote["id"] for remote in matches)
            raise ProvisioningError(
                f"{len(matches)} webhooks are named {webhook.name!r} in this workspace ({ids}); "
                "delete all but one"
            )
        if not matches:
            created = cloud.create(
                {
                    "name": webhook.name,
                    "description": webhook.description,
                    "template": webhook.template,
                    "enabled": True,
                }
            )
            results.append(Provisioned(webhook, "created", cloud.hooks_root + created["slug"]))
            continue
        (remote,) = matches
        action = "unchanged"
        if (remote.get("description"), remote.get("template")) != (webhook.description, webhook.template):
            # Whoever disabled the webhook or gave it a service account did so on purpose: keep both.
            cloud.update(
                remote["id"],
                {
                    "name": webhook.name,
                    "description": webhook.description,
                    "template": webhook.template,
                    "enabled": remote.get("enabled", True),
                    "service_account_id": remote.get("service_account_id"),
                },
            )
            action = "updated"
        results.append(Provisioned(webhook, action, cloud.hooks_root + remote["slug"]))
    return results


def gateway_urls(webhooks: list[Webhook], host: str, port: int) -> list[Provisioned]:
    """The gateway's URL for each webhook, as a sender on this machine reaches it."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return [
        Provisioned(webhook, "local", f"http://{host}:{port}/hooks/{webhook.slug}") for webhook in webhooks
    ]


def sender_settings(
    provisioned: list[Provisioned], environ: Mapping[str, str] = os.environ
) -> dict[str, str]:
    """Each webhook's URL, plus its token or signing secret when the environment has one."""
    values: dict[str, str] = {}
    for result in provisioned:
        webhook = result.webhook
        values[webhook.url_variable] = result.url
        sources: dict[str, str | None] = {
            webhook.token_variable: webhook.token_variable,
            webhook.secret_variable: webhook.secret_variable,
        }
        if webhook.auth == "bearer":
            sources[webhook.token_variable] = webhook.secret_env
        elif webhook.auth == "standard-webhooks":
            sources[webhook.secret_variable] = webhook.secret_env
        values |= {
            name: environ[source] for name, source in sources.items() if source and environ.get(source)
        }
    return values


def write_env_file(path: Path, values: dict[str, str]) -> None:
    """Set `values` in a dotenv file, keeping its other lines; only its owner can read it, ever."""
    broken = sorted(name for name, value in values.items() if any(stop in value for stop in "\r\n\0"))
    if broken:
        raise ProvisioningError(
            f"{', '.join(broken)} would span lines in {path}: remove the line break from the value"
        )
    lines = path.read_text().splitlines() if path.exists() else []
    remaining = dict(values)
    updated = []
    for line in lines:
        name = line.split("=", 1)[0].strip() if "=" in line and not line.lstrip().startswith("#") else None
        updated.append(f"{name}={remaining.pop(name)}" if name in remaining else line)
    updated += [f"{name}={value}" for name, value in remaining.items()]
    # A new file of our own (O_EXCL, no symlink followed, mode 0600), then renamed over the old one.
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write("\n".join(updated) + "\n")
        os.replace(temporary, path)
    except OSError:
        os.unlink(temporary)
        raise
