"""Read what reached a Prefect server, the way a test or the demo checks an outcome."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from devstack.supervision.processes import wait_until

# The server rejects a page size above 50 (422).
PAGE_SIZE = 50


def read_events(
    api_url: str,
    event_names: list[str] | None = None,
    resource: dict[str, Any] | None = None,
    since: datetime | None = None,
    client: httpx.Client | None = None,
) -> list[dict[str, Any]]:
    """Every stored event matching the filter, oldest first, following the server's pages.

    Args:
        resource: an `EventResourceFilter`, e.g. `{"id": ["prefect.webhook.summary"]}`
            or `{"labels": {"trackingId": ["T-1"]}}`.
    """
    event_filter = _event_filter(event_names, resource, since)
    own_client = client is None
    client = client or httpx.Client(timeout=10)
    try:
        response = client.post(f"{api_url}/events/filter", json={"filter": event_filter, "limit": PAGE_SIZE})
        response.raise_for_status()
        page = response.json()
        events = list(page["events"])
        while page.get("next_page"):
            response = client.get(page["next_page"])
            response.raise_for_status()
            page = response.json()
            events.extend(page["events"])
        return events
    finally:
        if own_client:
            client.close()


def _event_filter(
    event_names: list[str] | None, resource: dict[str, Any] | None, since: datetime | None
) -> dict[str, Any]:
    since = since or datetime.now(UTC) - timedelta(hours=1)
    event_filter: dict[str, Any] = {
        "occurred": {
            "since": since.isoformat(),
            "until": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
        },
        "order": "ASC",
    }
    if event_names:
        event_filter["event"] = {"name": event_names}
    if resource:
        event_filter["resource"] = resource
    return event_filter


def wait_for_events(
    api_url: str,
    count: int,
    event_names: list[str] | None = None,
    resource: dict[str, Any] | None = None,
    since: datetime | None = None,
    timeout: float = 30.0,
) -> list[dict[str, Any]]:
    """Wait until at least `count` stored events match the filter; return all that match."""

    def enough() -> list[dict[str, Any]] | None:
        events = read_events(api_url, event_names, resource, since)
        return events if len(events) >= count else None

    return wait_until(
        enough, timeout, f"{count} events {event_names or ''} {resource or ''} in Prefect", interval=0.3
    )


def count_events(
    api_url: str,
    event_names: list[str] | None = None,
    resource: dict[str, Any] | None = None,
    since: datetime | None = None,
) -> int:
    """How many stored events match the filter, counted by the server (no paging)."""
    response = httpx.post(
        f"{api_url}/events/count-by/event",
        json={"filter": _event_filter(event_names, resource, since)},
        timeout=30,
    )
    response.raise_for_status()
    return sum(bucket["count"] for bucket in response.json())
