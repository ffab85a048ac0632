"""Turn one webhook request into Prefect events, rendering its template the way Prefect Cloud does.

Context (as Prefect Cloud documents it): `method` upper case; `headers` looked up in any case,
without `Authorization` (nor the other credential headers); `body` parsed from JSON or a form,
else the raw text. The rendered text must be a JSON object with `event` and
`resource["prefect.resource.id"]`; `id`, `occurred` and a default `payload` are filled in and the
webhook is added as a related resource. An event Prefect would answer 204 for and then drop (too
large, nested too deep) is refused here instead.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson
from jinja2 import ChainableUndefined, TemplateSyntaxError
from prefect.server.events.schemas.events import Event
from prefect.server.utilities.user_templates import (
    TemplateSecurityError,
    UserTemplateEnvironment,
    validate_user_template,
)
from prefect.settings import get_current_settings
from pydantic import ValidationError

from webhooks.catalog import ConfigError, Webhook
from webhooks.errors import MalformedBody
from webhooks.limits import MAX_BODY_DEPTH, EventTooLarge, check_publishable, excerpt, nesting_depth

# Prefect Cloud's name for it, so automations move between Cloud and the gateway unchanged.
FAILED_EVENT = "prefect-cloud.webhook.failed"
# Event ids derived from idempotency keys live in this namespace, so they never collide with others.
EVENT_ID_NAMESPACE = uuid.UUID("6f1d7a52-3c1e-4f7e-9b7e-2f3a8c0d5e41")
IDEMPOTENCY_HEADERS = ("idempotency-key", "webhook-id", "ce-id")
# Credentials a sender may put in headers: neither templates nor events ever see them.
HIDDEN_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key"})
# Fields Prefect parses rather than takes as they are; the gateway fills them unless a template does.
_PARSED_FIELDS = frozenset({"id", "occurred", "follows"})
_LIMITS = get_current_settings().server.events


class RequestHeaders(dict):
    """Request headers by lower-case name, found in any case; credential headers are never there."""

    def __init__(self, pairs: Iterable[tuple[str, str]], hidden: frozenset[str] = HIDDEN_HEADERS) -> None:
        super().__init__()
        for name, value in pairs:
            name = name.lower()
            if name not in hidden:
                super().__setitem__(name, f"{self[name]}, {value}" if name in self else value)

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(name.lower(), default)


def parse_body(content_type: str, raw: bytes) -> Any:
    """The body as templates see it: JSON, a flat dict for a form, else the text."""
    if not raw:
        return ""
    text = raw.decode("utf-8", errors="replace")
    mime = content_type.split(";", 1)[0].strip().lower()
    if mime == "application/x-www-form-urlencoded":
        return dict(parse_qsl(text, keep_blank_values=True))
    declared = mime == "application/json" or mime.endswith("+json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        if declared:
            raise MalformedBody(f"the body is not valid JSON ({error})", text) from None
        return text
    # Nesting needs brackets: most bodies have too few to be deep, and skip the walk.
    if raw.count(b"[") + raw.count(b"{") > MAX_BODY_DEPTH and nesting_depth(body) > MAX_BODY_DEPTH:
        if declared:
            raise MalformedBody(
                f"the body is nested deeper than {MAX_BODY_DEPTH} levels, more than Prefect stores", text
            )
        return text
    return body


def from_cloud_event(body: Any, headers: RequestHeaders) -> str:
    """A Prefect event (JSON) from a CloudEvent in structured (body) or binary (`ce-` headers) mode."""
    if isinstance(body, dict) and "specversion" in body:
        attributes = {name: value for name, value in body.items() if name not in ("data", "data_base64")}
        data = body.get("data", body.get("data_base64"))
    else:
        attributes = {name[3:]: value for name, value in headers.items() if name.startswith("ce-")}
        data = body
    if not attributes.get("type") or not (attributes.get("subject") or attributes.get("source")):
        raise ValueError("not a CloudEvent: `type` and `source` are required (fields or ce- headers)")
    event = {
        "event": attributes["type"],
        "resource": {"prefect.resource.id": attributes.get("subject") or attributes["source"]},
        "payload": {"data": data, "cloudevents": attributes},
    }
    if attributes.get("time"):
        event["occurred"] = attributes["time"]
    return orjson.dumps(event).decode()


def _environment() -> UserTemplateEnvironment:
    # Prefect's own sandbox for user templates: no Python internals, bounded ranges, humanize filters.
    environment = UserTemplateEnvironment(
        undefined=ChainableUndefined, extensions=["jinja2_humanize_extension.HumanizeExtension"]
    )
    environment.filters["from_cloud_event"] = from_cloud_event
    return environment


_ENVIRONMENT = _environment()


def check_template(webhook: Webhook) -> None:
    """Raise ConfigError, with file and line, if the webhook's template cannot be compiled."""
    try:
        validate_user_template(webhook.template)
        _ENVIRONMENT.from_string(webhook.template)
    except TemplateSyntaxError as error:
        raise ConfigError(f"template {webhook.template_path}, line {error.lineno}: {error.message}") from None
    except TemplateSecurityError as error:
        raise ConfigError(f"template {webhook.template_path}: {error.message}") from None


