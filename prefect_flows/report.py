"""What a run leaves behind for people and automations: two artifacts and one outcome event."""

from __future__ import annotations

import re
import uuid
from datetime import datetime

from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact
from prefect.events import emit_event
from prefect.events.schemas.events import Event
from prefect.runtime import flow_run

from prefect_flows.reconcile import Verdict, format_duration
from prefect_flows.stages import STAGES, Stage, TrackedFile

OUTCOME_EVENT_NAMESPACE = uuid.UUID("5e0a3f1c-7d2b-4c8e-9f6a-1b3d5c7e9a20")
OUTCOME_TITLES = {
    "matched": "Reconciled",
    "mismatched": "Records missing",
    "invalid": "Invalid input",
    "overdue": "Overdue",
}


def artifact_key(tracking_id: str, kind: str) -> str:
    """`file-<trackingId>-<kind>` made valid: artifact keys allow only a-z, 0-9 and dashes."""
    slug = re.sub(r"[^a-z0-9]+", "-", tracking_id.lower()).strip("-") or "unknown"
    return f"file-{slug}-{kind}"


def stage_rows(
    kickoff_event_id: str | None, kicked_off_at: datetime, seen: dict[Stage, Event]
) -> list[dict[str, str]]:
    """One row per step (kickoff first): the event that proved it, when, and how long after kickoff."""

    def row(name: str, event_id: str, occurred: datetime | None) -> dict[str, str]:
        if occurred is None:
            return {"stage": name, "event id": event_id, "occurred": "not seen", "after kickoff": "-"}
        return {
            "stage": name,
            "event id": event_id,
            "occurred": occurred.isoformat(timespec="seconds"),
            "after kickoff": format_duration((occurred - kicked_off_at).total_seconds()),
        }

    rows = [row("kickoff", kickoff_event_id or "- (run started by hand)", kicked_off_at)]
    for stage in STAGES:
        event = seen.get(stage)
        rows.append(row(stage.event, str(event.id), event.occurred) if event else row(stage.event, "-", None))
    return rows


async def report(
    file: TrackedFile,
    kickoff_event_id: str | None,
    kicked_off_at: datetime,
    seen: dict[Stage, Event],
    verdict: Verdict,
) -> None:
    """Create the stage table and summary artifacts (keyed by trackingId) and emit the outcome event."""
    rows = stage_rows(kickoff_event_id, kicked_off_at, seen)
    await acreate_table_artifact(
        rows, key=artifact_key(file.tracking_id, "stages"), description=f"Stages of {file.file_name}"
    )
    timings = ", ".join(f"{row['stage']} {row['after kickoff']}" for row in rows[1:])
    await acreate_markdown_artifact(
        f"### {OUTCOME_TITLES[verdict.outcome]}: {file.file_name}\n\n"
        f"**{verdict.message}**\n\n"
        f"trackingId `{file.tracking_id}`, kicked off {kicked_off_at.isoformat(timespec='seconds')}; "
        f"after kickoff: {timings}.\n",
        key=artifact_key(file.tracking_id, "summary"),
        description=f"Reconciliation of {file.file_name}",
    )
    emit_outcome(file, verdict)


def emit_outcome(file: TrackedFile, verdict: Verdict) -> None:
    """`reconciliation.<outcome>` about the file; Prefect relates it to this flow run.

    Its id is the run's and the outcome's: a run that reaches its verdict twice (a second attempt
    after its serving process stopped) makes one event, and automations page once.
    """
    emit_event(
        event=f"reconciliation.{verdict.outcome}",
        id=uuid.uuid5(OUTCOME_EVENT_NAMESPACE, f"{flow_run.id}:{verdict.outcome}"),
        resource={
            "prefect.resource.id": f"file.{file.tracking_id or file.file_name or 'unknown'}",
            "prefect.resource.name": file.file_name,
            "file_name": file.file_name,
            "trackingId": file.tracking_id,
        },
        payload={
            "message": verdict.message,
            "totalRecordsSent": verdict.sent,
            "totalRecordsReceived": verdict.received,
        },
    )
