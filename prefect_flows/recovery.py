"""Automations that follow a file again when the process running its flow run stops.

With a process per run (serve.py with FLOW_SERVING=process, or a work pool's workers), a
stopped process leaves its run behind: Prefect's runner cancels its runs as it shuts down
("Runner is shutting down."); a worker stopped with its process group, or a machine that dies,
leaves them Running forever. Prefect's server can notice both, whoever serves the deployment:

- runs send a heartbeat every HEARTBEAT_SECONDS; a run of this deployment silent for three of
  them after it started Running is marked Crashed (Prefect's documented zombie-flow automation,
  scoped to the deployment, and armed by Running too: a process killed before its first
  heartbeat must not go unnoticed);
- a run that Crashed, or that a stopping runner Cancelled, is scheduled again (state
  `Resuming`), at most MAX_ATTEMPTS times, and its new attempt follows the file from its kickoff.

The coroutine runner takes over what a stopped serving process left by itself, and its runs send
no heartbeats: it installs only the second, which still helps if one of its runs crashes. The
automations are owned by the deployment and set whenever it is registered.
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification

# Prefect's minimum: a heartbeat event every 30 s per waiting run is cheap at a few hundred runs.
HEARTBEAT_SECONDS = 30
MAX_ATTEMPTS = 5
RUNNER_SHUTDOWN_MESSAGE = "Runner is shutting down."
NAME_PREFIX = "reconcile-file: "
FINAL_EVENTS = {f"prefect.flow-run.{name}" for name in ("Completed", "Failed", "Cancelled", "Crashed")}


def recovery_automations(deployment_id: UUID, heartbeats: bool) -> list[AutomationCore]:
    """The deployment's automations that resume the runs of stopped processes.

    Args:
        heartbeats: whether its runs send heartbeats (a process each); only then can the server
            tell a run whose process stopped.
    """
    deployment = f"prefect.deployment.{deployment_id}"
    of_this_deployment = ResourceSpecification({"prefect.resource.id": deployment})
    runs = ResourceSpecification({"prefect.resource.id": "prefect.flow-run.*"})
    resume = ChangeFlowRunState(
        state=StateType.SCHEDULED,
        name="Resuming",
        message="its process stopped; following the file again from its kickoff",
        force=True,
    )
    early_attempts = [str(attempt) for attempt in range(1, MAX_ATTEMPTS)]

    def automation(
        name: str, description: str, trigger: EventTrigger, action: ChangeFlowRunState
    ) -> AutomationCore:
        return AutomationCore(
            name=f"{NAME_PREFIX}{name}",
            description=description,
            trigger=trigger,
            actions=[action],
            owner_resource=deployment,
        )

    crash_silent_runs = automation(
        "crash runs whose process stopped",
        f"A run that sent no heartbeat for {3 * HEARTBEAT_SECONDS} s lost its process.",
        EventTrigger(
            match=runs,
            match_related=of_this_deployment,
            after={"prefect.flow-run.heartbeat", "prefect.flow-run.Running"},
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Running", *FINAL_EVENTS},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=3 * HEARTBEAT_SECONDS),
        ),
        ChangeFlowRunState(
            state=StateType.CRASHED,
            name="Crashed",
            message=f"no heartbeat for {3 * HEARTBEAT_SECONDS} s: the process following this file stopped",
            force=True,
        ),
    )
    resumers = [
        automation(
            "resume crashed runs",
            f"A crashed run follows its file again (at most {MAX_ATTEMPTS} attempts).",
            EventTrigger(
                match=ResourceSpecification(
                    {"prefect.resource.id": "prefect.flow-run.*", "prefect.run-count": early_attempts}
                ),
                match_related=of_this_deployment,
                expect={"prefect.flow-run.Crashed"},
                posture=Posture.Reactive,
                threshold=1,
            ),
            resume,
        ),
        automation(
            "resume runs a stopping runner cancelled",
            "A run cancelled because its runner shut down follows its file again.",
            EventTrigger(
                match=ResourceSpecification(
                    {
                        "prefect.resource.id": "prefect.flow-run.*",
                        "prefect.state-message": RUNNER_SHUTDOWN_MESSAGE,
                        "prefect.run-count": early_attempts,
                    }
                ),
                match_related=of_this_deployment,
                expect={"prefect.flow-run.Cancelled"},
                posture=Posture.Reactive,
                threshold=1,
            ),
            resume,
        ),
    ]
    return [crash_silent_runs, *resumers] if heartbeats else resumers


async def install_recovery(client: PrefectClient, deployment_id: UUID, heartbeats: bool) -> None:
    """Set the deployment's recovery automations: create, update, and remove those it no longer needs."""
    wanted = {automation.name: automation for automation in recovery_automations(deployment_id, heartbeats)}
    for current in await client.read_resource_related_automations(f"prefect.deployment.{deployment_id}"):
        if current.name in wanted:
            await client.update_automation(current.id, wanted.pop(current.name))
        elif current.name.startswith(NAME_PREFIX):
            await client.delete_automation(current.id)
    for automation in wanted.values():
        await client.create_automation(automation)
