"""Kickoffs whose run Prefect failed to create get one anyway.

Prefect's automations service runs the Kickoff trigger's `run-deployment` action once: when the
API answers it with an error (a Prefect server on SQLite answers 503 "database is locked" under
load), the action is recorded as failed and never retried (prefect/server/events/actions.py),
and that file has no run. Seen here with 300 kickoffs at once: one file lost.

The serving process sees each `prefect.automation.action.failed` of the deployment's Kickoff
automation on its stream; it reads the kickoff the failure names and creates the run the trigger
would have, with the trigger's parameters. The idempotency key comes from the kickoff's id, so a
failure seen twice (a restart re-reads its history) still makes one run.

An action can also never run at all: a Prefect server on SQLite keeps the actions its automations
fired in memory, and a restart drops them (seen in the soak: `prefect.automation.triggered`, then
nothing). A kickoff whose automation fired before the event stream was lost, and that no action
event followed within a minute of the stream's return, gets its run too, unless the deployment
already has one for it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
)
from prefect.events.filters import EventFilter, EventIDFilter
from prefect.events.schemas.events import Event

AUTOMATION_TRIGGERED = "prefect.automation.triggered"
ACTION_FAILED = "prefect.automation.action.failed"
ACTION_EVENTS = {"prefect.automation.action.triggered", "prefect.automation.action.executed", ACTION_FAILED}
# What the stream must carry for this module.
KICKOFF_AUTOMATION_EVENTS = [AUTOMATION_TRIGGERED, *sorted(ACTION_EVENTS)]
# A kickoff is stored within seconds of the failure it caused; one still missing after this never will be.
GIVE_UP_SECONDS = 600
# A fired action runs within seconds; one still silent this long after the stream came back was dropped.
DROPPED_AFTER = timedelta(seconds=60)
RUNS_PAGE = 200


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
        self,
        client: PrefectClient,
        deployment_id: UUID,
        automation_ids: set[UUID],
        logger: logging.Logger,
        stream_reconnected_at: Callable[[], datetime | None],
    ) -> None:
        """`stream_reconnected_at`: when the event stream last came back after a loss (an outage)."""
        self._client = client
        self._deployment_id = deployment_id
        self._automations = {f"prefect.automation.{automation_id}" for automation_id in automation_ids}
        self._logger = logger
        self._stream_reconnected_at = stream_reconnected_at
        # kickoff id -> why it has no run, when seen, and whether a run may exist after all (no
        # failure was seen, only silence)
        self._failed: dict[UUID, tuple[str, float, bool]] = {}
        self._fired: dict[UUID, tuple[datetime, float]] = {}  # no action seen yet: when fired, when seen
        self.repaired = 0

    def observe(self, event: Event) -> None:
        """Take one new event off the stream."""
        if event.resource.id not in self._automations:
            return
        kickoff_id = next(
            (
                UUID(related.id.removeprefix("prefect.event."))
                for related in event.related
                if related.get("prefect.resource.role") == "triggering-event"
            ),
            None,
        )
        if kickoff_id is None:
            return
        if event.event == AUTOMATION_TRIGGERED:
            self._fired.setdefault(kickoff_id, (event.occurred, time.monotonic()))
        elif event.event in ACTION_EVENTS:
            self._fired.pop(kickoff_id, None)
        if event.event == ACTION_FAILED:
            reason = str(event.payload.get("reason", "no reason given"))
            self._failed.setdefault(kickoff_id, (reason, time.monotonic(), False))

    async def repair(self) -> None:
        """Create the run of every kickoff whose automation failed, or whose action was dropped."""
        self._find_dropped()
        if not self._failed:
            return
        wanted = list(self._failed)[:50]  # the server's page; the rest on the next call
        page = await self._client.read_events(filter=EventFilter(id=EventIDFilter(id=wanted)), limit=50)
        for kickoff in page.events:
            reason, _, may_have_run = self._failed[kickoff.id]
            if may_have_run and await self._has_run(kickoff):
                del self._failed[kickoff.id]
                continue
            flow_run = await self._client.create_flow_run_from_deployment(
                self._deployment_id,
                parameters=kickoff_parameters(kickoff),
                idempotency_key=f"kickoff-{kickoff.id}",
            )
            del self._failed[kickoff.id]  # a kickoff not stored yet stays for the next call
            self.repaired += 1
            self._logger.warning(
                "Prefect's Kickoff automation failed to start a run for kickoff %s (%s): started %s",
                kickoff.id,
                reason,
                flow_run.name,
            )
        for kickoff_id, (reason, seen, _) in list(self._failed.items()):
            if time.monotonic() - seen > GIVE_UP_SECONDS:
                del self._failed[kickoff_id]
                self._logger.error(
                    "Prefect's Kickoff automation failed for kickoff %s (%s), and that kickoff is not "
                    "stored: no run can be started for it",
                    kickoff_id,
                    reason,
                )

    def _find_dropped(self) -> None:
        """Kickoffs whose automation fired before the stream was lost, with no action since its return."""
        back = self._stream_reconnected_at()
        for kickoff_id, (fired, seen) in list(self._fired.items()):
            if back and fired < back and datetime.now(UTC) - back > DROPPED_AFTER:
                del self._fired[kickoff_id]
                reason = "its action never ran: the Prefect server went away after the automation fired"
                self._failed.setdefault(kickoff_id, (reason, time.monotonic(), True))
            elif time.monotonic() - seen > GIVE_UP_SECONDS:
                del self._fired[kickoff_id]  # no outage: its action events were just not seen

    async def _has_run(self, kickoff: Event) -> bool:
        """Whether the deployment has a run for `kickoff` (its action ran, its events were lost)."""
        offset = 0
        while True:
            runs = await self._client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[self._deployment_id])),
                flow_run_filter=FlowRunFilter(
                    expected_start_time=FlowRunFilterExpectedStartTime(after_=kickoff.occurred)
                ),
                limit=RUNS_PAGE,
                offset=offset,
            )
            if any(run.parameters.get("kickoff_event_id") == str(kickoff.id) for run in runs):
                return True
            if len(runs) < RUNS_PAGE:
                return False
            offset += RUNS_PAGE