@dataclass(frozen=True)
class EventKey:
    """An idempotency key as sent (`name`), as stored (`key_id`), and the event id it gives with the
    content it came with: the same key and the same content, the same event id."""

    name: str
    key_id: str
    event_id: str


@dataclass
class Interpretation:
    """What one request became: events to forward, and failure events for what could not be used.

    `keys` holds, by event id, the idempotency key each event id was derived from;
    `key_from_headers` says the key came with the request (reusing it for another body is
    refused), not from an event id in the body (a reused id with other content is a distinct event).
    """

    events: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    keys: dict[str, EventKey] = field(default_factory=dict)
    key_from_headers: bool = False
    too_large: bool = False

    @property
    def errors(self) -> list[str]:
        return [failure["payload"]["error"] for failure in self.failures]

    @property
    def status(self) -> int:
        """The answer for a request with failures: 413 when an event was too large, else 400."""
        return 413 if self.too_large else 400


class EventRenderer:
    """Renders one webhook's template into complete, validated Prefect events."""

    def __init__(self, webhook: Webhook, hidden_headers: frozenset[str] = HIDDEN_HEADERS) -> None:
        check_template(webhook)
        self.webhook = webhook
        self.hidden_headers = hidden_headers
        self._template = _ENVIRONMENT.from_string(webhook.template)
        self._resource = {"prefect.resource.id": webhook.resource_id, "prefect.resource.name": webhook.name}
        self._related = {**self._resource, "prefect.resource.role": "webhook"}
        # A signed request's key is its signed `webhook-id`: an unsigned header must not replay it as new.
        self._key_headers = ("webhook-id",) if webhook.auth == "standard-webhooks" else IDEMPOTENCY_HEADERS

    def interpret(self, method: str, header_pairs: Iterable[tuple[str, str]], raw: bytes) -> Interpretation:
        headers = RequestHeaders(header_pairs, self.hidden_headers)
        result = Interpretation()
        try:
            body = parse_body(headers.get("content-type", ""), raw)
        except MalformedBody as error:
            result.failures.append(self._failure(method, headers, error.text, None, str(error)))
            return result
        split = self.webhook.split_array and isinstance(body, list)
        bodies = [[element] for element in body] if split else [body]
        header_key = next((headers[name] for name in self._key_headers if headers.get(name)), None)
        result.key_from_headers = header_key is not None
        for index, element_body in enumerate(bodies):
            rendered = None
            try:
                rendered = self._template.render(method=method, headers=headers, body=element_body)
                key = _idempotency_key(
                    self.webhook.slug, header_key, raw, element_body, index if split else None
                )
                event = self._complete(rendered, method, headers, element_body, key)
                check_publishable(event)
                result.events.append(event)
                if key and event["id"] == key.event_id:
                    result.keys[event["id"]] = key
            # A template is user code: whatever it raises is that request's error, never the gateway's.
            except Exception as error:  # noqa: BLE001
                result.too_large |= isinstance(error, EventTooLarge)
                where = f" (array element {index})" if split else ""
                message = f"webhook {self.webhook.name!r}{where}: {_describe(error)}"
                result.failures.append(self._failure(method, headers, element_body, rendered, message))
        return result

    def _complete(
        self, rendered: str, method: str, headers: RequestHeaders, body: Any, key: EventKey | None
    ) -> dict:
        try:
            event = orjson.loads(rendered)
        except orjson.JSONDecodeError as error:
            raise ValueError(f"the template did not render valid JSON ({error})") from None
        if not isinstance(event, dict):
            raise ValueError(f"the template must render a JSON object, not {type(event).__name__}")
        if event.get("event") == "":
            # Prefect would store it, but an event without a name matches no trigger: a lost kickoff.
            raise ValueError(
                "the template rendered an empty event name: does the body have the field it reads?"
            )
        chosen = event.keys() & _PARSED_FIELDS
        if "id" not in event:
            event["id"] = key.event_id if key else str(uuid.uuid4())
        event.setdefault("occurred", _now())
        event.setdefault("payload", {"method": method, "headers": dict(headers), "body": body})
        related = event.get("related", [])
        event["related"] = [*related, self._related] if isinstance(related, list) else related
        if chosen:
            # The template chose an id or a time itself: let the model `POST /api/events` uses judge them.
            Event.model_validate(event)
        else:
            check_event(event)
        return event

    def _failure(
        self, method: str, headers: RequestHeaders, body: Any, rendered: str | None, error: str
    ) -> dict:
        copied = {"headers": dict(headers), "body": body, "rendered": rendered, "error": error}
        return {
            "id": str(uuid.uuid4()),
            "occurred": _now(),
            "event": FAILED_EVENT,
            "resource": self._resource,
            "payload": {"method": method, **{name: excerpt(value) for name, value in copied.items()}},
        }


