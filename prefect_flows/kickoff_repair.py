"""Kickoffs whose run Prefect failed to create get one anyway.

Prefect's automations service runs the Kickoff trigger's `run-deployment` action once: when the
API answers it with an error (a Prefect server on SQLite answers 503 "database is locked" under
load), the action is recorded as failed and never retried (prefect/server/events/actions.py),
and that file has no run. Seen here with 300 kickoffs at once: one file lost.

The serving process sees each `prefect.automation.action.failed` of the deployment's Kickoff
automation on its stream; it reads the kickoff the failure names and creates the run the trigger
would have, with the trigger's parameters. The idempotency key comes from the kickoff's id, so a
failure seen twice (a restart re-reads its history) still makes one run.
"""

from __future__ import annotations

import logging
import time
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.events.filters import EventFilter, EventIDFilter
from prefect.events.schemas.events import Event

ACTION_FAILED = "prefect.automation.action.failed"
# A kickoff is stored within seconds of the failure it caused; one still missing after this never will be.
GIVE_UP_SECONDS = 600


def kickoff_parameters(kickoff: Event) -> dict[str, str]:
    """What the Kickoff trigger renders for `kickoff` (prefect_flows/deployment.py)."""
    return {
        "file_name": kickoff.resource.get("file_name") or "",
        "tracking_id": kickoff.resource.get("trackingId") or "",
        "kickoff_event_id": str(kickoff.id),
        "kicked_off_at": kickoff.occurred.isoformat(),
    }


class FailedKickoffs:
    """Starts the runs that the Kickoff automation failed to start."""

    def __init__(
        self, client: PrefectClient, deployment_id: UUID, automation_ids: set[UUID], logger: logging.Logger
    ) -> None:
        self._client = client
        self._deployment_id = deployment_id
        self._automations = {f"prefect.automation.{automation_id}" for automation_id in automation_ids}
        self._logger = logger
        self._failed: dict[UUID, tuple[str, float]] = {}  # kickoff id -> Prefect's reason, when seen
        self.repaired = 0

    def observe(self, event: Event) -> None:
        """Take one new event off the stream."""
        if event.event != ACTION_FAILED or event.resource.id not in self._automations:
            return
        for related in event.related:
            if related.get("prefect.resource.role") == "triggering-event":
                kickoff_id = UUID(related.id.removeprefix("prefect.event."))
                reason = str(event.payload.get("reason", "no reason given"))
                self._failed.setdefault(kickoff_id, (reason, time.monotonic()))

    async def repair(self) -> None:
        """Create the run of every kickoff whose automation failed since the last call."""
        if not self._failed:
            return
        wanted = list(self._failed)[:50]  # the server's page; the rest on the next call
        page = await self._client.read_events(filter=EventFilter(id=EventIDFilter(id=wanted)), limit=50)
        for kickoff in page.events:
            flow_run = await self._client.create_flow_run_from_deployment(
                self._deployment_id,
                parameters=kickoff_parameters(kickoff),
                idempotency_key=f"kickoff-{kickoff.id}",
            )
            reason, _ = self._failed.pop(kickoff.id)  # a kickoff not stored yet stays for the next call
            self.repaired += 1
            self._logger.warning(
                "Prefect's Kickoff automation failed to start a run for kickoff %s (%s): started %s",
                kickoff.id,
                reason,
                flow_run.name,
            )
        for kickoff_id, (reason, seen) in list(self._failed.items()):
            if time.monotonic() - seen > GIVE_UP_SECONDS:
                del self._failed[kickoff_id]
                self._logger.error(
                    "Prefect's Kickoff automation failed for kickoff %s (%s), and that kickoff is not "
                    "stored: no run can be started for it",
                    kickoff_id,
                    reason,
                )
