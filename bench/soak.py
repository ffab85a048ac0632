"""Benchmark: the whole local pipeline under a steady stream of files, with a fault every few minutes.

`make demo`'s services (Prefect server, Azurite, the gateway, the Function App host stand-in, the
consumer stand-in, the served flow) on free ports, fed one file every `--file-every` seconds
(clean, mismatched and overdue files in rotation, and a large one before each Azurite or
Function App fault, so that the fault strikes mid-emission). Every `--fault-every` seconds one
fault, in rotation: kill -9 of the gateway, restart of the Prefect server, restart of Azurite,
kill -9 of the Function App host, kill -9 of the served flow (serve.py itself; runs it served
as processes live on). Each is followed by the service's restart.

It prints one JSON object per fault (with every service's RSS then), then
`{"measurement": "soak", ...}`: files sent, wrong outcomes (a run that ended otherwise than its
file calls for, or did not end; each counted against the last fault before its end), stage
events lost and duplicated in Prefect, faults by kind, and the RSS of each long-lived process
after warm-up (the first fault after a third of the run) and at the end, and which of them a
fault restarted in between. Targets: 0 wrong, 0 lost, 0 duplicated, RSS flat within 10%.

    .venv/bin/python bench/soak.py                                   # 30 minutes, a fault every 5
    .venv/bin/python bench/soak.py --minutes 6 --fault-every 60      # a quick check
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from rich.console import Console

from configuration import REPO_ROOT
from demo.scenarios import NEVER_ANSWER, SCENARIOS, Observation, Scenario, ScenarioPlayer
from demo.stack import DemoStack, Ports, StackOptions
from devstack.prefect_queries.events import read_events
from devstack.prefect_queries.flow_runs import timestamp
from devstack.supervision.process_stats import descendants
from devstack.supervision.processes import ServiceError, free_port, wait_until
from simulators.mainframe import Mainframe

FAULTS = ("gateway", "prefect", "azurite", "function-app", "flow-server")
SUCCEED, MISMATCH, OVERDUE = SCENARIOS
# Clean, clean, mismatched, clean, overdue, ...
ROTATION = (SUCCEED, SUCCEED, MISMATCH, SUCCEED, OVERDUE)
LARGE_RECORDS = 300_000
LARGE = Scenario(
    "large",
    f"{LARGE_RECORDS} records, struck mid-emission",
    0,
    "COMPLETED",
    rf"^{LARGE_RECORDS} records sent, {LARGE_RECORDS} received$",
    "Completed",
    records=LARGE_RECORDS,
)
STAGES = ("kickoff", "transfer", "Microsoft.Storage.BlobCreated", "Summary", "Reconciliation")
# How long past its deadline a file's run may take to end.
GRACE_SECONDS = 120
# Which process each fault restarts.
RESTARTS = {
    "gateway": "webhook gateway",
    "prefect": "Prefect server",
    "azurite": "Azurite",
    "function-app": "Function App",
    "flow-server": "flow server",
}


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def rss_mib(pid: int, with_children: bool) -> float:
    """Resident memory of `pid` (and of its descendants when `with_children`), in MiB."""
    total = 0
    for each in [pid, *(descendants(pid) if with_children else [])]:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return round(total / 1024, 1)


class Soak:
    """Feeds the stack files, strikes it with faults, and judges every file at the end."""

    def __init__(self, stack: DemoStack, player: ScenarioPlayer, args: argparse.Namespace) -> None:
        self.stack = stack
        self.player = player
        self.args = args
        self.observations: list[Observation] = []
        self.faults: Counter[str] = Counter()
        self.struck: list[tuple[datetime, str]] = []  # when each fault struck, by the wall clock
        self.orphan_groups: list[int] = []  # serve.py killed alone: the runs it started live on

    def rss(self) -> dict[str, float]:
        # serve.py alone: the flow runs it starts come and go.
        return {
            name: rss_mib(process.pid, with_children=name != "flow server")
            for name, process in self.stack.processes.items()
            if process and process.running()
        }

    def run(self) -> dict:
        started = time.monotonic()
        end = started + self.args.minutes * 60
        next_fault = started + self.args.fault_every
        rss_start: dict[str, float] = {}
        restarted: set[str] = set()
        sent = 0
        while time.monotonic() < end:
            self.observations.append(self.player.send(ROTATION[sent % len(ROTATION)]))
            sent += 1
            if time.monotonic() >= next_fault:
                if not rss_start and time.monotonic() - started >= self.args.minutes * 20:
                    rss_start = self.rss()
                kind = FAULTS[sum(self.faults.values()) % len(FAULTS)]
                self.strike(kind, time.monotonic() - started)
                if rss_start:
                    restarted.add(RESTARTS[kind])
                next_fault = time.monotonic() + self.args.fault_every
            time.sleep(max(0.0, self.args.file_every - 0.1))
        self.wait_for_runs()
        rss_end = self.rss()
        lost, duplicated = self.count_events()
        wrong = [o for o in self.observations if not o.as_expected]
        return {
            "measurement": "soak",
            "minutes": self.args.minutes,
            "files": len(self.observations),
            "wrong_outcomes": len(wrong),
            "events_lost": lost,
            "duplicate_events": duplicated,
            "faults": dict(self.faults),
            "wrong_after_fault": dict(Counter(self.last_fault_before(o) for o in wrong)),
            "rss_mib_start": rss_start,
            "rss_mib_end": rss_end,
            "rss_flat_within_10_percent": {
                name: abs(rss_end[name] - before) <= before / 10
                for name, before in rss_start.items()
                if name in rss_end
            },
            "restarted_after_warm_up": sorted(restarted),
            "wrong": [f"{o.scenario.name} {o.tracking_id}: {o.state} {o.message!r}" for o in wrong[:10]],
            "load_average_1m": round(os.getloadavg()[0], 2),
        }

    def strike(self, kind: str, at: float) -> None:
        """One fault, then the service back; a JSON line says what and how long it took."""
        stack, struck = self.stack, time.monotonic()
        if kind in ("azurite", "function-app"):
            # A large file, announced: its emission is under way when the fault strikes.
            large = self.player.send(LARGE)
            self.observations.append(large)
            wait_until(lambda: self.announced(large), 120, f"the announcement of {large.file_name}")
            struck = time.monotonic()
        if kind == "gateway":
            stack.gateway.stop(signal.SIGKILL)
            stack.gateway.start(timeout=60)
        elif kind == "prefect":
            stack.prefect.restart(timeout=120)
        elif kind == "azurite":
            stack.azurite.stop()
            stack.azurite.start()
        elif kind == "function-app":
            assert stack.function_app is not None  # the soak started it
            stack.function_app.stop(sig=signal.SIGKILL)
            stack.start_function_app()
        else:
            runner = stack.flow_server.process
            assert runner is not None and runner.popen is not None  # the soak started it
            os.kill(runner.pid, signal.SIGKILL)
            runner.popen.wait()
            self.orphan_groups.append(runner.pid)
            stack.flow_server.start(timeout=120)
        self.faults[kind] += 1
        self.struck.append((datetime.now(UTC), kind))
        emit(
            {
                "measurement": "fault",
                "fault": kind,
                "at_seconds": round(at, 1),
                "back_after_seconds": round(time.monotonic() - struck, 1),
                "rss_mib": self.rss(),
            }
        )

    def last_fault_before(self, observation: Observation) -> str:
        """The fault that struck last before the file's run ended (or before now, when it did not end)."""
        ended = observation.run and observation.run.get("end_time")
        moment = timestamp(ended) if ended else datetime.now(UTC)
        return next((kind for at, kind in reversed(self.struck) if at <= moment), "none")

    def announced(self, observation: Observation) -> bool:
        since = observation.kicked_off_at - timedelta(seconds=5)
        return any(
            event["resource"].get("url", "").endswith("/" + observation.file_name)
            for event in read_events(
                self.stack.prefect.api_url, ["Microsoft.Storage.BlobCreated"], since=since
            )
        )

    def wait_for_runs(self) -> None:
        """Until every file's run has ended, or the last deadline and its grace have passed."""
        until = time.monotonic() + self.args.deadline + GRACE_SECONDS
        while time.monotonic() < until:
            pending = [o for o in self.observations if not o.finished]
            if not pending:
                return
            runs: dict[str, dict] = {}
            for observation in pending:
                if observation.tracking_id not in runs:
                    # The runs created from just before this file on, oldest first: a page holds it.
                    runs |= self.runs_since(observation.kicked_off_at - timedelta(seconds=30))
                observation.run = runs.get(observation.tracking_id, observation.run)
            time.sleep(2)

    def runs_since(self, after: datetime) -> dict[str, dict]:
        """The first 200 runs of the deployment expected to start after `after`, by trackingId."""
        response = httpx.post(
            f"{self.stack.prefect.api_url}/flow_runs/filter",
            json={
                "deployments": {"id": {"any_": [self.player.deployment_id]}},
                "flow_runs": {"expected_start_time": {"after_": after.isoformat()}},
                "sort": "EXPECTED_START_TIME_ASC",
                "limit": 200,
            },
            timeout=30,
        )
        response.raise_for_status()
        return {run["parameters"].get("tracking_id"): run for run in response.json()}

    def count_events(self) -> tuple[int, int]:
        """Stage events missing in Prefect, and stage events stored more than once."""
        since = min(o.kicked_off_at for o in self.observations) - timedelta(seconds=30)
        stored: Counter[tuple[str, str]] = Counter()
        for event in read_events(self.stack.prefect.api_url, list(STAGES), since=since):
            resource = event["resource"]
            key = resource.get("trackingId") or resource.get("url", "").rsplit("/", 1)[-1]
            stored[event["event"], key] += 1
        lost = duplicated = 0
        for o in self.observations:
            for stage in STAGES:
                if stage == "Reconciliation" and o.scenario is OVERDUE:
                    continue
                count = stored[
                    stage, o.file_name if stage == "Microsoft.Storage.BlobCreated" else o.tracking_id
                ]
                lost += count == 0
                duplicated += max(0, count - 1)
        return lost, duplicated

    def stop_orphans(self) -> None:
        for group in self.orphan_groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument(
        "--fault-every", type=float, default=300, help="seconds between faults (default: %(default)g)"
    )
    parser.add_argument(
        "--file-every", type=float, default=5, help="seconds between files (default: %(default)g)"
    )
    parser.add_argument(
        "--deadline", type=float, default=120, help="each stage's deadline, seconds (default: %(default)g)"
    )
    args = parser.parse_args()

    work = REPO_ROOT / ".local" / "soak" / datetime.now().strftime("%Y%m%d-%H%M%S")
    console = Console(stderr=True)
    console.print(f"# services, logs and data under {work}")
    ports = Ports(
        prefect=free_port(), gateway=free_port(), blob=free_port(), queue=free_port(), functions=free_port()
    )
    stack = DemoStack(StackOptions(work, work / "webhooks.env", ports, args.deadline, NEVER_ANSWER), console)
    soak = None
    try:
        stack.start()
        mainframe = Mainframe.configured(stack.options.env_file, environ=stack.app_settings())
        player = ScenarioPlayer(stack.prefect.api_url, stack.deployment_id(), mainframe, Console(quiet=True))
        soak = Soak(stack, player, args)
        result = soak.run()
    except ServiceError as error:
        console.print(f"[red]error:[/] {error}")
        return 1
    finally:
        stack.stop()
        if soak:
            soak.stop_orphans()
    emit(result)
    return (
        0 if (result["wrong_outcomes"], result["events_lost"], result["duplicate_events"]) == (0, 0, 0) else 1
    )


if __name__ == "__main__":
    sys.exit(main())
