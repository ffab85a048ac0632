"""Automations that follow a file again when the process running its flow run stops.

With a process per run (serve.py with FLOW_SERVING=process, or a work pool's workers), a
stopped process leaves its run behind: Prefect's runner cancels its runs as it shuts down
("Runner is shutting down."); a worker stopped with its process group, or a machine that dies,
leaves them Running forever. Prefect's server can notice both, whoever serves the deployment:

- runs send a heartbeat every HEARTBEAT_SECONDS; a run of this deployment silent for three of
  them is marked Crashed (Prefect's documented zombie-flow automation, scoped to the deployment);
- a run that Crashed, or that a stopping runner Cancelled, is scheduled again (state
  `Resuming`), at most MAX_ATTEMPTS times, and its new attempt follows the file from its kickoff.

The coroutine runner needs neither (it takes over what a stopped serving process left), and its
runs send no heartbeats, so the first automation never concerns them; the second still helps if
one of its runs crashes. Both are owned by the deployment and created or updated with it.
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
FINAL_EVENTS = {f"prefect.flow-run.{name}" for name in ("Completed", "Failed", "Cancelled", "Crashed")}


def recovery_automations(deployment_id: UUID) -> list[AutomationCore]:
    """The deployment's automations that resume the runs of stopped processes."""
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

    def automation(name: str, description: str, trigger: EventTrigger, action: ChangeFlowRunState) -> AutomationCore:
        return AutomationCore(
            name=f"reconcile-file: {name}",
            description=description,
            trigger=trigger,
            actions=[action],
            owner_resource=deployment,
        )

    return [
        automation(
            "crash runs whose process stopped",
            f"A run that sent no heartbeat for {3 * HEARTBEAT_SECONDS} s lost its process.",
            EventTrigger(
                match=runs,
                match_related=of_this_deployment,
                after={"prefect.flow-run.heartbeat"},
                expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Running", *FINAL_EVENTS},
                for_each={"prefect.resource.id"},
                posture=Posture.Proactive,
                threshold=1,
                within=timedelta(seconds=3 * HEARTBEAT_SECONDS),
            ),
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"no heartbeat for {3 * HEARTBEAT_SECONDS} s: the process following this file stopped",
                force=True,
            ),
        ),
        automation(
            "resume crashed runs",
            f"A crashed run follows its file again (at most {MAX_ATTEMPTS} attempts).",
            EventTrigger(
                match=ResourceSpecification({"prefect.resource.id": "prefect.flow-run.*", "prefect.run-count": early_attempts}),
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


async def install_recovery(client: PrefectClient, deployment_id: UUID) -> None:
    """Create the deployment's recovery automations, or bring existing ones up to date."""
    existing = {
        automation.name: automation
        for automation in await client.read_resource_related_automations(f"prefect.deployment.{deployment_id}")
    }
    for automation in recovery_automations(deployment_id):
        if current := existing.get(automation.name):
            await client.update_automation(current.id, automation)
        else:
            await client.create_automation(automation)
