"""serve.py following many files as coroutines of one process, through restarts, cancellations and strays.

Everything runs for real: a private Prefect server on SQLite, `python prefect_flows/serve.py`
as a subprocess (FLOW_SERVING defaults to coroutine), events posted as the webhook templates
make them, outcomes read back from the API.
"""

from __future__ import annotations

import re
import signal
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import httpx
import pytest

from devstack.prefect_queries import pipeline_events as events
from devstack.prefect_queries.events import read_events, wait_for_events
from devstack.prefect_queries.flow_runs import (
    FINAL_STATES,
    count_runs,
    request_retrying,
    runs_by_kickoff,
    wait_for_run,
)
from devstack.services.flow_server import FlowServer
from devstack.supervision.processes import wait_until
from prefect_flows.deployment import same_deadlines

DEADLINE_SECONDS = 600
GRACE_SECONDS = 4


@pytest.fixture(scope="module")
def server(start_prefect_server):
    return start_prefect_server()


@pytest.fixture(scope="module")
def serving(server, service_logs) -> Iterator[FlowServer]:
    settings = {**same_deadlines(DEADLINE_SECONDS), "FLOW_UNANNOUNCED_GRACE_SECONDS": str(GRACE_SECONDS)}
    flow = FlowServer(server, service_logs, settings=settings, name="coroutine-serving").start()
    yield flow
    flow.stop()