def check_event(event: dict[str, Any]) -> None:
    """Raise ValueError, naming the field, where Prefect's `Event` model would refuse `event`.

    The same rules as `prefect.server.events.schemas.events.Event` for the fields a template
    writes, at a fraction of the model's cost (it was the gateway's largest per-request cost);
    `id`, `occurred` and `follows` are the gateway's own. tests/test_rendering.py holds both to
    the same verdicts.
    """
    name = event.get("event")
    if not isinstance(name, str):
        raise ValueError("event: Field required (a string)")
    if len(name) > _LIMITS.maximum_event_name_length:
        raise ValueError(f"event: Event name must be at most {_LIMITS.maximum_event_name_length} characters")
    _check_resource(event.get("resource"), "resource", None)
    related = event.get("related")
    if not isinstance(related, list):
        raise ValueError("related: Input should be a valid list")
    if len(related) > _LIMITS.maximum_related_resources:
        raise ValueError(
            f"related: The maximum number of related resources is {_LIMITS.maximum_related_resources}"
        )
    for index, resource in enumerate(related):
        _check_resource(resource, f"related.{index}", "prefect.resource.role")
    if not isinstance(event.get("payload"), dict):
        raise ValueError("payload: Input should be a valid dictionary")


def _check_resource(resource: Any, where: str, required_role: str | None) -> None:
    if not isinstance(resource, dict):
        raise ValueError(f"{where}: Input should be a valid dictionary")
    for label, value in resource.items():
        if not isinstance(value, str):
            raise ValueError(f"{where}.{label}: Input should be a valid string")
    if len(resource) > _LIMITS.maximum_labels_per_resource:
        raise ValueError(
            f"{where}: The maximum number of labels per resource is {_LIMITS.maximum_labels_per_resource}"
        )
    for label in ("prefect.resource.id", required_role):
        if label and not resource.get(label):
            raise ValueError(f"{where}: Resources must include a non-empty {label} label")


def _idempotency_key(
    slug: str, header_key: str | None, raw: bytes, body: Any, index: int | None
) -> EventKey | None:
    """The request's key (per element when split) over its body, else an Event Grid or CloudEvents
    event id over that event's content: only a true redelivery makes the same event id again."""
    if header_key:
        key, content = (header_key if index is None else f"{header_key}#{index}"), raw
    else:
        element = body[0] if isinstance(body, list) and len(body) == 1 else body
        if not (isinstance(element, dict) and isinstance(element.get("id"), str)):
            return None
        if "eventType" not in element and "specversion" not in element:
            return None
        # Event Grid redelivers an event unchanged, though perhaps batched with others.
        key, content = f"event-id:{element['id']}", orjson.dumps(element, option=orjson.OPT_SORT_KEYS)
    scoped = f"{slug}\n{key}"  # per webhook
    return EventKey(
        key,
        str(uuid.uuid5(EVENT_ID_NAMESPACE, scoped)),
        str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{scoped}\n{hashlib.sha256(content).hexdigest()}")),
    )


def _describe(error: Exception) -> str:
    if isinstance(error, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'event'}: {e['msg']}" for e in error.errors())
    return str(error) or type(error).__name__


def _now() -> str:
    return datetime.now(UTC).isoformat()
