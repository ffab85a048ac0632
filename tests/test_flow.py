"""The served reconciliation flow, driven only through events as production drives it.

serve.py runs as a real subprocess against the session's Prefect server with 15-second stage
deadlines; every test posts one file's events (shapes of the webhook templates) to
`POST /api/events` and reads the run's final state and message back from the API.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from devstack.prefect_queries import pipeline_events as events
from devstack.prefect_queries.events import read_events
from devstack.prefect_queries.flow_runs import FINAL_STATES, final_state, timestamp, wait_for_run
from devstack.services.flow_server import FlowServer
from devstack.supervision.processes import wait_until
from prefect_flows.deployment import same_deadlines
from prefect_flows.report import artifact_key

DEADLINE_SECONDS = 15


@pytest.fixture(scope="module")
def flow_server(prefect_server, service_logs):
    settings = {**same_deadlines(DEADLINE_SECONDS), "FLOW_RUN_LIMIT": "10"}
    server = FlowServer(prefect_server, service_logs, settings=settings).start()
    yield server
    server.stop()
    server.remove_deployment()


@dataclass
class TrackedRun:
    """One file of this test: its events go to Prefect, its run's outcome comes back."""

    server: FlowServer
    file_name: str = field(default_factory=lambda: f"sales-{uuid.uuid4().hex[:8]}.csv")
    tracking_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    kickoff: dict[str, Any] | None = None

    @property
    def api_url(self) -> str:
        return self.server.prefect.api_url

    def kick_off(self, *also: dict[str, Any], tracking_id: str | None = None) -> None:
        """Post the kickoff, and `also` in the same request right after it."""
        tracking_id = self.tracking_id if tracking_id is None else tracking_id
        self.kickoff = events.kickoff(self.file_name, tracking_id)
        self.send(self.kickoff, *also)

    def send(self, *posted: dict[str, Any]) -> None:
        events.post_events(self.api_url, list(posted))

    def stages(self, sent: int | str, received: int | str) -> list[dict[str, Any]]:
        return events.stages(self.file_name, self.tracking_id, sent, received)

    @property
    def kickoff_id(self) -> str:
        assert self.kickoff, "kick the file off first"
        return self.kickoff["id"]

    def run(self, states: set[str], timeout: float = 60) -> dict[str, Any]:
        return wait_for_run(self.api_url, self.server.deployment_id(), self.kickoff_id, states, timeout)

    def outcome(self, timeout: float = 90) -> tuple[str, str]:
        return final_state(self.api_url, self.server.deployment_id(), self.kickoff_id, timeout)

    def outcome_event(self, outcome: str) -> dict[str, Any]:
        def emitted() -> list[dict[str, Any]]:
            return read_events(
                self.api_url,
                [f"reconciliation.{outcome}"],
                resource={"labels": {"file_name": [self.file_name]}},
            )

        return wait_until(emitted, 30, f"the reconciliation.{outcome} event of {self.file_name}")[0]


@pytest.fixture
def file(flow_server) -> TrackedRun:
    return TrackedRun(flow_server)