@dataclass
class File:
    """One file of a test and the outcome it is built to have."""

    kind: str  # one of KINDS, or stuck: its Reconciliation never comes
    sent: int
    file_name: str = field(default_factory=lambda: f"batch-{uuid.uuid4().hex[:10]}.csv")
    tracking_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    kickoff: dict[str, Any] = field(init=False)
    stages: list[dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        self.kickoff = events.kickoff(self.file_name, self.tracking_id)
        received: int | str = self.sent
        if self.kind == "mismatched":
            received = self.sent - 2
        elif self.kind == "invalid":
            received = f"{self.sent}?"
        self.stages = events.stages(self.file_name, self.tracking_id, self.sent, received)

    def stage_events(self) -> list[dict[str, Any]]:
        """What reaches Prefect of its journey, in the order it arrives."""
        if self.kind == "stuck":
            return self.stages[:3]
        if self.kind == "reordered":
            return self.stages[::-1]
        if self.kind == "duplicated":
            return self.stages + self.stages[1:]
        return self.stages

    def expected(self) -> tuple[str, str]:
        sent = self.sent
        return {
            "mismatched": ("FAILED", re.escape(f"sent {sent}, received {sent - 2} (2 missing)")),
            "invalid": (
                "FAILED",
                r"Reconciliation event \S+ has totalRecordsReceived '\d+\?', which is not a whole number",
            ),
            "stuck": ("CANCELLED", re.escape(f"stopped following {self.file_name}: the run was cancelled")),
        }.get(self.kind, ("COMPLETED", re.escape(f"{sent} records sent, {sent} received")))


KINDS = ("matched", "mismatched", "invalid", "reordered", "duplicated")


def post(api_url: str, posted: list[dict[str, Any]]) -> None:
    for start in range(0, len(posted), 20):
        events.post_events(api_url, posted[start : start + 20])


def deployment_id(flow: FlowServer) -> str:
    return flow.deployment_id()


def wait_all_waiting(flow: FlowServer, count: int, timeout: float) -> None:
    """Until `count` runs are Running with their four stage waits Running too."""
    api, deployment = flow.prefect.api_url, deployment_id(flow)

    def waiting() -> bool:
        body = {
            "deployments": {"id": {"any_": [deployment]}},
            "flow_runs": {"state": {"type": {"any_": ["RUNNING"]}}},
            "task_runs": {"name": {"like_": "wait for"}, "state": {"type": {"any_": ["RUNNING"]}}},
        }
        response = httpx.post(f"{api}/task_runs/count", json=body, timeout=30)
        return response.is_success and response.json() >= 4 * count

    wait_until(waiting, timeout, f"{count} runs to wait on their four stages", interval=1)


def wrong_outcomes(flow: FlowServer, files: list[File], timeout: float) -> list[str]:
    """Wait for every file's run to finish; what differs from the outcome each was built for."""
    api, deployment = flow.prefect.api_url, deployment_id(flow)
    kickoffs = {file.kickoff["id"] for file in files}
    wait_until(
        lambda: (
            sum(
                run["state_type"] in FINAL_STATES and kickoff in kickoffs
                for kickoff, run in runs_by_kickoff(api, deployment).items()
            )
            >= len(files)
        ),
        timeout,
        f"{len(files)} runs to finish",
        interval=2,
    )
    runs = runs_by_kickoff(api, deployment)
    wrong = []
    for file in files:
        run = runs[file.kickoff["id"]]
        state, message = file.expected()
        if run["state_type"] != state or not re.fullmatch(message, run["state"]["message"] or ""):
            wrong.append(f"{file.kind} {file.file_name}: {run['state_type']} {run['state']['message']!r}")
    return wrong


@contextmanager
def kickoff_trigger_off(flow: FlowServer) -> Iterator[str]:
    """Turn the deployment's Kickoff automation off, to create its runs directly instead; its id."""
    api = flow.prefect.api_url
    related = httpx.get(f"{api}/automations/related-to/prefect.deployment.{deployment_id(flow)}", timeout=10)
    related.raise_for_status()
    [kickoff] = [
        a for a in related.json() if any(action["type"] == "run-deployment" for action in a["actions"])
    ]
    request_retrying("PATCH", f"{api}/automations/{kickoff['id']}", json={"enabled": False})
    try:
        yield kickoff["id"]
    finally:
        request_retrying("PATCH", f"{api}/automations/{kickoff['id']}", json={"enabled": True})


def create_runs_as_the_trigger_would(flow: FlowServer, files: list[File]) -> None:
    """With the parameters the Kickoff trigger gives."""
    url = f"{flow.prefect.api_url}/deployments/{deployment_id(flow)}/create_flow_run"
    for file in files:
        parameters = {
            "file_name": file.file_name,
            "tracking_id": file.tracking_id,
            "kickoff_event_id": file.kickoff["id"],
            "kicked_off_at": file.kickoff["occurred"],
        }
        request_retrying("POST", url, json={"parameters": parameters})


def test_two_hundred_files_in_flight_in_one_process_end_as_built_and_stuck_ones_hold_up_none(serving):
    """Prefect's automation service turns kickoffs into runs about two a second on SQLite; to keep the
    suite short, these runs are created directly, with the parameters the Kickoff trigger gives."""
    api = serving.prefect.api_url
    stuck = [File("stuck", 10 + n) for n in range(100)]  # never reconciled
    healthy = [File(KINDS[n % len(KINDS)], 100 + n) for n in range(100)]
    with kickoff_trigger_off(serving):
        post(api, [file.kickoff for file in stuck + healthy])
        create_runs_as_the_trigger_would(serving, stuck + healthy)
        wait_all_waiting(serving, len(stuck + healthy), timeout=300)
    serving_threads = thread_count(serving)

    post(api, [event for file in stuck for event in file.stage_events()])
    post(api, [event for file in healthy for event in file.stage_events()])
    assert wrong_outcomes(serving, healthy, timeout=180) == []
    # Every healthy file ended while the stuck ones still wait for their Reconciliation.
    assert count_runs(api, deployment_id(serving), {"RUNNING"}) == len(stuck)
    # One process, no thread per run: Prefect's per-run observer and heartbeat are off.
    assert serving_threads < 40

    runs = runs_by_kickoff(api, deployment_id(serving))
    for file in stuck:
        cancel(api, runs[file.kickoff["id"]]["id"])
    assert wrong_outcomes(serving, stuck, timeout=120) == []


def cancel(api_url: str, flow_run_id: str) -> None:
    """What the UI's Cancel does to a running deployment run."""
    request_retrying(
        "POST", f"{api_url}/flow_runs/{flow_run_id}/set_state", json={"state": {"type": "CANCELLING"}}
    )


def thread_count(flow: FlowServer) -> int:
    with open(f"/proc/{flow.process.pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("Threads:"))


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "kill -9"])
def test_files_waiting_when_serve_py_stops_are_followed_again_by_the_next_and_end_right(serving, stop_signal):
    api, deployment = serving.prefect.api_url, deployment_id(serving)
    files = [File(KINDS[n % len(KINDS)], 300 + n) for n in range(50)]
    post(api, [file.kickoff for file in files])  # the Kickoff trigger starts their runs
    wait_all_waiting(serving, len(files), timeout=240)
    early = [file.stages[0] for file in files]
    post(api, early)
    wait_until(lambda: stage_waits(serving, "COMPLETED") >= len(files), 60, "every transfer to be seen")

    serving.stop(stop_signal)
    runs = runs_by_kickoff(api, deployment)
    assert {runs[file.kickoff["id"]]["state_type"] for file in files} == {"RUNNING"}
    post(api, [event for file in files for event in file.stage_events() if event not in early])
    serving.start()

    assert wrong_outcomes(serving, files, timeout=180) == []
    for file in files[:3]:
        run_id = runs[file.kickoff["id"]]["id"]
        # The first attempt's waits (transfer seen, the others marked Crashed), then the second's.
        waits = wait_until(partial(waits_of, api, run_id, 8), 30, f"both attempts' waits of {file.file_name}")
        assert sorted(waits) == [("Completed", 1)] * 1 + [("Completed", 2)] * 4 + [("Crashed", 1)] * 3, waits
        outcome = wait_for_events(
            api, 1, None, {"labels": {"trackingId": [file.tracking_id]}, "id_prefix": ["file."]}
        )
        assert len(outcome) == 1, "a second attempt must not make a second outcome event"


