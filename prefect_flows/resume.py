"""Following a file again after its serving process stopped: the same run, a fresh attempt.

A run whose process stopped while it waited (serve.py restarted, a worker killed) is started
again, as the same flow run, by the next serving process or by the deployment's recovery
automations (prefect_flows/recovery.py). The new attempt reads the file's events since its
kickoff, so nothing is lost. What the old attempt leaves behind are its stage waits, still
Running in the UI: this marks them Crashed, saying which attempt took over.
"""

from __future__ import annotations

from uuid import UUID

from prefect import get_client, get_run_logger
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    TaskRunFilter,
    TaskRunFilterState,
    TaskRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.states import Crashed

UNFINISHED = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING]


async def retire_earlier_attempt(flow_run_id: str, attempt: int) -> None:
    """Mark the task runs that earlier attempts of this run left unfinished Crashed."""
    logger = get_run_logger()
    logger.info(
        "Attempt %d: the process that followed this file stopped; following it again from its kickoff",
        attempt,
    )
    async with get_client() as client:
        left = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)])),
            task_run_filter=TaskRunFilter(
                state=TaskRunFilterState(type=TaskRunFilterStateType(any_=UNFINISHED))
            ),
        )
        for task_run in left:
            await client.set_task_run_state(
                task_run.id,
                Crashed(message=f"its process stopped; attempt {attempt} of this run waits again"),
                force=True,
            )
    if left:
        logger.info("Marked %d task run(s) the stopped attempt left waiting Crashed", len(left))