def post_json(url: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """POST to the Prefect API; a 503 is asked again, as Prefect's own client does.

    The server answers 503 to errors it calls retryable, e.g. SQLite's "database is locked" while
    the served runs write too.
    """

    def answered() -> httpx.Response | None:
        response = httpx.post(url, json=body, timeout=10)
        return None if response.status_code == 503 else response

    response = wait_until(answered, 30, f"{url} to answer other than 503", interval=0.5)
    response.raise_for_status()
    return response.json()


def test_a_file_whose_counts_match_completes_and_leaves_its_stage_table_and_event(file):
    file.kick_off()
    run = file.run({"RUNNING"})
    file.send(*file.stages(123, "123"))
    assert file.outcome() == ("COMPLETED", "123 records sent, 123 received")

    event = file.outcome_event("matched")
    assert event["resource"]["prefect.resource.id"] == f"file.{file.tracking_id}"
    assert event["resource"]["trackingId"] == file.tracking_id
    assert f"prefect.flow-run.{run['id']}" in [related["prefect.resource.id"] for related in event["related"]]
    assert event["payload"]["totalRecordsSent"] == event["payload"]["totalRecordsReceived"] == 123

    api = file.api_url
    [table] = post_json(
        f"{api}/artifacts/filter",
        {"artifacts": {"key": {"any_": [artifact_key(file.tracking_id, "stages")]}}},
    )
    rows = json.loads(table["data"])
    assert [row["stage"] for row in rows] == [
        "kickoff",
        "transfer",
        "Microsoft.Storage.BlobCreated",
        "Summary",
        "Reconciliation",
    ]
    assert rows[0]["event id"] == file.kickoff["id"]
    assert all(row["event id"] != "-" for row in rows)
    [summary] = post_json(
        f"{api}/artifacts/filter",
        {"artifacts": {"key": {"any_": [artifact_key(file.tracking_id, "summary")]}}},
    )
    assert "123 records sent, 123 received" in summary["data"]


def test_a_file_with_missing_records_fails_with_both_counts(file):
    file.kick_off()
    file.run({"RUNNING"})
    file.send(*file.stages(123, 122))
    assert file.outcome() == ("FAILED", "sent 123, received 122 (1 missing)")
    assert file.outcome_event("mismatched")["payload"]["totalRecordsReceived"] == 122


def test_a_file_whose_reconciliation_never_comes_fails_by_its_deadline_naming_it(file):
    file.kick_off()
    run = file.run({"RUNNING"})
    file.send(*file.stages(10, 10)[:3])
    state, message = file.outcome()
    assert state == "FAILED"
    assert re.fullmatch(
        r"overdue: waited \d+\.\d s after kickoff, never saw Reconciliation \(deadline 15\.0 s\)", message
    )
    assert file.outcome_event("overdue")["payload"]["message"] == message
    logs = post_json(f"{file.api_url}/logs/filter", {"logs": {"flow_run_id": {"any_": [run["id"]]}}})
    assert any(f"Waiting for the Reconciliation event of {file.file_name}" in log["message"] for log in logs)


def test_events_sent_in_a_burst_right_after_the_kickoff_before_the_run_starts_are_all_seen(file):
    burst = file.stages(40, 40)
    file.kick_off(*burst)
    assert file.outcome() == ("COMPLETED", "40 records sent, 40 received")
    started = timestamp(file.run({"COMPLETED"})["start_time"])
    assert all(timestamp(event["occurred"]) < started for event in burst)


def test_stages_out_of_order_even_one_stamped_and_sent_before_the_kickoff_reconcile(file):
    transfer, blob, summary, reconciliation = file.stages(7, 7)
    file.send(events.shifted(transfer, -10))  # a slower clock, and delivered before the kickoff
    file.kick_off()
    file.run({"RUNNING"})
    for event in (reconciliation, summary, blob):
        file.send(event)
    assert file.outcome() == ("COMPLETED", "7 records sent, 7 received")


def test_redelivered_duplicates_count_once(file):
    transfer, blob, summary, reconciliation = file.stages(55, 55)
    file.kick_off()
    file.run({"RUNNING"})
    resent = events.reconciliation(file.tracking_id, 55)  # a sender retry without idempotency key
    file.send(transfer, blob, summary, summary, transfer, reconciliation, resent)
    assert file.outcome() == ("COMPLETED", "55 records sent, 55 received")


def test_two_summaries_with_different_counts_fail_as_a_conflict(file):
    transfer, blob, first, reconciliation = file.stages(100, 100)
    second = events.summary(file.tracking_id, 101)
    file.kick_off()
    file.run({"RUNNING"})
    file.send(transfer, blob, first, second)
    file.send(reconciliation)
    assert file.outcome() == (
        "FAILED",
        (
            f"2 Summary events for this trackingId disagree on totalRecordsSent: "
            f"100 (event {first['id']}), 101 (event {second['id']})"
        ),
    )
    file.outcome_event("invalid")


def test_a_count_that_is_not_an_integer_fails_saying_so(file):
    *others, reconciliation = file.stages(12, "12x")
    file.kick_off(*others, reconciliation)
    assert file.outcome() == (
        "FAILED",
        f"Reconciliation event {reconciliation['id']} has totalRecordsReceived '12x', "
        "which is not a whole number",
    )


def test_another_files_events_do_not_count(file, flow_server):
    other = TrackedRun(flow_server, file_name=f"old-{file.file_name}")
    file.kick_off()
    file.run({"RUNNING"})
    file.send(*other.stages(5, 4))
    file.send(*file.stages(9, 9))
    assert file.outcome() == ("COMPLETED", "9 records sent, 9 received")


def test_a_kickoff_without_tracking_id_fails_at_once(file):
    file.kick_off(tracking_id="")
    assert file.outcome(timeout=60) == (
        "FAILED",
        "cannot follow this file: the kickoff event has no trackingId label (or it is empty)",
    )


def test_a_run_started_by_hand_stops_at_the_first_missed_deadline_naming_every_missing_stage(file):
    api = file.api_url
    run = post_json(
        f"{api}/deployments/{file.server.deployment()['id']}/create_flow_run",
        {
            "parameters": {
                "file_name": file.file_name,
                "tracking_id": file.tracking_id,
                "transfer_deadline_seconds": 3,
            },
        },
    )

    def finished() -> dict[str, Any] | None:
        current = httpx.get(f"{api}/flow_runs/{run['id']}", timeout=10).json()
        return current if current["state_type"] in FINAL_STATES else None

    final = wait_until(finished, 90, "the run started by hand to finish")
    assert final["state_type"] == "FAILED"
    assert re.fullmatch(
        r"overdue: waited [3-9]\.\d s after kickoff, never saw transfer \(deadline 3\.0 s\), "
        r"Microsoft\.Storage\.BlobCreated \(deadline 15\.0 s\), Summary \(deadline 15\.0 s\), "
        r"Reconciliation \(deadline 15\.0 s\)",
        final["state"]["message"],
    )
    tasks = post_json(f"{api}/task_runs/filter", {"flow_runs": {"id": {"any_": [run["id"]]}}})
    assert {task["name"]: task["state_type"] for task in tasks} == {
        "wait for transfer": "FAILED",
        "wait for Microsoft.Storage.BlobCreated": "CANCELLED",
        "wait for Summary": "CANCELLED",
        "wait for Reconciliation": "CANCELLED",
    }
