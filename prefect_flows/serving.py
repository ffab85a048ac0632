"""Serving the reconciliation flow: every run a coroutine of this process (default), or a process each.

Coroutines (FLOW_SERVING=coroutine): one process follows thousands of files. It registers the
deployment, takes the deployment's serving lease, opens one stream of stage events, follows
again the runs a stopped serving process left, then starts each new run as a coroutine
(prefect_flows/coroutine_runner.py), notices cancellations and reports files nobody announced.
On SIGTERM or Ctrl+C it stops without touching the runs: they stay Running, and the next
serve.py takes them over at once.

Processes (FLOW_SERVING=process): Prefect's own runner, a process per run, as the original
example serves; runs send heartbeats so the recovery automations (prefect_flows/recovery.py)
can resume the runs of a stopped process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import FlowRun
from prefect.context import AsyncClientContext
from prefect.deployments.runner import RunnerDeployment
from prefect.events.schemas.events import Event
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker
from prefect.runner import Runner
from prefect.settings import PREFECT_API_URL, temporary_settings

from prefect_flows import engine_patches
from prefect_flows.coroutine_runner import CoroutineRunner
from prefect_flows.deployment import DEPLOYMENT_NAME, FlowSettings, kickoff_trigger
from prefect_flows.flow import CLOCK_SKEW, as_utc, reconcile_file
from prefect_flows.kickoff_repair import KICKOFF_AUTOMATION_EVENTS, FailedKickoffs
from prefect_flows.recovery import HEARTBEAT_SECONDS, install_recovery
from prefect_flows.serving_lease import RENEW_SECONDS, LeaseLost, ServingLease
from prefect_flows.stage_stream import READ_ERRORS, SHARED_STREAM, StageEventStream
from prefect_flows.stages import STAGE_EVENTS
from prefect_flows.unannounced import UnannouncedFiles

logger = logging.getLogger("serve")
logger.setLevel(logging.INFO)

CANCELLATION_CHECK_SECONDS = 2.0
UNANNOUNCED_CHECK_SECONDS = 5.0
STATUS_SECONDS = 60.0
# How long SIGTERM waits for logs and events already emitted to reach Prefect before exiting.
FLUSH_SECONDS = 10.0


async def served_deployment(settings: FlowSettings) -> RunnerDeployment:
    """The deployment serve.py registers: the flow, its Kickoff trigger, the deadlines as parameters.

    Registering it un-pauses it, so a restart resumes a deployment an earlier runner paused;
    neither way of serving pauses it on shutdown: it has no schedule to pause, and kickoffs that
    arrive while nothing serves it wait as Scheduled runs.
    """
    return await reconcile_file.ato_deployment(
        name=DEPLOYMENT_NAME, triggers=[kickoff_trigger()], parameters=settings.deadlines
    )


def serve_processes(settings: FlowSettings) -> None:
    """Prefect's runner: a process per flow run, resumed by the recovery automations when it stops."""
    # The runs' processes inherit it: a heartbeat every 30 s lets the server notice a stopped one.
    os.environ["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] = str(HEARTBEAT_SECONDS)
    print(
        f"Serving '{reconcile_file.name}/{DEPLOYMENT_NAME}' to {PREFECT_API_URL.value()} as processes: "
        f"polling every {settings.poll_seconds:g} s, at most {settings.run_limit} runs at once, "
        f"deadlines (s) {settings.deadlines}",
        flush=True,
    )

    async def serve() -> None:
        deployment = await served_deployment(settings)
        runner = Runner(
            query_seconds=settings.poll_seconds, limit=settings.run_limit, pause_on_shutdown=False
        )
        # Registering the deployment replaces the automations it owns: the recovery ones come after.
        deployment_id = await runner.aadd_deployment(deployment)
        async with AsyncClientContext.get_or_create() as context:
            await install_recovery(context.client, deployment_id, heartbeats=True)
            async with ServingLease(context.client, deployment_id, logger) as lease:
                renewing = asyncio.create_task(_keep(lease))
                try:
                    await runner.start()
                finally:
                    renewing.cancel()

    asyncio.run(serve())


async def _keep(lease: ServingLease) -> None:
    while True:
        await asyncio.sleep(RENEW_SECONDS)
        try:
            await lease.renew()
        except READ_ERRORS as error:
            logger.warning("Could not renew the serving lease (%s); trying again", error)


class CoroutineServing:
    """The serving process of FLOW_SERVING=coroutine: its event loop runs in a thread of its own.

    Prefect's engine installs a SIGTERM handler for each flow run it starts in the main thread;
    thousands of them would fight over the signal. In another thread it installs none, and the
    main thread decides what a signal means: stop taking runs, let go of the lease, flush what
    was emitted, and exit without letting asyncio cancel the runs (the engine would record each
    as Crashed); they stay Running for the next serve.py.
    """

    def __init__(self, settings: FlowSettings) -> None:
        self._settings = settings
        self._loop = asyncio.new_event_loop()
        self._stopping = asyncio.Event()
        self._released = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT; the exit code for `os._exit`."""
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        thread = threading.Thread(target=self._serve_in_thread, name="serving", daemon=True)
        thread.start()
        while not stop.wait(0.2) and thread.is_alive():
            pass
        if thread.is_alive():
            logger.info("Stopping; the files followed now stay Running and the next serve.py follows them")
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._released.wait(FLUSH_SECONDS)
        EventsWorker.drain_all(timeout=FLUSH_SECONDS)
        APILogWorker.drain_all(timeout=FLUSH_SECONDS)
        sys.stdout.flush()
        sys.stderr.flush()
        return 1 if self.error else 0

    def _serve_in_thread(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            # Not asyncio.run: at its end it would cancel the runs' coroutines.
            self._loop.run_until_complete(self._serve())
        except (LeaseLost, engine_patches.EngineChanged) as error:
            self.error = error
            logger.error("%s", error)
        # Whatever ended serving is reported; then the main thread exits the process.
        except BaseException as error:
            self.error = error
            logger.exception("Serving stopped with an error")

    async def _serve(self) -> None:
        engine_patches.apply()
        quiet_run_logs_on_console()
        # The events worker's thread keeps the context of whoever starts it, and attaches that
        # context's run to every event emitted outside a run: start it here, outside any run.
        EventsWorker.instance()
        # Heartbeats are a thread per run; the serving lease tells whether this process lives.
        with temporary_settings(updates={"flows.heartbeat_frequency": None}):
            async with AsyncClientContext.get_or_create() as context:  # one client for every run
                client = context.client
                deployment_id = await (await served_deployment(self._settings)).aapply()
                await install_recovery(client, deployment_id, heartbeats=False)
                async with ServingLease(client, deployment_id, logger) as lease:
                    await self._follow_files(client, deployment_id, lease)

    async def _follow_files(self, client: PrefectClient, deployment_id: UUID, lease: ServingLease) -> None:
        settings = self._settings
        unannounced = UnannouncedFiles(
            client,
            deployment_id,
            grace=timedelta(seconds=settings.unannounced_grace_seconds),
            lookback=timedelta(seconds=max(settings.deadlines.values())) + CLOCK_SKEW,
            logger=logger,
        )
        failed_kickoffs = FailedKickoffs(
            client,
            deployment_id,
            await kickoff_automations(client, deployment_id),
            logger,
            stream_reconnected_at=lambda: stream.reconnected_at,
        )
        runner: CoroutineRunner | None = None

        def observe(event: Event) -> None:
            unannounced.observe(event)
            failed_kickoffs.observe(event)

        stream = StageEventStream(
            since=datetime.now(UTC) - CLOCK_SKEW,
            event_names=[*STAGE_EVENTS, "kickoff", *KICKOFF_AUTOMATION_EVENTS],
            on_event=observe,
            on_watch=lambda run_id: runner.started_watching(run_id) if runner else None,
            logger=logger,
        )
        async with stream:
            SHARED_STREAM.set(stream)
            runner = CoroutineRunner(
                reconcile_file, deployment_id, client, stream, settings.run_limit, logger
            )
            left = await runner.take_over_left_runs()
            await stream.hold_since(self._history_start(left, lease))
            if left:
                logger.info("Following again %d file(s) a stopped serving process left", len(left))
            print(
                f"Serving '{reconcile_file.name}/{DEPLOYMENT_NAME}' to {PREFECT_API_URL.value()} "
                f"as coroutines: polling every "
                f"{settings.poll_seconds:g} s, at most {settings.run_limit} files at once, deadlines (s) "
                f"{settings.deadlines}; unannounced files reported after "
                f"{settings.unannounced_grace_seconds:g} s",
                flush=True,
            )
            await self._poll(runner, unannounced, failed_kickoffs, lease)
            await lease.release()
            self._released.set()
            await asyncio.Event().wait()  # the main thread exits the process

    def _history_start(self, left: list[FlowRun], lease: ServingLease) -> datetime:
        """How far back the stream must read: the oldest kickoff followed again, and the files that
        arrived while no serving process watched for unannounced ones."""
        start = datetime.now(UTC) - CLOCK_SKEW
        for flow_run in left:
            if kicked_off := flow_run.parameters.get("kicked_off_at"):
                start = min(start, as_utc(datetime.fromisoformat(str(kicked_off))) - CLOCK_SKEW)
        if lease.previous and (renewed := lease.previous.get("renewed_at")):
            grace = timedelta(seconds=self._settings.unannounced_grace_seconds)
            start = min(start, as_utc(datetime.fromisoformat(renewed)) - grace - CLOCK_SKEW)
        return start

    async def _poll(
        self,
        runner: CoroutineRunner,
        unannounced: UnannouncedFiles,
        failed_kickoffs: FailedKickoffs,
        lease: ServingLease,
    ) -> None:
        due = {
            "cancellations": 0.0,
            "lease": 0.0,
            "unannounced": 0.0,
            "status": time.monotonic() + STATUS_SECONDS,
        }
        last_status = None
        while not self._stopping.is_set():
            now = time.monotonic()
            try:
                await runner.start_scheduled()
                if now >= due["cancellations"]:
                    await runner.notice_cancellations()
                    due["cancellations"] = now + CANCELLATION_CHECK_SECONDS
                if now >= due["lease"]:
                    await lease.renew()
                    due["lease"] = now + RENEW_SECONDS
                if now >= due["unannounced"]:
                    await failed_kickoffs.repair()
                    await unannounced.check()
                    await runner.follow_again_what_ended_early()
                    due["unannounced"] = now + UNANNOUNCED_CHECK_SECONDS
            except READ_ERRORS as error:
                logger.warning("The Prefect API did not answer (%s); trying again", error)
            if now >= due["status"]:
                status = runner.status()
                if unannounced.reported or failed_kickoffs.repaired:
                    status += f"; {unannounced.reported} unannounced"
                    status += f", {failed_kickoffs.repaired} failed kickoff(s) started"
                if status != last_status:
                    logger.info("%s", status)
                    last_status = status
                due["status"] = now + STATUS_SECONDS
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._settings.poll_seconds)


async def kickoff_automations(client: PrefectClient, deployment_id: UUID) -> set[UUID]:
    """The ids of the deployment's automations that run it: its Kickoff trigger's."""
    automations = await client.read_resource_related_automations(f"prefect.deployment.{deployment_id}")
    return {
        automation.id
        for automation in automations
        if any(action.type == "run-deployment" for action in automation.actions)
    }


def quiet_run_logs_on_console() -> None:
    """Thousands of runs' INFO logs would drown the console; they all still reach the Prefect UI."""

    def keep(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not record.name.startswith(
            ("prefect.flow_runs", "prefect.task_runs")
        )

    for handler in logging.getLogger().handlers:
        handler.addFilter(keep)
