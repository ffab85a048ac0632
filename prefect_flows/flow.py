"""The reconciliation flow: one run per file, from its kickoff until records sent = records received.

The Kickoff trigger (prefect_flows/deployment.py) starts a run for each mainframe kickoff event;
serve it with `python prefect_flows/serve.py`. The run waits for the file's four stages at once,
each in its own task run over one watch of the stage events, so stages may arrive in any order,
even before the run started. Each stage has a deadline measured from the kickoff; when one passes,
the run fails naming what is missing. When all four are in, it compares the counts: Completed with
`123 records sent, 123 received`, or Failed saying what is wrong. Either way it leaves a stage
table, a summary and a `reconciliation.<outcome>` event.

A run that is started again (its serving process stopped while it waited) simply follows the file
again from its kickoff: everything it needs is in the events Prefect stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import cast

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State
from prefect.events.schemas.events import Event
from prefect.runtime import flow_run
from prefect.states import Cancelled, Completed, Failed

from prefect_flows.deployment import FLOW_NAME
from prefect_flows.reconcile import Verdict, format_duration, overdue, reconcile
from prefect_flows.report import report
from prefect_flows.resume import retire_earlier_attempt
from prefect_flows.stage_stream import FileWatch, StopReason, following
from prefect_flows.stages import (
    BLOB_CREATED,
    RECONCILIATION,
    STAGES,
    SUMMARY,
    TRANSFER,
    Stage,
    TrackedFile,
)

# Stage events stamped up to this long before the kickoff (another machine's clock) still count.
CLOCK_SKEW = timedelta(seconds=30)
# How often a long wait logs what it still waits for.
PROGRESS_LOG_SECONDS = 300


@task(task_run_name="wait for {stage.event}", cache_policy=NO_CACHE)
async def wait_for_stage(
    stage: Stage, file: TrackedFile, watch: FileWatch, kicked_off_at: datetime, deadline_seconds: float
) -> State:
    """Finish when the file's event for `stage` is seen; fail when its deadline passes first."""
    logger = get_run_logger()
    deadline_at = kicked_off_at + timedelta(seconds=deadline_seconds)
    logger.info(
        "Waiting for the %s event of %s until %s (%s after kickoff)",
        stage.event,
        file.file_name,
        deadline_at.isoformat(timespec="seconds"),
        format_duration(deadline_seconds),
    )
    event = await watch.wait_for(stage, seconds_until(deadline_at))
    waited = format_duration(seconds_since(kicked_off_at))
    if event:
        logger.info(
            "Seen %s event %s, occurred %s after kickoff",
            stage.event,
            event.id,
            format_duration((event.occurred - kicked_off_at).total_seconds()),
        )
        return Completed(message=f"seen: event {event.id}")
    if watch.stopped == StopReason.CANCELLED:
        return Cancelled(message=f"stopped waiting after {waited}: {watch.stop_message}")
    if seconds_until(deadline_at) <= 0:
        deadline = format_duration(deadline_seconds)
        return Failed(message=f"no {stage.event} event {waited} after kickoff (deadline {deadline})")
    return Cancelled(message=f"stopped waiting after {waited}: another stage is overdue")


@task(task_run_name="reconcile counts", cache_policy=NO_CACHE)
def reconcile_counts(watch: FileWatch) -> Verdict:
    """Compare records sent (Summary) with records received (Reconciliation)."""
    verdict = reconcile(watch.proofs(SUMMARY), watch.proofs(RECONCILIATION))
    get_run_logger().info("%s: %s", verdict.outcome, verdict.message)
    return verdict


@flow(name=FLOW_NAME, flow_run_name="{file_name} [{tracking_id}]")
async def reconcile_file(
    file_name: str,
    tracking_id: str,
    kickoff_event_id: str | None = None,
    kicked_off_at: datetime | None = None,
    transfer_deadline_seconds: float = TRANSFER.default_deadline_seconds,
    blob_created_deadline_seconds: float = BLOB_CREATED.default_deadline_seconds,
    summary_deadline_seconds: float = SUMMARY.default_deadline_seconds,
    reconciliation_deadline_seconds: float = RECONCILIATION.default_deadline_seconds,
) -> State:
    """Follow one file through transfer, blob arrival, Summary and Reconciliation, then reconcile.

    Args:
        kickoff_event_id: the kickoff event that started this run (set by the trigger).
        kicked_off_at: when the kickoff occurred; deadlines count from it. A run started by hand
            without it counts from its own start.
    """
    logger = get_run_logger()
    file = TrackedFile(file_name, tracking_id)
    if kicked_off_at is None:
        logger.warning("No kickoff time given (run started by hand?): deadlines count from now")
    kicked_off_at = as_utc(kicked_off_at or datetime.now(UTC))
    deadlines = {
        TRANSFER: transfer_deadline_seconds,
        BLOB_CREATED: blob_created_deadline_seconds,
        SUMMARY: summary_deadline_seconds,
        RECONCILIATION: reconciliation_deadline_seconds,
    }
    seen: dict[Stage, Event] = {}
    if problems := file.problems():
        verdict = Verdict("invalid", f"cannot follow this file: {'; '.join(problems)}")
    else:
        if flow_run.run_count > 1:
            await retire_earlier_attempt(flow_run.id, attempt=flow_run.run_count)
        async with following(file, since=kicked_off_at - CLOCK_SKEW, flow_run_id=flow_run.id) as watch:
            await follow_stages(watch, kicked_off_at, deadlines)
        if watch.stopped == StopReason.CANCELLED:
            return Cancelled(message=f"stopped following {file_name}: {watch.stop_message}")
        seen = {stage: proofs[0] for stage in STAGES if (proofs := watch.proofs(stage))}
        missing = {stage: deadlines[stage] for stage in STAGES if stage not in seen}
        verdict = overdue(missing, seconds_since(kicked_off_at)) if missing else reconcile_counts(watch)
    await report(file, kickoff_event_id, kicked_off_at, seen, verdict)
    if verdict.succeeded:
        return Completed(message=verdict.message)
    return Failed(message=verdict.message)


async def follow_stages(watch: FileWatch, kicked_off_at: datetime, deadlines: dict[Stage, float]) -> None:
    """Wait for every stage at once; stop them all as soon as one fails."""
    logger = get_run_logger()
    runs: dict[asyncio.Future[State], Stage] = {
        asyncio.ensure_future(
            cast(
                Awaitable[State],
                wait_for_stage(stage, watch.file, watch, kicked_off_at, deadlines[stage], return_state=True),
            )
        ): stage
        for stage in STAGES
    }
    pending = set(runs)
    while pending:
        done, pending = await asyncio.wait(
            pending, timeout=PROGRESS_LOG_SECONDS, return_when=asyncio.FIRST_COMPLETED
        )
        if not done:
            still = ", ".join(runs[run].event for run in pending)
            logger.info(
                "Still waiting for %s (%s after kickoff)",
                still,
                format_duration(seconds_since(kicked_off_at)),
            )
        if any(not run.result().is_completed() for run in done):
            watch.stop(StopReason.OVERDUE)


def as_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def seconds_since(moment: datetime) -> float:
    return (datetime.now(UTC) - moment).total_seconds()


def seconds_until(moment: datetime) -> float:
    return -seconds_since(moment)
