"""Files nobody announced: a blob or a Summary whose file had no kickoff is reported, not ignored.

A file that arrives without a kickoff has no flow run, so no deadline would ever fail for it: the
mainframe job's kickoff call was lost, or someone uploaded a file by hand. The serving process
sees every stage event on its one stream; a `Microsoft.Storage.BlobCreated` or `Summary` whose
file had no kickoff from `lookback` before it to `grace` after it is reported with a
`reconciliation.unannounced` event and a Failed flow run named `<blob> [unannounced]`, so the
operators' automations can page. Each is reported once, across restarts too: the event's id and
the run's idempotency key come from the reported event's id.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.events import emit_event
from prefect.events.filters import EventFilter, EventResourceFilter
from prefect.events.schemas.events import Event, ResourceSpecification
from prefect.states import Failed

from prefect_flows.reconcile import format_duration
from prefect_flows.stage_stream import FORGET_EVERY, occurred_since
from prefect_flows.stages import BLOB_CREATED, SUMMARY, TrackedFile, blob_url_path, last_part

KICKOFF_RESOURCE = {"prefect.resource.id": "prefect.webhook.mainframe", "stage": "on-prem"}
EVENT_ID_NAMESPACE = uuid.UUID("0b7c4d6e-93f1-4b8a-a7a5-6f0d3c2e1b9a")


def is_kickoff(event: Event) -> bool:
    """What the Kickoff trigger starts a run for (prefect_flows/deployment.py)."""
    return all(event.resource.get(label) == value for label, value in KICKOFF_RESOURCE.items())


def file_names_of(url: str) -> list[str]:
    """Every `file_name` a kickoff may give a blob at `url`: its path's endings, as TrackedFile matches."""
    parts = blob_url_path(url).strip("/").split("/")
    endings = ["/".join(parts[start:]) for start in range(len(parts))]
    return endings + ["/" + ending for ending in endings]


class UnannouncedFiles:
    """Watches the stage events for files that had no kickoff, and reports each once."""

    def __init__(
        self,
        client: PrefectClient,
        deployment_id: UUID,
        grace: timedelta,
        lookback: timedelta,
        logger: logging.Logger,
    ) -> None:
        """Args:
        grace: how long after a blob or Summary its kickoff may still come.
        lookback: how long before it the kickoff may have come (the longest stage deadline).
        """
        self._client = client
        self._deployment_id = deployment_id
        self._grace = grace
        self._lookback = lookback
        self._logger = logger
        self._kickoffs: dict[str, list[Event]] = defaultdict(list)  # by trackingId and by blob name
        self._suspects: dict[UUID, Event] = {}
        self._next_forget = datetime.now(UTC)
        self.reported = 0

    def observe(self, event: Event) -> None:
        """Take one new event off the stream."""
        if is_kickoff(event):
            self._remember_kickoff(event)
        elif event.event in (BLOB_CREATED.event, SUMMARY.event) and not self._announced(event):
            self._suspects[event.id] = event

    async def check(self, now: datetime | None = None) -> None:
        """Report each suspect whose grace has passed with no kickoff seen or stored."""
        now = now or datetime.now(UTC)
        for event in [event for event in self._suspects.values() if event.occurred + self._grace <= now]:
            if not self._announced(event) and not await self._kickoff_stored(event):
                await self._report(event)
            del self._suspects[event.id]
        if now >= self._next_forget:
            self._forget_kickoffs_before(now - self._lookback - self._grace)
            self._next_forget = now + FORGET_EVERY

    def _remember_kickoff(self, kickoff: Event) -> None:
        self._kickoffs[f"trackingId:{kickoff.resource.get('trackingId')}"].append(kickoff)
        self._kickoffs[f"blob:{last_part(kickoff.resource.get('file_name') or '')}"].append(kickoff)

    def _announced(self, event: Event) -> bool:
        earliest = event.occurred - self._lookback
        if event.event == SUMMARY.event:
            candidates = self._kickoffs.get(f"trackingId:{event.resource.get('trackingId')}", [])
            return any(kickoff.occurred >= earliest for kickoff in candidates)
        url = event.resource.get("url") or event.resource.id
        for kickoff in self._kickoffs.get(f"blob:{last_part(blob_url_path(url))}", []):
            file = TrackedFile(
                kickoff.resource.get("file_name") or "", kickoff.resource.get("trackingId") or ""
            )
            if kickoff.occurred >= earliest and file.proves(BLOB_CREATED, event):
                return True
        return False

    async def _kickoff_stored(self, event: Event) -> bool:
        """Ask the server: a kickoff may have been stored without passing this process's stream."""
        if event.event == SUMMARY.event:
            labels = {"trackingId": [event.resource.get("trackingId") or ""]}
        else:
            labels = {"file_name": file_names_of(event.resource.get("url") or event.resource.id)}
        found = await self._client.read_events(
            filter=EventFilter(
                occurred=occurred_since(event.occurred - self._lookback),
                resource=EventResourceFilter(
                    id=[KICKOFF_RESOURCE["prefect.resource.id"]],
                    labels=ResourceSpecification({**labels, "stage": [KICKOFF_RESOURCE["stage"]]}),
                ),
            ),
            limit=1,
        )
        return bool(found.events)

    async def _report(self, event: Event) -> None:
        tracking_id = event.resource.get("trackingId") or ""
        if event.event == SUMMARY.event:
            file_name, what = tracking_id, f"Summary event {event.id} for trackingId {tracking_id}"
        else:
            url = event.resource.get("url") or event.resource.id
            file_name, what = last_part(blob_url_path(url)), f"blob {url} (event {event.id})"
        message = (
            f"unannounced: no kickoff was seen for the {what} within "
            f"{format_duration(self._grace.total_seconds())}; nobody follows this file"
        )
        flow_run = await self._client.create_flow_run_from_deployment(
            self._deployment_id,
            parameters={"file_name": file_name, "tracking_id": tracking_id},
            state=Failed(message=message),
            name=f"{file_name} [unannounced]",
            idempotency_key=f"unannounced-{event.id}",
        )
        emit_event(
            event="reconciliation.unannounced",
            id=uuid.uuid5(EVENT_ID_NAMESPACE, str(event.id)),
            resource={
                "prefect.resource.id": f"file.{tracking_id or file_name or 'unknown'}",
                "prefect.resource.name": file_name,
                "file_name": file_name,
                "trackingId": tracking_id,
            },
            related=[
                {
                    "prefect.resource.id": f"prefect.flow-run.{flow_run.id}",
                    "prefect.resource.role": "flow-run",
                }
            ],
            payload={"message": message, "event_id": str(event.id), "event": event.event},
        )
        self.reported += 1
        self._logger.warning("%s (flow run %s)", message, flow_run.name)

    def _forget_kickoffs_before(self, moment: datetime) -> None:
        for key in list(self._kickoffs):
            kept = [kickoff for kickoff in self._kickoffs[key] if kickoff.occurred >= moment]
            if kept:
                self._kickoffs[key] = kept
            else:
                del self._kickoffs[key]