def waits_of(api_url: str, flow_run_id: str, count: int) -> list[tuple[str, int]] | None:
    """(state, attempt) of a run's stage waits, once there are `count` and none waits any more."""
    body = {"flow_runs": {"id": {"any_": [flow_run_id]}}, "task_runs": {"name": {"like_": "wait for"}}}
    found = request_retrying("POST", f"{api_url}/task_runs/filter", json=body).json()
    if len(found) < count or any(task["state_type"] in ("PENDING", "RUNNING") for task in found):
        return None
    return [(task["state_name"], task["flow_run_run_count"]) for task in found]


def stage_waits(flow: FlowServer, state: str) -> int:
    body = {
        "deployments": {"id": {"any_": [deployment_id(flow)]}},
        "task_runs": {"name": {"like_": "wait for transfer"}, "state": {"type": {"any_": [state]}}},
    }
    return request_retrying("POST", f"{flow.prefect.api_url}/task_runs/count", json=body).json()


def test_a_blob_and_a_summary_nobody_announced_are_reported_once_each_and_a_late_kickoff_is_in_time(serving):
    api = serving.prefect.api_url
    late, stray_blob, stray_summary = File("matched", 1), File("matched", 2), File("matched", 3)
    post(api, [late.stages[1]])  # its kickoff comes within the grace period
    post(api, [late.kickoff, stray_blob.stages[1], stray_summary.stages[2]])

    reports = wait_for_events(api, 2, ["reconciliation.unannounced"], timeout=60)
    assert sorted(report["resource"]["file_name"] for report in reports) == sorted(
        [stray_blob.file_name, stray_summary.tracking_id]
    )
    assert {report["payload"]["event_id"] for report in reports} == {
        stray_blob.stages[1]["id"],
        stray_summary.stages[2]["id"],
    }
    blob_report = next(
        report for report in reports if report["resource"]["file_name"] == stray_blob.file_name
    )
    [run_id] = [
        related["prefect.resource.id"].removeprefix("prefect.flow-run.")
        for related in blob_report["related"]
        if related["prefect.resource.role"] == "flow-run"
    ]
    run = request_retrying("GET", f"{api}/flow_runs/{run_id}").json()
    assert run["name"] == f"{stray_blob.file_name} [unannounced]"
    assert run["state_type"] == "FAILED"
    assert (
        f"no kickoff was seen for the blob {stray_blob.stages[1]['resource']['url']}"
        in run["state"]["message"]
    )
    # `late`'s blob was due for a check before the strays were: it was checked, and not reported.
    assert not read_events(api, ["reconciliation.unannounced"], {"labels": {"file_name": [late.file_name]}})


def runs_of(flow: FlowServer, file: File) -> int:
    """How many runs the deployment has for `file`'s kickoff (two would follow one file twice)."""
    body = {
        "deployments": {"id": {"any_": [deployment_id(flow)]}},
        "flow_runs": {"name": {"like_": file.file_name}},  # a run is named after its file once it starts
    }
    runs = request_retrying("POST", f"{flow.prefect.api_url}/flow_runs/filter", json=body).json()
    return sum(run["parameters"].get("kickoff_event_id") == file.kickoff["id"] for run in runs)


