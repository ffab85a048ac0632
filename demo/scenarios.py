"""The demo's scenarios, played through the whole pipeline and judged from the Prefect API.

succeed   a clean file: every record reaches the consumer         -> Completed
mismatch  one malformed record, which the consumer rejects        -> Failed, fewer received than sent
overdue   the consumer never answers (its --never-answer matches) -> Failed when the deadline passes

Each plays the mainframe (kickoff, transfer, upload) and then watches its flow run and the
BlobCreated, Summary and Reconciliation events until the run ends. Any stack serving the flow,
the gateway and the Function App can play them: the demo's, or a scaled-out one.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Console

from devstack.prefect_queries.events import read_events
from devstack.prefect_queries.flow_runs import FINAL_STATES, runs_by_tracking_id, timestamp
from simulators.ledger import ledger
from simulators.mainframe import Mainframe

RECORDS = 20
NEVER_ANSWER = "demo-overdue-*"  # the consumer stand-in's --never-answer pattern
WATCHED_EVENTS = ["Microsoft.Storage.BlobCreated", "Summary", "Reconciliation"]


@dataclass(frozen=True)
class Scenario:
    """One file sent through the pipeline, and how its run must end.

    Args:
        message: a regular expression the run's state message must match.
        expected: the expectation as the report shows it.
        records: how many records the file holds.
    """

    name: str
    what: str
    malformed: int
    state: str
    message: str
    expected: str
    records: int = RECORDS


SCENARIOS = (
    Scenario(
        "succeed",
        "a clean file",
        0,
        "COMPLETED",
        rf"^{RECORDS} records sent, {RECORDS} received$",
        f"Completed: {RECORDS} sent, {RECORDS} received",
    ),
    Scenario(
        "mismatch",
        "1 malformed record, which the consumer rejects",
        1,
        "FAILED",
        rf"^sent {RECORDS}, received {RECORDS - 1} \(1 missing\)$",
        f"Failed: sent {RECORDS}, received {RECORDS - 1}",
    ),
    Scenario(
        "overdue",
        "the consumer never answers",
        0,
        "FAILED",
        r"^overdue: .*never saw Reconciliation",
        "Failed: overdue, no Reconciliation",
    ),
)


@dataclass
class Observation:
    """What the Prefect API shows of one scenario's file."""

    scenario: Scenario
    tracking_id: str
    file_name: str
    kicked_off_at: datetime
    run: dict[str, Any] | None = None
    seen: dict[str, str] = field(default_factory=dict)  # event name -> its count label ("" for BlobCreated)

    @property
    def state(self) -> str:
        return self.run["state_type"] if self.run else "NO RUN"

    @property
    def message(self) -> str:
        return (self.run and self.run["state"] and self.run["state"].get("message")) or ""

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def seconds(self) -> float | None:
        """From the kickoff to the run's end, by the server's clock."""
        if not (self.run and self.finished and self.run.get("end_time")):
            return None
        return (timestamp(self.run["end_time"]) - self.kicked_off_at).total_seconds()

    @property
    def as_expected(self) -> bool:
        return (
            self.state == self.scenario.state and re.search(self.scenario.message, self.message) is not None
        )


class ScenarioPlayer:
    """Sends each scenario's file and follows it to the end, printing each step as it is seen."""

    def __init__(self, api_url: str, deployment_id: str, mainframe: Mainframe, console: Console) -> None:
        self.api_url = api_url
        self.deployment_id = deployment_id
        self.mainframe = mainframe
        self.console = console

    def play(self, scenarios: tuple[Scenario, ...], timeout: float) -> list[Observation]:
        """Send every scenario's file, then watch until every run ended or `timeout` seconds passed."""
        observations = [self.send(scenario) for scenario in scenarios]
        until = time.monotonic() + timeout
        with self.console.status("Waiting for the flow runs…") as status:
            while True:
                self.observe(observations)
                waiting = [o.scenario.name for o in observations if not o.finished]
                if not waiting or time.monotonic() > until:
                    break
                status.update(f"Waiting for {', '.join(waiting)}…")
                time.sleep(0.5)
        for observation in observations:
            if not observation.finished:
                self._say(observation, f"[red]still {observation.state} after {timeout:g} s[/]: giving up")
        return observations

    def send(self, scenario: Scenario) -> Observation:
        """Play the mainframe for one file of `scenario`: kickoff, transfer, upload."""
        token = uuid.uuid4().hex
        tracking_id, file_name = (
            f"demo-{scenario.name}-{token[:8]}",
            f"demo-{scenario.name}-{token[8:14]}.csv",
        )
        observation = Observation(scenario, tracking_id, file_name, datetime.now(UTC))
        self.mainframe.kickoff(file_name, tracking_id)
        self.mainframe.transfer(file_name, tracking_id)
        self.mainframe.upload(file_name, ledger(scenario.records, scenario.malformed), tracking_id)
        self._say(
            observation,
            f"kickoff, transfer, upload of {file_name}: {scenario.records} records, {scenario.what}",
        )
        return observation

    def observe(self, observations: list[Observation]) -> None:
        """Note each file's run and stage events as the Prefect API shows them now."""
        since = min(o.kicked_off_at for o in observations) - timedelta(seconds=30)
        runs = runs_by_tracking_id(self.api_url, self.deployment_id, since)
        events = read_events(self.api_url, WATCHED_EVENTS, since=since)
        for observation in observations:
            for event in events:
                self._note_event(observation, event)
            run = runs.get(observation.tracking_id)
            if run:
                changed = run["state_type"] != observation.state
                observation.run = run
                if changed:
                    self._say(observation, self._describe_state(observation))

    def _note_event(self, observation: Observation, event: dict[str, Any]) -> None:
        name, resource = event["event"], event["resource"]
        if name in observation.seen:
            return
        if name == "Microsoft.Storage.BlobCreated":
            if resource.get("url", "").endswith("/" + observation.file_name):
                observation.seen[name] = ""
                self._say(observation, "BlobCreated: the Function App announced the blob")
        elif resource.get("trackingId") == observation.tracking_id:
            count = resource.get("totalRecordsSent") or resource.get("totalRecordsReceived") or "?"
            observation.seen[name] = count
            self._say(observation, f"{name}: {count} records {'sent' if name == 'Summary' else 'received'}")

    @staticmethod
    def _describe_state(observation: Observation) -> str:
        state = observation.state.capitalize()
        if not observation.finished:
            return f"flow run {state}"
        colour = "green" if observation.as_expected else "red"
        return f"[{colour}]{state}[/]: {observation.message}"

    def _say(self, observation: Observation, text: str) -> None:
        self.console.print(f"  [bold]{observation.scenario.name:<9}[/] {text}", highlight=False)
