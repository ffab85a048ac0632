"""The webhooks the gateway serves and provisioning creates, read once from `webhooks.toml`."""

from __future__ import annotations

import os
import re
import tomllib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from configuration.declared import webhook_variable
from webhooks.errors import ConfigError

DEFAULT_CONFIG = Path(__file__).resolve().parent / "webhooks.toml"

AUTH_SCHEMES = ("none", "bearer", "standard-webhooks")
_KEYS = {"name", "description", "template", "slug", "split_array", "accept_get", "auth", "secret_env"}
_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~-]*$")
# Prefect Cloud's webhook ids are its own; the gateway's follow from the webhook's name.
_WEBHOOK_ID_NAMESPACE = uuid.UUID("0b0c5a7e-8e4d-4f4a-9d43-5d1f7a9e2c61")


@dataclass(frozen=True)
class Webhook:
    """One webhook: how Prefect Cloud knows it and how the gateway serves it."""

    name: str
    description: str
    template_path: Path
    template: str
    slug: str
    split_array: bool = False
    accept_get: bool = False
    auth: str = "none"
    secret_env: str | None = None

    @property
    def resource_id(self) -> str:
        """The webhook as a Prefect resource, as Prefect Cloud names it: `prefect-cloud.webhook.<uuid>`."""
        return f"prefect-cloud.webhook.{uuid.uuid5(_WEBHOOK_ID_NAMESPACE, self.name)}"

    @property
    def url_variable(self) -> str:
        return webhook_variable(self.name, "URL")

    @property
    def token_variable(self) -> str:
        return webhook_variable(self.name, "TOKEN")

    @property
    def secret_variable(self) -> str:
        return webhook_variable(self.name, "SECRET")

    def secret(self, environ: Mapping[str, str] = os.environ) -> str | None:
        """The bearer token or signing secret this webhook requires, or None without auth."""
        if self.auth == "none":
            return None
        value = environ.get(self.secret_env or "")
        if not value:
            raise ConfigError(
                f"webhook {self.name!r} requires {self.auth} auth but {self.secret_env} is not set: "
                f'set it in the gateway\'s environment, or set auth = "none" in the config'
            )
        return value


def load_catalog(path: Path = DEFAULT_CONFIG) -> list[Webhook]:
    """Every webhook in the config file, templates read; a ConfigError names what is wrong."""
    path = Path(path)
    try:
        document = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"webhooks config {path} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"webhooks config {path} is not valid TOML: {error}") from None
    entries = document.get("webhooks")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"webhooks config {path} has no [[webhooks]] tables")
    webhooks = [_webhook(entry, index, path) for index, entry in enumerate(entries, start=1)]
    for attribute in ("name", "slug"):
        values = [getattr(webhook, attribute) for webhook in webhooks]
        duplicates = sorted({value for value in values if values.count(value) > 1})
        if duplicates:
            raise ConfigError(f"webhooks config {path}: {attribute} {', '.join(duplicates)} used twice")
    return webhooks


def _webhook(entry: dict, index: int, path: Path) -> Webhook:
    label = repr(entry["name"]) if isinstance(entry.get("name"), str) else f"#{index}"
    where = f"webhooks config {path}, webhook {label}"
    unknown = sorted(set(entry) - _KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_KEYS))}")
    for key in ("name", "template"):
        if not isinstance(entry.get(key), str) or not entry[key]:
            raise ConfigError(f"{where}: `{key}` is required and must be a non-empty string")
    name = entry["name"]
    slug = entry.get("slug", name)
    if not isinstance(slug, str) or not _SLUG.match(slug):
        raise ConfigError(f"{where}: slug {slug!r} must be letters, digits, '.', '_', '~' or '-'")
    for flag in ("split_array", "accept_get"):
        if not isinstance(entry.get(flag, False), bool):
            raise ConfigError(f"{where}: {flag} must be true or false")
    auth = entry.get("auth", "none")
    if auth not in AUTH_SCHEMES:
        raise ConfigError(f"{where}: auth {auth!r} must be one of {', '.join(AUTH_SCHEMES)}")
    template_path = (path.parent / entry["template"]).resolve()
    try:
        template = template_path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{where}: template {template_path} does not exist") from None
    webhook = Webhook(
        name=name,
        description=str(entry.get("description", "")),
        template_path=template_path,
        template=template,
        slug=slug,
        split_array=entry.get("split_array", False),
        accept_get=entry.get("accept_get", False),
        auth=auth,
    )
    default_env = {
        "none": None,
        "bearer": webhook.token_variable,
        "standard-webhooks": webhook.secret_variable,
    }
    return replace(webhook, secret_env=entry.get("secret_env", default_env[auth]))