def automation_event(name: str, automation_id: str, file: File, **payload: Any) -> dict[str, Any]:
    """An event of the Kickoff automation about `file`'s kickoff, shaped as Prefect's services make it
    (prefect/server/events/actions.py and triggers.py)."""
    return {
        "id": str(uuid.uuid4()),
        "occurred": datetime.now(UTC).isoformat(),
        "event": name,
        "resource": {
            "prefect.resource.id": f"prefect.automation.{automation_id}",
            "prefect.resource.name": "Kickoff",
        },
        "related": [
            {
                "prefect.resource.id": f"prefect.event.{file.kickoff['id']}",
                "prefect.resource.role": "triggering-event",
            }
        ],
        "payload": payload,
    }


def test_a_kickoff_whose_run_prefect_failed_to_create_gets_its_run_from_serve_py(serving):
    """Prefect's automations do not retry a run-deployment action the API refused (503 under load):
    the failure event Prefect then emits."""
    api = serving.prefect.api_url
    file = File("matched", 42)
    with kickoff_trigger_off(serving) as kickoff_automation:
        post(api, [file.kickoff])
        failure = automation_event(
            "prefect.automation.action.failed",
            kickoff_automation,
            file,
            action_index=0,
            action_type="run-deployment",
            reason="Unexpected status from 'run-deployment' action: 503",
        )
        post(api, [failure, failure])  # seen twice (a restart re-reads it): still one run
        run = wait_for_run(api, deployment_id(serving), file.kickoff["id"], {"RUNNING"}, timeout=60)
    post(api, file.stage_events())
    assert wrong_outcomes(serving, [file], timeout=60) == []
    assert run["name"].startswith(file.file_name)
    assert runs_of(serving, file) == 1


def test_a_kickoff_whose_action_a_prefect_restart_dropped_gets_its_run_from_serve_py(serving):
    """The SQLite server keeps fired actions in memory: a restart between the automation firing and
    its action drops the action (seen in the soak). Here the automation is off and its firing posted;
    the restart is real."""
    api = serving.prefect.api_url
    dropped, acted = File("matched", 43), File("matched", 44)
    with kickoff_trigger_off(serving) as kickoff_automation:
        post(api, [dropped.kickoff, acted.kickoff])
        posted_at = datetime.now(UTC)
        fired = [
            automation_event("prefect.automation.triggered", kickoff_automation, file)
            for file in (dropped, acted)
        ]
        # `acted`'s action ran (its run exists; its action event is all that reached the server).
        create_runs_as_the_trigger_would(serving, [acted])
        executed = automation_event("prefect.automation.action.executed", kickoff_automation, acted)
        post(api, [*fired, executed])
        names = ["prefect.automation.triggered", "prefect.automation.action.executed"]
        wait_for_events(api, 3, names, since=posted_at, timeout=30)
        serving.prefect.restart()
        run = wait_for_run(api, deployment_id(serving), dropped.kickoff["id"], {"RUNNING"}, timeout=180)
    post(api, dropped.stage_events() + acted.stage_events())
    assert wrong_outcomes(serving, [dropped, acted], timeout=60) == []
    assert run["name"].startswith(dropped.file_name)
    assert (runs_of(serving, dropped), runs_of(serving, acted)) == (1, 1)


def test_a_second_serve_py_waits_for_the_first_to_stop_then_follows_its_files(serving, service_logs):
    api = serving.prefect.api_url
    second = FlowServer(serving.prefect, service_logs, settings=serving.settings, name="second-serve").start(
        wait=False
    )
    try:
        wait_until(
            lambda: "Another serve.py serves this deployment" in second.process.output(),
            60,
            "the second to wait",
        )
        files = [File("matched", 500 + n) for n in range(5)]
        post(api, [file.kickoff for file in files])
        wait_all_waiting(serving, len(files), timeout=60)
        assert "as coroutines" not in second.process.output()

        serving.stop()
        wait_until(lambda: "as coroutines" in second.process.output(), 60, "the second to take over")
        post(api, [event for file in files for event in file.stage_events()])
        assert wrong_outcomes(second, files, timeout=90) == []
    finally:
        second.stop()
        serving.start()


def test_files_waiting_while_the_prefect_server_restarts_end_right(serving):
    api = serving.prefect.api_url
    files = [File(KINDS[n % len(KINDS)], 600 + n) for n in range(10)]
    post(api, [file.kickoff for file in files])
    wait_all_waiting(serving, len(files), timeout=120)
    serving.prefect.restart()
    post(api, [event for file in files for event in file.stage_events()])
    assert wrong_outcomes(serving, files, timeout=180) == []
