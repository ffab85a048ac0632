"""Run the deployment's flow runs as coroutines of one process: a waiting file costs memory, not a process.

Prefect's runner starts a Python process per flow run: ~75 MiB for each waiting file, and the
websockets of its own event stream, so a Prefect server on SQLite stops answering at about 33
of them. Here each run is a coroutine (`prefect.flow_engine.run_flow_async`) in one event loop,
all runs share one API client and one stream of stage events (prefect_flows/stage_stream.py),
and each file is still one `reconcile-file` flow run with the same task runs, logs, artifacts
and outcome event. The model is Airflow's deferrable operators: a waiting task gives its slot
back and waits as a coroutine of a shared triggerer.

What Prefect's runner does for its processes, this does for coroutines: it takes the
deployment's scheduled runs (the Kickoff trigger's), claims each (Pending) and runs it, at most
`run_limit` at once and `start_concurrency` starting at once (starts cost the server most); it
notices runs cancelled in the UI and stops following their files. Besides, at start it takes
over every run of the deployment left Running or Pending by a serving process that stopped:
the serving lease (prefect_flows/serving_lease.py) makes sure that process is gone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from prefect import Flow
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, State, StateType
from prefect.client.schemas.responses import OrchestrationResult, SetStateStatus
from prefect.flow_engine import run_flow_async
from prefect.states import Cancelled, Pending

from prefect_flows.stage_stream import StageEventStream, StopReason

PAGE = 200


class CoroutineRunner:
    """Follows the deployment's files, each run a coroutine of this process."""

    def __init__(
        self,
        flow: Flow,
        deployment_id: UUID,
        client: PrefectClient,
        stream: StageEventStream,
        run_limit: int,
        logger: logging.Logger,
        start_concurrency: int = 8,
    ) -> None:
        self._flow = flow
        self._deployment_id = deployment_id
        self._client = client
        self._stream = stream
        self._run_limit = run_limit
        self._logger = logger
        self._start_slots = asyncio.Semaphore(start_concurrency)
        self._followed: dict[str, asyncio.Task[None]] = {}
        self._starting: dict[str, Callable[[], None]] = {}
        self._ended_early: set[UUID] = set()  # runs whose coroutine stopped with an error
        self.finished: dict[str, int] = {}  # final state name -> runs, since start

    def started_watching(self, flow_run_id: str) -> None:
        """A run reached its waits: its start is over, the next may begin (called by the stream)."""
        if release := self._starting.pop(flow_run_id, None):
            release()

    async def take_over_left_runs(self) -> list[FlowRun]:
        """Follow again every run of the deployment that a stopped serving process left unfinished."""
        left = await self._runs_in([StateType.RUNNING, StateType.PENDING])
        for flow_run in left:
            self._follow(flow_run, claim=False)
        return left

    async def start_scheduled(self) -> int:
        """Claim and start the deployment's runs that are due, up to the run limit; how many."""
        room = self._run_limit - len(self._followed)
        if room <= 0:
            return 0
        due = await self._client.get_scheduled_flow_runs_for_deployments(
            deployment_ids=[self._deployment_id], scheduled_before=datetime.now(UTC), limit=min(room, PAGE)
        )
        fresh = [flow_run for flow_run in due if str(flow_run.id) not in self._followed]
        for flow_run in fresh:
            self._follow(flow_run, claim=True)
        return len(fresh)

    async def notice_cancellations(self) -> None:
        """Stop following the files of runs cancelled in the UI; end those nobody follows."""
        for flow_run in await self._runs_in([StateType.CANCELLING]):
            run_id = str(flow_run.id)
            if run_id in self._followed:
                self._stream.stop_run(run_id, StopReason.CANCELLED, "the run was cancelled")
            else:
                message = "cancelled while no serving process followed it"
                await self._client.set_flow_run_state(flow_run.id, Cancelled(message=message), force=True)

    async def follow_again_what_ended_early(self) -> None:
        """Follow again the runs whose coroutine stopped with an error (the server restarting, say)
        and that the server still shows unfinished: no run may stay Running with nobody following it."""
        if not self._ended_early:
            return
        ids = list(self._ended_early)[:PAGE]  # a page a call; the rest on the next
        unfinished = await self._client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=ids),
                state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING])
                ),
            ),
            limit=PAGE,
        )
        self._ended_early.difference_update(ids)  # only once the server answered
        for flow_run in unfinished:
            if str(flow_run.id) not in self._followed:
                self._logger.warning("Following %s again: its coroutine stopped with an error", flow_run.name)
                self._follow(flow_run, claim=False)

    def status(self) -> str:
        finished = ", ".join(f"{count} {state}" for state, count in sorted(self.finished.items())) or "none"
        following = f"following {len(self._followed)} file(s), {len(self._starting)} starting"
        return f"{following}; finished since start: {finished}"

    def _follow(self, flow_run: FlowRun, claim: bool) -> None:
        run_id = str(flow_run.id)
        task = asyncio.create_task(self._run(flow_run, claim), name=f"flow run {run_id}")
        self._followed[run_id] = task
        task.add_done_callback(lambda _: self._followed.pop(run_id, None))

    async def _run(self, flow_run: FlowRun, claim: bool) -> None:
        run_id = str(flow_run.id)
        await self._start_slots.acquire()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._start_slots.release()

        self._starting[run_id] = release
        try:
            if claim:
                result: OrchestrationResult[Any] = await self._client.set_flow_run_state(
                    flow_run.id, Pending()
                )
                if result.status != SetStateStatus.ACCEPT:
                    self._logger.debug("Flow run %s was not ours to start: %s", run_id, result.details)
                    return
                flow_run.state = result.state
            state = await run_flow_async(
                self._flow, flow_run=flow_run, parameters=flow_run.parameters, return_type="state"
            )
            name = state.name if isinstance(state, State) and state.name else "unknown"
            self.finished[name] = self.finished.get(name, 0) + 1
        # Whatever stopped one run's coroutine must not stop the others; the run is checked on.
        except Exception as error:  # noqa: BLE001
            self._ended_early.add(flow_run.id)
            self._logger.warning(
                "Flow run %s stopped with an error (%r); checking on it soon", flow_run.name, error
            )
        finally:
            self._starting.pop(run_id, None)
            release()

    async def _runs_in(self, states: list[StateType]) -> list[FlowRun]:
        found: list[FlowRun] = []
        while True:
            page = await self._client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[self._deployment_id])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=states))
                ),
                limit=PAGE,
                offset=len(found),
            )
            found.extend(page)
            if len(page) < PAGE:
                return found
