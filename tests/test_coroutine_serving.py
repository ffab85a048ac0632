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
from typing import Any

import httpx
import pytest

from devstack import pipeline_events as events
from devstack.flow_runs import FINAL_STATES, count_runs, request_retrying, runs_by_kickoff, wait_for_run
from devstack.flow_server import FlowServer
from devstack.prefect_api import read_events, wait_for_events
from devstack.processes import wait_until
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
        received = {"mismatched": self.sent - 2, "invalid": f"{self.sent}?"}.get(self.kind, self.sent)
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
            "invalid": ("FAILED", r"Reconciliation event \S+ has totalRecordsReceived '\d+\?', which is not a whole number"),
            "stuck": ("CANCELLED", re.escape(f"stopped following {self.file_name}: the run was cancelled")),
        }.get(self.kind, ("COMPLETED", re.escape(f"{sent} records sent, {sent} received")))


KINDS = ("matched", "mismatched", "invalid", "reordered", "duplicated")


def post(api_url: str, posted: list[dict[str, Any]]) -> None:
    for start in range(0, len(posted), 20):
        events.post_events(api_url, posted[start : start + 20])


def deployment_id(flow: FlowServer) -> str:
    return flow.deployment()["id"]


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
        lambda: sum(
            run["state_type"] in FINAL_STATES and kickoff in kickoffs
            for kickoff, run in runs_by_kickoff(api, deployment).items()
        )
        >= len(files),
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
def kickoff_trigger_off(flow: FlowServer) -> Iterator[None]:
    """Turn the deployment's Kickoff automation off, to create its runs directly instead."""
    api = flow.prefect.api_url
    related = httpx.get(f"{api}/automations/related-to/prefect.deployment.{deployment_id(flow)}", timeout=10)
    related.raise_for_status()
    kickoff = [a for a in related.json() if any(action["type"] == "run-deployment" for action in a["actions"])]
    for automation in kickoff:
        httpx.patch(f"{api}/automations/{automation['id']}", json={"enabled": False}, timeout=10).raise_for_status()
    try:
        yield
    finally:
        for automation in kickoff:
            httpx.patch(f"{api}/automations/{automation['id']}", json={"enabled": True}, timeout=10)


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
    request_retrying("POST", f"{api_url}/flow_runs/{flow_run_id}/set_state", json={"state": {"type": "CANCELLING"}})


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
        waits = wait_until(lambda: waits_of(api, run_id, 8), 30, f"both attempts' waits of {file.file_name}")
        assert sorted(waits) == [("Completed", 1)] * 1 + [("Completed", 2)] * 4 + [("Crashed", 1)] * 3, waits
        outcome = wait_for_events(api, 1, None, {"labels": {"trackingId": [file.tracking_id]}, "id_prefix": ["file."]})
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
